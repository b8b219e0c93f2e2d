"""Sorting files into Rover/Surface/Uncertain: thresholds, never overwriting, resuming, moving.

A stub model makes P(Surface) the image's mean brightness / 255, so where each file goes is exact.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from marsrover import sorting
from marsrover.sorting import LOG_NAME, place_file, read_log, sort_files

SIZE = 8


class StubModel:
    name = "stub"

    def __init__(self):
        self.input_shape = (None, SIZE, SIZE, 3)
        self.batches: list[int] = []

    def predict_on_batch(self, images):
        self.batches.append(len(images))
        p = np.asarray(images, dtype="float64").mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1 - p, p], axis=1)


def solid(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (value,) * 3).save(path)  # PNG: exact values
    return path


# brightness -> P(Surface): 10 -> 0.04 (Rover), 128 -> 0.50 (Uncertain), 240 -> 0.94 (Surface)
EXPECTED = {"dark1.png": "Rover", "dark2.png": "Rover", "mid.png": "Uncertain",
            "bright1.png": "Surface", "bright2.png": "Surface", "sub/bright3.png": "Surface"}
VALUES = {"Rover": 10, "Uncertain": 128, "Surface": 240}


@pytest.fixture
def source(tmp_path) -> Path:
    root = tmp_path / "incoming"
    for name, folder in EXPECTED.items():
        solid(root / name, VALUES[folder] + len(name))  # distinct contents, same class
    (root / "broken.jpg").write_bytes(b"not a jpeg")
    return root


def files_in(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(source: Path, into: Path, model=None, **kwargs) -> sorting.SortSummary:
    files = sorted(source.rglob("*.png")) + sorted(source.rglob("*.jpg"))
    return sort_files(model or StubModel(), files, into, progress=False, batch_size=4, **kwargs)


def test_files_land_in_the_folder_their_probability_says(source, tmp_path):
    into = tmp_path / "sorted"
    summary = run(source, into)
    expected = sorted(f"{folder}/{Path(name).name}" for name, folder in EXPECTED.items())
    assert files_in(into) == sorted([*expected, LOG_NAME])
    assert summary.counts == {"Rover": 2, "Surface": 3, "Uncertain": 1}
    assert summary.placed == 6 and summary.skipped == 0
    assert [source_ for source_, _ in summary.failed] == [str(source / "broken.jpg")]
    assert len(files_in(source)) == 7  # copies: the sources stay
    for name, folder in EXPECTED.items():
        assert sha(into / folder / Path(name).name) == sha(source / name)
    log = read_log(into)
    assert len(log) == 7 and sorted(log["action"]) == ["copied"] * 6 + ["failed"]
    assert "not an image" in log.loc[log["action"] == "failed", "error"].item()
    assert "broken.jpg" in "\n".join(summary.lines())


def test_thresholds_decide_the_folders_with_bounds_counted_as_uncertain(source, tmp_path):
    summary = run(source, tmp_path / "a", low=0.0, high=1.0)
    assert summary.counts == {"Rover": 0, "Surface": 0, "Uncertain": 6}
    summary = run(source, tmp_path / "b", low=0.6, high=0.6)
    assert summary.counts == {"Rover": 3, "Surface": 3, "Uncertain": 0}
    assert sorting.folder_for(0.2) == sorting.folder_for(0.8) == "Uncertain"
    with pytest.raises(ValueError, match="low"):
        run(source, tmp_path / "c", low=0.9, high=0.1)


def test_an_existing_different_file_is_never_overwritten(source, tmp_path):
    into = tmp_path / "sorted"
    solid(into / "Rover" / "dark1.png", 99)
    (into / "Rover" / "dark1 (1).png").write_bytes(b"also someone else's")
    before = {p: p.read_bytes() for p in (into / "Rover").iterdir()}
    run(source, into)
    for path, content in before.items():
        assert path.read_bytes() == content
    assert sha(into / "Rover" / "dark1 (2).png") == sha(source / "dark1.png")


def test_an_identical_file_already_there_is_not_copied_again(source, tmp_path):
    into = tmp_path / "sorted"
    (into / "Surface").mkdir(parents=True)
    (into / "Surface" / "bright1.png").write_bytes((source / "bright1.png").read_bytes())
    summary = run(source, into)
    assert summary.already_there == 1 and summary.placed == 5
    assert not (into / "Surface" / "bright1 (1).png").exists()


def test_a_second_identical_run_does_nothing_new(source, tmp_path):
    into = tmp_path / "sorted"
    run(source, into)
    listing = {p: p.stat().st_mtime_ns for p in into.rglob("*") if p.is_file() and p.name != LOG_NAME}
    model = StubModel()
    summary = run(source, into, model)
    assert summary.skipped == 6 and summary.placed == 0 and summary.already_there == 0
    assert summary.counts == {"Rover": 2, "Surface": 3, "Uncertain": 1}
    assert model.batches == []  # nothing scored: only the unreadable file is tried (and fails) again
    assert {p: p.stat().st_mtime_ns for p in into.rglob("*") if p.is_file() and p.name != LOG_NAME} == listing
    assert len(summary.failed) == 1


def test_a_changed_source_is_sorted_again(source, tmp_path):
    into = tmp_path / "sorted"
    run(source, into)
    solid(source / "dark1.png", 250)  # same name, now bright
    summary = run(source, into)
    assert summary.placed == 1 and (into / "Surface" / "dark1.png").exists()
    assert (into / "Rover" / "dark1.png").exists()  # the earlier copy is left alone


@pytest.mark.parametrize("crash_after_placing", [False, True])
def test_an_interrupted_run_is_finished_by_the_next_one_without_duplicates(source, tmp_path, monkeypatch,
                                                                          crash_after_placing):
    into = tmp_path / "sorted"
    real = sorting.place_file
    calls = []

    def flaky(src, folder, **kwargs):
        calls.append(src)
        if len(calls) == 4:
            if crash_after_placing:  # the file is in place but the log line never written
                real(src, folder, **kwargs)
            raise KeyboardInterrupt("simulated Ctrl-C")
        return real(src, folder, **kwargs)

    monkeypatch.setattr(sorting, "place_file", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(source, into)
    assert len(read_log(into)) == 3
    monkeypatch.setattr(sorting, "place_file", real)

    summary = run(source, into)
    expected = sorted(f"{folder}/{Path(name).name}" for name, folder in EXPECTED.items())
    assert files_in(into) == sorted([*expected, LOG_NAME])  # nothing twice, no "(1)" copies
    assert summary.skipped == 3
    assert summary.placed + summary.already_there == 3
    assert summary.already_there == (1 if crash_after_placing else 0)
    assert not [p for p in into.rglob(".*") if p.is_file()]  # no temporary files left
    log = read_log(into)
    assert sorted(log.loc[log["action"] != "failed", "source"]) == sorted(
        str((source / name).resolve()) for name in EXPECTED)


def test_a_torn_last_log_line_is_ignored_and_does_not_corrupt_the_next(source, tmp_path):
    into = tmp_path / "sorted"
    run(source, into)
    with open(into / LOG_NAME, "a") as handle:
        handle.write("2024-01-01T00:00:00,/some/where.png,abc")  # a crash mid-line
    assert len(read_log(into)) == 7
    run(source, into)
    assert len(read_log(into)) == 8  # the retried unreadable file, on a line of its own


def test_move_removes_the_sources(source, tmp_path):
    into = tmp_path / "sorted"
    contents = {name: sha(source / name) for name in EXPECTED}
    summary = run(source, into, move=True)
    assert summary.placed == 6
    assert files_in(source) == ["broken.jpg"]  # the unreadable file stays where it was
    for name, folder in EXPECTED.items():
        assert sha(into / folder / Path(name).name) == contents[name]
    assert set(read_log(into)["action"]) == {"moved", "failed"}
    assert run(source, into, move=True).placed == 0


def test_a_move_after_a_copy_removes_the_originals_the_copy_left_behind(source, tmp_path):
    into = tmp_path / "sorted"
    run(source, into)  # a plain copy first
    kept_elsewhere = source / "dark1.png"
    (into / "Rover" / "dark1.png").write_bytes(b"changed since")  # this copy no longer holds the original
    summary = run(source, into, move=True)
    assert summary.moved_after_copy == 5 and "5 of them copied then and moved now" in summary.lines()[0]
    assert "1 copied then and kept where they are, as their copies changed since" in summary.lines()[0]
    assert files_in(source) == ["broken.jpg", "dark1.png"] and kept_elsewhere.exists()
    for name, folder in EXPECTED.items():
        assert (into / folder / Path(name).name).exists()
    moved = read_log(into).query("action == 'moved'")
    assert len(moved) == 5 and "dark1.png" not in "".join(moved["source"])
    assert set(summary.table["action"]) >= {"moved (copied earlier)"}


def test_an_original_a_move_cannot_remove_is_reported_as_failed_and_tried_again(source, tmp_path, monkeypatch):
    into = tmp_path / "sorted"
    run(source, into)
    locked = source / "mid.png"
    unlink = Path.unlink

    def refuse(path, *args, **kwargs):
        if path == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    summary = run(source, into, move=True)
    assert (str(locked), "cannot move: PermissionError: [Errno 13] Permission denied: " f"'{locked}'") in summary.failed
    assert locked.exists() and summary.moved_after_copy == 5
    monkeypatch.undo()
    again = run(source, into, move=True)  # the failure did not count as done: the next run finishes it
    assert again.moved_after_copy == 1 and not locked.exists()


def test_move_onto_an_identical_file_just_removes_the_source(source, tmp_path):
    into = tmp_path / "sorted"
    (into / "Rover").mkdir(parents=True)
    (into / "Rover" / "dark1.png").write_bytes((source / "dark1.png").read_bytes())
    summary = run(source, into, move=True)
    assert summary.already_there == 1 and not (source / "dark1.png").exists()
    assert not (into / "Rover" / "dark1 (1).png").exists()


def test_place_file_numbers_names_and_never_overwrites(tmp_path):
    folder = tmp_path / "out"
    sources = []
    for i in range(3):
        path = tmp_path / f"src{i}" / "same.jpg"
        path.parent.mkdir()
        path.write_bytes(f"content {i}".encode())
        sources.append(path)
    placed = [place_file(path, folder) for path in sources]
    assert [(dest.name, action) for dest, action in placed] == [
        ("same.jpg", "copied"), ("same (1).jpg", "copied"), ("same (2).jpg", "copied")]
    assert place_file(sources[1], folder) == (folder / "same (1).jpg", "already there")
    assert [(folder / n).read_bytes() for n in ("same.jpg", "same (1).jpg", "same (2).jpg")] == [
        b"content 0", b"content 1", b"content 2"]
    # A file is never "already there" as itself, so sorting files inside the target cannot delete them.
    assert place_file(folder / "same.jpg", folder, move=True) == (folder / "same.jpg", "already there")
    assert (folder / "same.jpg").exists()


@pytest.mark.parametrize("pattern", ["pics/*.jpg", "pics/**/*.jpg", "**/*.jpg", "*.jpg", "pics/[ab].jpg",
                                     "pics/?.jpg", "pics/deep/*", "pics/*/*.jpg", "link/*.jpg", "link/**/*.jpg"])
def test_a_moved_files_glob_counts_as_done_exactly_when_glob_would_have_listed_it(tmp_path, pattern):
    from marsrover.sorting import _glob_lists

    root = tmp_path.resolve()
    for name in ("pics/a.jpg", "pics/b.jpg", "pics/.hidden.jpg", "pics/deep/c.jpg", "top.jpg"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    (root / "link").symlink_to(root / "pics")
    files = [path for path in root.rglob("*") if path.is_file() and not path.is_symlink()]
    # glob's own answer while the files are there; the log keeps resolved paths, as sort writes them
    listed = {str(Path(match).resolve()) for match in glob.glob(str(root / pattern), recursive=True)}
    for file in files:
        assert _glob_lists(str(root / pattern), str(file)) == (str(file) in listed), file


def test_a_moved_file_whose_name_looks_like_a_glob_counts_as_done(tmp_path):
    into, source = tmp_path / "sorted", tmp_path / "photo [1].jpg"
    (into / "Rover").mkdir(parents=True)
    (into / "Rover" / source.name).write_bytes(b"x")
    (into / sorting.LOG_NAME).write_text(
        "time,source,sha256,p_surface,folder,dest,action,error\n"
        f"t,{source.resolve()},abc,0.1,Rover,Rover/{source.name},moved,\n")
    assert sorting.named_paths_sorted_earlier([str(source), str(tmp_path / "*.png")], into) == (
        [str(tmp_path / "*.png")], [str(source)])  # the glob matches nothing sorted: still reported missing


def test_folders_a_move_emptied_count_as_done_whether_named_or_matched_by_a_glob(tmp_path):
    into, photos = tmp_path / "sorted", tmp_path / "photos"
    for folder in (into / "Rover", photos / "a", photos / "b", tmp_path / "untouched"):
        folder.mkdir(parents=True)
    (photos / "b" / "notes.txt").write_text("not an image: b holds no image")
    (into / "Rover" / "x.jpg").write_bytes(b"x")
    (into / sorting.LOG_NAME).write_text(
        "time,source,sha256,p_surface,folder,dest,action,error\n"
        f"t,{(photos / 'a' / 'x.jpg').resolve()},abc,0.1,Rover,Rover/x.jpg,moved,\n")
    named = [str(photos), str(photos / "*"), str(tmp_path / "untouched")]
    # the log knows nothing of "untouched": it stays, to be reported as holding no images
    assert sorting.named_paths_sorted_earlier(named, into) == ([named[2]], named[:2])
    (photos / "b" / "new.png").write_bytes(b"an image arrived since")
    assert sorting.named_paths_sorted_earlier(named[:2], into) == (named[:2], [])  # searched again
