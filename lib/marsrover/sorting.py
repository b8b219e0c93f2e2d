"""Sort image files into ``Rover/``, ``Surface/`` and ``Uncertain/`` folders by the model's P(Surface).

``P(Surface) < low`` goes to Rover, ``P(Surface) > high`` to Surface, anything in between (bounds
included) to Uncertain. Files are copied (or moved) and never overwrite anything: when a different
file of the same name is already in the target folder the new one is named ``name (1).jpg``,
``name (2).jpg``...; when the identical file (same SHA-256) is already there, nothing is written.

Every handled image gets one line appended to ``<into>/sort_log.csv`` as soon as it is placed, so an
interrupted run can simply be run again: images the log records as sorted (same path, same content,
destination still present) are skipped without being decoded or scored; with ``move``, the originals that
an earlier copying run left behind are then removed, once the copy is checked to hold the same bytes.
Unreadable images go to no folder; they are logged and listed in the summary, and are tried again by the next run.
"""

from __future__ import annotations

import csv
import errno
import glob
import hashlib
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import inference
from .config import CLASS_NAMES

__all__ = ["FOLDERS", "LOG_NAME", "LOG_COLUMNS", "SortSummary", "folder_for", "place_file",
           "read_log", "sort_files"]

UNCERTAIN = "Uncertain"
FOLDERS = (CLASS_NAMES[0], CLASS_NAMES[1], UNCERTAIN)
LOG_NAME = "sort_log.csv"
# source: absolute path; dest: relative to the sort folder (which can then be moved as a whole).
LOG_COLUMNS = ["time", "source", "sha256", "p_surface", "folder", "dest", "action", "error"]
DONE_ACTIONS = ("copied", "moved", "already there")
_CHUNK = 1 << 20


def folder_for(p_surface: float, low: float = 0.2, high: float = 0.8) -> str:
    """``Rover`` below ``low``, ``Surface`` above ``high``, ``Uncertain`` in [low, high]."""
    if p_surface < low:
        return CLASS_NAMES[0]
    if p_surface > high:
        return CLASS_NAMES[1]
    return UNCERTAIN


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _candidate_names(name: str):
    stem, suffix = os.path.splitext(name)
    yield name
    number = 1
    while True:
        yield f"{stem} ({number}){suffix}"
        number += 1


def _link_no_overwrite(source: Path, dest: Path) -> bool:
    """Hard-link ``source`` as ``dest`` unless ``dest`` exists (atomic). False if it exists."""
    try:
        os.link(source, dest)
        return True
    except FileExistsError:
        return False


def place_file(source: Path, folder: Path, *, move: bool = False, sha256: str | None = None) -> tuple[Path, str]:
    """Copy (or move) ``source`` into ``folder`` without overwriting anything.

    Returns (destination, action) with action ``copied``, ``moved`` or ``already there`` (an
    identical file, by SHA-256, is already in ``folder`` under the name or a numbered variant).
    The copy is written under a temporary name and linked into place only when complete.
    """
    source, folder = Path(source), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sha256 = sha256 or _sha256(source)
    tmp: Path | None = None
    try:
        for name in _candidate_names(source.name):
            dest = folder / name
            if dest.exists():
                if dest.is_file() and _sha256(dest) == sha256:
                    if move and not os.path.samefile(source, dest):
                        source.unlink()
                    return dest, "already there"
                continue
            if move:
                try:  # same filesystem: a hard link then unlink is a move that never overwrites
                    if not _link_no_overwrite(source, dest):
                        continue
                    source.unlink()
                    return dest, "moved"
                except OSError as error:
                    if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                        raise
            if tmp is None:
                tmp = folder / f".{source.name}.part-{uuid.uuid4().hex[:12]}"
                with open(source, "rb") as src, open(tmp, "xb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
                shutil.copystat(source, tmp)
            try:
                placed = _link_no_overwrite(tmp, dest)
            except OSError as error:  # no hard links here (some network/FAT file systems)
                if error.errno not in (errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                if dest.exists():
                    continue
                os.replace(tmp, dest)
                tmp, placed = None, True
            if not placed:
                continue
            if move:
                source.unlink()
            return dest, "moved" if move else "copied"
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# The log


def read_log(into: str | os.PathLike) -> pd.DataFrame:
    """The rows of ``<into>/sort_log.csv`` (empty if none); a half-written last line is ignored."""
    path = Path(into) / LOG_NAME
    if not path.exists():
        return pd.DataFrame(columns=LOG_COLUMNS)
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle)
                if row.get("action") is not None and None not in row]  # drop a torn last line
    return pd.DataFrame(rows, columns=LOG_COLUMNS)


