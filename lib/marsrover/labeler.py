"""Label new images by hand as Rover / Surface / Skip, from JupyterLab, one click per image.

The logic is split from the widgets so that it is testable without a browser:

- :class:`LabelStore` keeps the labels in a CSV (``path``, ``label``, ``labelled_at``) and rewrites the
  whole file atomically after every change (temporary file in the same folder, flush, ``os.fsync``,
  ``os.replace``): a crash or a kernel restart between clicks leaves the last complete CSV, never a
  half-written one. Paths under the store's ``root`` are stored relative to it, so the CSV (with its
  images) can be moved; other paths are stored absolute.
- :class:`LabelingSession` walks an ordered list of images and always shows the first one not yet
  handled (Skip counts as handled), so a new session over the same CSV resumes where the last stopped.
- :func:`labeler_widget` is the ipywidgets front end. JupyterLab does not deliver key presses to
  widgets, so the keyboard shortcuts go through a small text box: click into it and type ``r`` (Rover),
  ``s`` (Surface), ``k`` (Skip) or ``u`` (Undo); each letter acts at once and the box clears itself.
- :func:`labels_as_index` turns the labels into an index-shaped table (Skip left out) that notebook 06
  can score a model on as an extra test set.

Typical use in a notebook::

    from marsrover.config import data_paths
    from marsrover.labeler import LabelStore, LabelingSession, images_to_label, labeler_widget

    folder = data_paths().root / "raw_feeds"
    store = LabelStore(data_paths().labels / "labels.csv", root=folder)
    labeler_widget(LabelingSession(images_to_label(folder), store))
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

import ipywidgets as widgets
import pandas as pd
from PIL import Image

from .config import CLASS_NAMES

__all__ = ["LABELS", "SKIP", "CSV_COLUMNS", "KEYS", "LabelStore", "LabelingSession", "LabelerWidget",
           "labeler_widget", "images_to_label", "labels_as_index"]

SKIP = "Skip"
LABELS = (*CLASS_NAMES, SKIP)  # ("Rover", "Surface", "Skip")
CSV_COLUMNS = ["path", "label", "labelled_at"]
# Shortcut letters typed into the widget's shortcut box -> action ("Undo" or a label).
KEYS = {"r": CLASS_NAMES[0], "s": CLASS_NAMES[1], "k": SKIP, "u": "Undo"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _normalise_label(label: str) -> str:
    """``label`` as one of :data:`LABELS` (case-insensitive); ValueError naming the allowed ones."""
    if isinstance(label, str):
        for allowed in LABELS:
            if label.strip().lower() == allowed.lower():
                return allowed
    raise ValueError(f"label must be one of {', '.join(LABELS)}; got {label!r}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _absolute(path: str | os.PathLike) -> Path:
    """An absolute, normalised path (``..`` folded) without following symbolic links."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


class LabelStore:
    """Labels of image files in a CSV at ``csv_path``, rewritten atomically after every change.

    ``root`` (default: the CSV's folder) is the folder paths are stored relative to when they lie under
    it; a relative path given to any method is taken relative to ``root`` too, which is the form
    :meth:`labels` returns. Existing labels are loaded on construction, so labelling resumes.
    """

    def __init__(self, csv_path: str | os.PathLike, *, root: str | os.PathLike | None = None):
        self.csv_path = _absolute(csv_path)
        self.root = _absolute(root) if root is not None else self.csv_path.parent
        self._entries: dict[str, tuple[str, str]] = {}  # key -> (label, labelled_at), in CSV order
        if self.csv_path.exists():
            self._entries = self._read(self.csv_path)

    # -- paths --------------------------------------------------------------------------------
    def key(self, path: str | os.PathLike) -> str:
        """How ``path`` is written in the CSV: POSIX-style relative to ``root`` if under it, else absolute."""
        path = Path(os.path.expanduser(os.fspath(path)))
        absolute = _absolute(path if path.is_absolute() else self.root / path)
        try:
            return absolute.relative_to(self.root).as_posix()
        except ValueError:
            return str(absolute)

    def resolve(self, key: str | os.PathLike) -> Path:
        """The absolute path of a stored ``key`` (or of any path, relative ones taken from ``root``)."""
        return _absolute(self.root / self.key(key))

    # -- reading ------------------------------------------------------------------------------
    @staticmethod
    def _read(csv_path: Path) -> dict[str, tuple[str, str]]:
        entries: dict[str, tuple[str, str]] = {}
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in ("path", "label") if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"{csv_path} is not a label file: no column(s) {', '.join(missing)} "
                                 f"(expected {', '.join(CSV_COLUMNS)})")
            for line_number, row in enumerate(reader, start=2):
                if not (row.get("path") or "").strip():
                    continue
                try:
                    label = _normalise_label(row["label"] or "")
                except ValueError as error:
                    raise ValueError(f"{csv_path}:{line_number}: {error}") from None
                entries.pop(row["path"], None)  # a repeated path (hand-edited file): the last one wins
                entries[row["path"]] = (label, row.get("labelled_at") or "")
        return entries

    def labels(self) -> dict[str, str]:
        """``{stored path: label}`` in CSV order, Skip included."""
        return {key: label for key, (label, _) in self._entries.items()}

    def get(self, path: str | os.PathLike) -> str | None:
        """The label of ``path``, or None when it has none."""
        entry = self._entries.get(self.key(path))
        return entry[0] if entry else None

    def __contains__(self, path: object) -> bool:
        return isinstance(path, (str, os.PathLike)) and self.key(path) in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def _has(self, key: str) -> bool:
        """Whether the stored ``key`` (as :meth:`key` returns it) has a label; no path handling."""
        return key in self._entries

    def counts(self) -> dict[str, int]:
        """How many images carry each label, every label of :data:`LABELS` present (zeros too)."""
        counted = Counter(label for label, _ in self._entries.values())
        return {label: counted.get(label, 0) for label in LABELS}

    def as_frame(self) -> pd.DataFrame:
        """The labels as a table with the CSV's columns, in CSV order."""
        rows = [(key, label, at) for key, (label, at) in self._entries.items()]
        return pd.DataFrame(rows, columns=CSV_COLUMNS, dtype=str)

    # -- writing ------------------------------------------------------------------------------
    def record(self, path: str | os.PathLike, label: str) -> str:
        """Label ``path`` (replacing any earlier label) and write the CSV; returns the stored key.

        The in-memory labels change only once the file is written, so when writing fails the error
        propagates and the store and the CSV both keep their previous state.
        """
        label = _normalise_label(label)
        key = self.key(path)
        entries = dict(self._entries)
        entries.pop(key, None)  # re-inserted at the end: the CSV reads in labelling order
        entries[key] = (label, _now())
        self._write(entries)
        self._entries = entries
        return key

    def remove(self, path: str | os.PathLike) -> bool:
        """Forget the label of ``path`` and write the CSV; False when it had none."""
        key = self.key(path)
        if key not in self._entries:
            return False
        entries = {k: v for k, v in self._entries.items() if k != key}
        self._write(entries)
        self._entries = entries
        return True

    def _write(self, entries: dict[str, tuple[str, str]]) -> None:
        """Write the whole CSV to a temporary file beside it, fsync it, then rename it over the CSV."""
        folder = self.csv_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        descriptor, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{self.csv_path.name}.", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(CSV_COLUMNS)
                for key, (label, labelled_at) in entries.items():
                    writer.writerow([key, label, labelled_at])
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, self.csv_path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            raise
        _fsync_folder(folder)

    def __repr__(self) -> str:
        return f"LabelStore({str(self.csv_path)!r}, root={str(self.root)!r}, {len(self)} labels)"


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows it (POSIX); a no-op elsewhere."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class LabelingSession:
    """An ordered list of images labelled one at a time into ``store``; resumes at the first unhandled one."""

    def __init__(self, images: Iterable[str | os.PathLike], store: LabelStore):
        self.store = store
        seen: set[str] = set()
        self.images: list[Path] = []
        self._keys: list[str] = []  # the store's key of each image, computed once
        for image in images:
            key = store.key(image)
            if key not in seen:  # the same file listed twice is labelled once
                seen.add(key)
                self._keys.append(key)
                self.images.append(store.resolve(key))
        self._history: list[Path] = []  # labelled in this session, most recent last

    def __len__(self) -> int:
        return len(self.images)

    def _position(self) -> int:
        """Index of the first image without a label (``len(images)`` when all are handled)."""
        for position, key in enumerate(self._keys):
            if not self.store._has(key):
                return position
        return len(self.images)

    def current(self) -> Path | None:
        """The first image not labelled yet (Skip counts as labelled), or None when all are done."""
        position = self._position()
        return self.images[position] if position < len(self.images) else None

    @property
    def done(self) -> bool:
        return self.current() is None

    def label_current(self, label: str) -> Path:
        """Label the current image (Rover, Surface or Skip) and persist it; returns that image."""
        label = _normalise_label(label)
        image = self.current()
        if image is None:
            raise RuntimeError(f"all {len(self.images)} images are labelled; nothing to label")
        self.store.record(image, label)
        self._history.append(image)
        return image

    def _previous(self) -> Path | None:
        while self._history:
            if self._history[-1] in self.store:
                return self._history[-1]
            self._history.pop()  # its label was removed some other way
        # Nothing labelled in this session (e.g. just resumed): the handled image before the current one.
        for image in reversed(self.images[: self._position()]):
            if image in self.store:
                return image
        return None

    @property
    def can_undo(self) -> bool:
        return self._previous() is not None

    def undo(self) -> Path | None:
        """Remove the label of the previously labelled image (persisted) so it is shown again.

        Returns that image, or None when there is nothing to undo.
        """
        image = self._previous()
        if image is None:
            return None
        self.store.remove(image)
        if self._history and self._history[-1] == image:
            self._history.pop()
        return image

    def progress(self) -> tuple[int, int]:
        """(images handled, images in the session), Skip counting as handled."""
        return sum(self.store._has(key) for key in self._keys), len(self.images)

    def progress_text(self) -> str:
        """``"n of N"``: how many of the session's images are handled."""
        done, total = self.progress()
        return f"{done} of {total}"

    def counts(self) -> dict[str, int]:
        """Labels given to this session's images, every label of :data:`LABELS` present."""
        counted = Counter(self.store.get(image) for image in self.images)
        return {label: counted.get(label, 0) for label in LABELS}