class _Log:
    """Append-only CSV; each row is written whole and flushed before the next image is handled."""

    def __init__(self, path: Path):
        self.path = path
        new = not path.exists() or path.stat().st_size == 0
        self.handle = open(path, "a", newline="", encoding="utf-8")
        if not new:  # a line torn by a crash must not swallow the next row
            with open(path, "rb") as check:
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    self.handle.write("\n")
        self.writer = csv.DictWriter(self.handle, fieldnames=LOG_COLUMNS, lineterminator="\n")
        if new:
            self.writer.writeheader()
            self.handle.flush()

    def write(self, **row) -> None:
        row["time"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.writer.writerow({key: row.get(key, "") for key in LOG_COLUMNS})
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


# --------------------------------------------------------------------------------------------
# Sorting


@dataclass
class SortSummary:
    """What a run did: counts per folder, images skipped as sorted before, and failures."""

    into: Path
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FOLDERS, 0))
    placed: int = 0
    already_there: int = 0
    skipped: int = 0
    moved_after_copy: int = 0  # of the skipped: copied by an earlier run, the originals removed by this --move
    kept_after_copy: int = 0  # of the skipped: copied by an earlier run, kept by this --move (the copy changed)
    failed: list[tuple[str, str]] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    @property
    def table(self) -> pd.DataFrame:
        """One row per image: source, p_surface, folder, dest, action, error."""
        return pd.DataFrame(self.rows, columns=["source", "p_surface", "folder", "dest", "action", "error"])

    def lines(self) -> list[str]:
        per_folder = ", ".join(f"{name} {count}" for name, count in self.counts.items())
        text = [f"Sorted into {self.into}: {per_folder} "
                f"({self.placed} new, {self.already_there} already there, "
                f"{self.skipped} skipped as sorted by an earlier run"
                + (f", {self.moved_after_copy} of them copied then and moved now" if self.moved_after_copy else "")
                + (f", {self.kept_after_copy} copied then and kept where they are, as their copies changed since"
                   if self.kept_after_copy else "")
                + f"); {len(self.failed)} unreadable"]
        text += [f"  unreadable: {source}: {error}" for source, error in self.failed]
        return text


def _done_before(log: pd.DataFrame) -> dict[str, dict]:
    done = {}
    for row in log.to_dict("records"):
        if row["action"] in DONE_ACTIONS:
            done[row["source"]] = row
    return done