def images_to_label(folder_or_paths: str | os.PathLike | Iterable[str | os.PathLike], *,
                    extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files (by extension, any case) under a folder, recursively, or among given paths/folders.

    Sorted, absolute and without duplicates; hidden files and folders (name starting with ``.``) are
    left out.
    """
    wanted = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions)
    if isinstance(folder_or_paths, (str, os.PathLike)):
        folder_or_paths = [folder_or_paths]
    found: set[Path] = set()
    for item in folder_or_paths:
        item = _absolute(item)
        if item.is_dir():
            for path in item.rglob("*"):
                hidden = any(part.startswith(".") for part in path.relative_to(item).parts)
                if not hidden and path.suffix.lower() in wanted and path.is_file():
                    found.add(path)
        elif item.suffix.lower() in wanted:
            if not item.is_file():
                raise FileNotFoundError(f"no image file {item}")
            found.add(item)
        elif not item.exists():
            raise FileNotFoundError(f"no such file or folder: {item}")
    return sorted(found)


def _sha256(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return ""


def labels_as_index(store: LabelStore, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """The Rover/Surface labels as an index-shaped table; Skip is left out.

    Columns: ``path`` (relative to ``root``, default the store's root, when under it, else absolute, so
    ``Path(root) / path`` always finds the file, as ``image_cache.cached_images(index, root, ...)``
    expects), ``label`` (0 Rover, 1 Surface), ``label_name``, ``id`` (file stem) and ``sha256`` (of the
    file's content, empty when unreadable; with ``id`` it keys the image cache). Sorted by path.
    """
    root = _absolute(root) if root is not None else store.root
    rows = []
    for key, label in store.labels().items():
        if label == SKIP:
            continue
        absolute = store.resolve(key)
        try:
            path = absolute.relative_to(root).as_posix()
        except ValueError:
            path = str(absolute)
        rows.append({"path": path, "label": CLASS_NAMES.index(label), "label_name": label,
                     "id": absolute.stem, "sha256": _sha256(absolute)})
    frame = pd.DataFrame(rows, columns=["path", "label", "label_name", "id", "sha256"])
    frame["label"] = frame["label"].astype(int)
    return frame.sort_values("path", kind="stable").reset_index(drop=True)


# -- the widget ---------------------------------------------------------------------------------

def _display_bytes(path: Path, width: int) -> tuple[bytes, str, str]:
    """(JPEG bytes of ``path`` at most ``width`` px wide, "jpeg", error message or "")."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode not in ("RGB", "L"):
                # 16-bit and float greyscale would saturate in a plain convert: scale them to 8 bits.
                if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                    low, high = image.getextrema()
                    scale = 255.0 / (high - low) if high > low else 0.0
                    image = image.point(lambda value: (value - low) * scale).convert("L")
                else:
                    image = image.convert("RGB")
            if image.width > width:
                image = image.resize((width, max(1, round(image.height * width / image.width))),
                                     Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            return buffer.getvalue(), "jpeg", ""
    except Exception as error:  # noqa: BLE001 - an unreadable image is shown as a grey box, not fatal
        buffer = io.BytesIO()
        Image.new("RGB", (width, max(1, width * 3 // 4)), (128, 128, 128)).save(buffer, "JPEG")
        return buffer.getvalue(), "jpeg", f"cannot display this image ({type(error).__name__}: {error}); Skip it?"


HELP_TEXT = (
    "Click a button, or use the keyboard: click into the <b>shortcuts</b> box once, then type "
    "<b>r</b> = Rover, <b>s</b> = Surface, <b>k</b> = Skip, <b>u</b> = Undo (each key acts at once; the box "
    "clears itself). JupyterLab does not send key presses to widgets, hence the box; arrow keys cannot be "
    "read this way. Every click is saved to the CSV at once, so you can stop any time and resume later."
)


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{label}: {count}" for label, count in counts.items())


class LabelerWidget(widgets.VBox):
    """The labeler UI (a VBox). Its parts and actions are attributes, for callers binding keys differently.

    ``image``, ``caption``, ``message``, ``help`` and ``shortcuts`` (the Text box) are the widgets;
    ``buttons`` maps "Rover", "Surface", "Skip" and "Undo" to the Buttons; ``actions`` maps the same
    names to zero-argument functions; :meth:`label`, :meth:`undo`, :meth:`press` (one key) and
    :meth:`refresh` drive it from code.
    """

    def __init__(self, session: LabelingSession, *, image_width: int = 384):
        self.session = session
        self.image_width = int(image_width)
        self.image = widgets.Image(format="jpeg", layout=widgets.Layout(max_width=f"{self.image_width}px"))
        self.caption = widgets.HTML()
        self.message = widgets.HTML()
        self.help = widgets.HTML(f"<small>{HELP_TEXT}</small>")
        styles = {CLASS_NAMES[0]: "warning", CLASS_NAMES[1]: "success", SKIP: "", "Undo": "info"}
        letters = {action: key for key, action in KEYS.items()}
        self.buttons = {name: widgets.Button(description=f"{name} ({letters[name]})", button_style=style,
                                             tooltip=f"{name} (key {letters[name]})")
                        for name, style in styles.items()}
        self.actions: dict[str, Callable[[], None]] = {
            **{label: (lambda label=label: self.label(label)) for label in LABELS}, "Undo": self.undo}
        for name, button in self.buttons.items():
            button.on_click(lambda _button, name=name: self.actions[name]())
        self.shortcuts = widgets.Text(value="", continuous_update=True, description="shortcuts",
                                      placeholder="click here, then type r / s / k / u")
        self.shortcuts.observe(self._on_typed, names="value")
        super().__init__([self.caption, self.image, widgets.HBox(list(self.buttons.values())),
                          self.shortcuts, self.message, self.help])
        self.refresh()

    def _run(self, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception as error:  # noqa: BLE001 - shown in the UI; callbacks' errors are otherwise lost
            self.refresh(error=f"{type(error).__name__}: {error}")
            return
        self.refresh()

    def label(self, label: str) -> None:
        """Label the current image and show the next one."""
        if not self.session.done:
            self._run(lambda: self.session.label_current(label))

    def undo(self) -> None:
        """Take back the last label and show that image again."""
        self._run(self.session.undo)

    def press(self, key: str) -> bool:
        """Act on one shortcut key (case-insensitive); False when the key means nothing."""
        action = KEYS.get(key.lower())
        if action is None:
            return False
        self.actions[action]()
        return True

    def _on_typed(self, change: dict) -> None:
        typed = change["new"]
        if not typed:
            return  # our own clearing below
        self.shortcuts.value = ""
        if not self.press(typed[-1]):
            self.refresh(error=f"unknown key {typed[-1]!r}: use r, s, k or u")

    def refresh(self, *, error: str = "") -> None:
        """Show the current image, caption, progress and button states."""
        session = self.session
        image = session.current()
        done, total = session.progress()
        notes = []
        if image is None:
            self.image.layout.display = "none"
            self.caption.value = f"<b>Done</b> &middot; {done} of {total} labelled"
            notes.append(f"All {total} images labelled. {html.escape(_counts_text(session.counts()))}")
        else:
            payload, image_format, problem = _display_bytes(image, self.image_width)
            self.image.format = image_format
            self.image.value = payload
            self.image.layout.display = None
            name, folder = html.escape(image.name, quote=False), html.escape(str(image.parent), quote=False)
            self.caption.value = f"<b>{name}</b> &middot; {done} of {total} labelled <small>({folder})</small>"
            if problem:
                notes.append(html.escape(problem, quote=False))
        if error:
            notes.append(f"<span style='color:#b00'>{html.escape(error, quote=False)}</span>")
        self.message.value = "<br>".join(notes)
        for label in LABELS:
            self.buttons[label].disabled = image is None
        self.buttons["Undo"].disabled = not session.can_undo


def labeler_widget(session: LabelingSession, *, image_width: int = 384) -> LabelerWidget:
    """The labeling UI over ``session`` (a VBox): image, caption, Rover/Surface/Skip/Undo buttons, shortcut box.

    Display it as a notebook cell's last expression. See :class:`LabelerWidget` for its parts.
    """
    return LabelerWidget(session, image_width=image_width)