def named_paths_sorted_earlier(paths: Sequence[str | os.PathLike],
                               into: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Split the paths given to ``sort`` into (those to look for, those gone because an earlier run sorted them).

    ``--move`` takes its images away, so rerunning an interrupted move with the same file names or globs
    would otherwise stop at names that no longer exist. A path counts as sorted earlier when it does not
    exist, and the log records it (a file), or a file the glob would have listed (a glob that now matches
    nothing), as sorted into a destination that is still there. A named folder outlives the move, and so do
    the folders a glob matched: they count as sorted earlier when they hold no image any more and the log
    records images from inside one of them (the log keeps resolved paths, so images that were symlinks into
    another folder count for that folder). Any other missing path stays, to be reported as missing (and an
    empty folder the log knows nothing of, as empty).
    """
    into = Path(into)
    sorted_sources = [Path(source) for source, row in _done_before(read_log(into)).items()
                      if (into / row["dest"]).is_file()]

    def emptied(folders: list[str]) -> bool:
        resolved = [Path(folder).resolve() for folder in folders]
        return (any(source.is_relative_to(folder) for source in sorted_sources for folder in resolved)
                and not any(inference.holds_images(folder, exclude=[into]) for folder in folders))

    remaining, gone = [], []
    for raw in paths:
        text = os.path.expanduser(os.fspath(raw))
        is_pattern = inference.is_glob(text)
        matches = glob.glob(text, recursive=True) if is_pattern and not os.path.exists(text) else []
        if os.path.isdir(text) or (matches and all(os.path.isdir(match) for match in matches)):
            (gone if emptied(matches or [text]) else remaining).append(os.fspath(raw))
        elif os.path.exists(text) or matches:
            remaining.append(os.fspath(raw))
        else:
            absolute = os.path.abspath(text)
            done = str(Path(absolute).resolve()) in map(str, sorted_sources) or (  # a file, even one named like a glob
                is_pattern and any(_glob_lists(absolute, str(source)) for source in sorted_sources))
            (gone if done else remaining).append(os.fspath(raw))
    return remaining, gone


def _glob_lists(pattern: str, source: str) -> bool:
    """Whether ``glob.glob(pattern, recursive=True)`` would list the file ``source`` (a resolved path, as the
    log keeps it; ``pattern`` absolute). As in glob, ``*``, ``?`` and ``[...]`` stay within one folder, ``**``
    spans any number of folders, and a name starting with a dot is matched only by a part starting with one."""
    import fnmatch

    parts = Path(pattern).parts
    literal = next(i for i, part in enumerate(parts) if inference.is_glob(part))
    base = Path(*parts[:literal]).resolve()  # the logged sources went through resolve() too (symlinks)
    try:
        names = Path(source).relative_to(base).parts
    except ValueError:
        return False

    def matches(pattern_parts: tuple[str, ...], names: tuple[str, ...]) -> bool:
        if not pattern_parts:
            return not names
        head, rest = pattern_parts[0], pattern_parts[1:]
        if head == "**":
            return any(matches(rest, names[skip:]) for skip in range(len(names) + 1)
                       if not any(name.startswith(".") for name in names[:skip]))
        if not names or (names[0].startswith(".") and not head.startswith(".")):
            return False
        return fnmatch.fnmatchcase(names[0], head) and matches(rest, names[1:])

    return matches(parts[literal:], names)


def _finish_move(source: Path, dest: Path, sha256: str) -> str:
    """Remove ``source`` when ``dest``, placed by an earlier run that copied it, still holds the same content
    (and is not the same file): a later ``--move`` thus moves what a copy left behind. Returns ``moved``,
    ``kept`` (the copy changed since, or is the source itself: the original stays) or why the removal failed."""
    try:
        if os.path.samefile(source, dest) or _sha256(dest) != sha256:
            return "kept"
        source.unlink()
        return "moved"
    except OSError as error:
        return f"cannot move: {type(error).__name__}: {error}"


def sort_files(model, files: Sequence[str | os.PathLike], into: str | os.PathLike, *, move: bool = False,
               low: float = 0.2, high: float = 0.8, batch_size: int = inference.DEFAULT_BATCH_SIZE,
               workers: int | None = None, max_pixels: float | None = inference.DEFAULT_MAX_PIXELS,
               progress: bool = True) -> SortSummary:
    """Score ``files`` with ``model`` and copy (``move=True``: move) each into ``into/<folder>``.

    See the module docstring for the folders, the no-overwrite rule and resuming.
    """
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= low <= high <= 1, got low={low}, high={high}")
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    summary = SortSummary(into)
    done = _done_before(read_log(into))

    log = _Log(into / LOG_NAME)
    try:
        todo: list[Path] = []
        for path in map(Path, files):
            key = str(path.resolve())
            record = done.get(key)
            if record is not None:
                dest = into / record["dest"]
                try:
                    same = dest.is_file() and _sha256(path) == record["sha256"]
                except OSError:
                    same = False
                if same:
                    summary.skipped += 1
                    summary.counts[record["folder"]] = summary.counts.get(record["folder"], 0) + 1
                    action, error = "skipped (sorted earlier)", ""
                    outcome = _finish_move(path, dest, record["sha256"]) if move else "kept"
                    placed = {name: record[name] for name in ("sha256", "p_surface", "folder", "dest")}
                    if outcome == "moved":  # an earlier run copied it
                        summary.moved_after_copy += 1
                        action = "moved (copied earlier)"
                        log.write(source=key, **placed, action="moved")
                    elif outcome != "kept":  # the copy stands; the original could not be removed
                        action, error = "failed", outcome
                        summary.failed.append((str(path), outcome))
                        log.write(source=key, **placed, action="failed", error=outcome)
                    elif move and record["action"] != "moved":
                        summary.kept_after_copy += 1
                    summary.rows.append({"source": str(path), "p_surface": float(record["p_surface"]),
                                         "folder": record["folder"], "dest": str(dest), "action": action,
                                         "error": error})
                    continue
            todo.append(path)

        for batch in inference.iter_predictions(model, todo, batch_size=batch_size, workers=workers,
                                                max_pixels=max_pixels, progress=progress):
            for item in batch:
                source = str(item.path.resolve())
                if item.p_surface is None:
                    summary.failed.append((str(item.path), item.error))
                    summary.rows.append({"source": str(item.path), "p_surface": float("nan"), "folder": "",
                                         "dest": "", "action": "failed", "error": item.error})
                    log.write(source=source, action="failed", error=item.error)
                    continue
                folder = folder_for(item.p_surface, low, high)
                try:
                    digest = _sha256(item.path)
                    dest, action = place_file(item.path, into / folder, move=move, sha256=digest)
                except OSError as error:  # e.g. the source vanished: report it, go on
                    message = f"cannot {'move' if move else 'copy'}: {type(error).__name__}: {error}"
                    summary.failed.append((str(item.path), message))
                    summary.rows.append({"source": str(item.path), "p_surface": item.p_surface, "folder": folder,
                                         "dest": "", "action": "failed", "error": message})
                    log.write(source=source, p_surface=item.p_surface, folder=folder, action="failed",
                              error=message)
                    continue
                summary.counts[folder] += 1
                if action == "already there":
                    summary.already_there += 1
                else:
                    summary.placed += 1
                summary.rows.append({"source": str(item.path), "p_surface": item.p_surface, "folder": folder,
                                     "dest": str(dest), "action": action, "error": ""})
                log.write(source=source, sha256=digest, p_surface=f"{item.p_surface:.6f}", folder=folder,
                          dest=dest.relative_to(into).as_posix(), action=action)
    finally:
        log.close()
    return summary
