"""The interactive labeler: a CSV store written atomically, a resumable session, and the widget driven by code."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import pytest
from PIL import Image

from marsrover import labeler
from marsrover.labeler import (LabelingSession, LabelStore, images_to_label, labeler_widget,
                               labels_as_index)


def make_image(path: Path, size=(48, 32), value: int = 0, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.full((size[1], size[0], 3), value, dtype=np.uint8)
    pixels[:, : size[0] // 2, 1] = 200
    Image.fromarray(pixels).save(path, fmt)
    return path


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    """Three tiny images under tmp_path/feed, in name order."""
    return [make_image(tmp_path / "feed" / f"img{i}.png", value=60 * i) for i in range(3)]


@pytest.fixture
def csv_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "labels" / "labels.csv"


@pytest.fixture
def store(csv_path: Path, tmp_path: Path) -> LabelStore:
    return LabelStore(csv_path, root=tmp_path / "feed")


# -- LabelStore -----------------------------------------------------------------------------------

def test_record_writes_the_whole_csv_after_every_call_and_a_reload_gives_the_same_labels(store, images, csv_path):
    assert not csv_path.exists()
    store.record(images[0], "Rover")
    assert csv_path.exists(), "the parent folders and the CSV are created by the first record"
    assert [r["path"] for r in read_csv_rows(csv_path)] == ["img0.png"]
    store.record(images[1], "Surface")
    rows = read_csv_rows(csv_path)
    assert list(rows[0]) == ["path", "label", "labelled_at"]
    assert [(r["path"], r["label"]) for r in rows] == [("img0.png", "Rover"), ("img1.png", "Surface")]
    assert all(r["labelled_at"].endswith("+00:00") for r in rows), "timestamps are ISO 8601 in UTC"

    reloaded = LabelStore(csv_path, root=store.root)
    assert reloaded.labels() == store.labels() == {"img0.png": "Rover", "img1.png": "Surface"}
    assert reloaded.get(images[1]) == "Surface" and images[2] not in reloaded
    assert reloaded.as_frame().equals(store.as_frame())


def test_relabelling_a_path_replaces_its_label_without_duplicates(store, images, csv_path):
    store.record(images[0], "Rover")
    store.record(images[1], "Skip")
    store.record(images[0], "Surface")
    store.record(str(images[0]), "surface")  # a str path and any case name the same entry
    rows = read_csv_rows(csv_path)
    assert sorted((r["path"], r["label"]) for r in rows) == [("img0.png", "Surface"), ("img1.png", "Skip")]
    assert store.counts() == {"Rover": 0, "Surface": 1, "Skip": 1}
    assert list(store.as_frame().columns) == ["path", "label", "labelled_at"]


def test_an_invalid_label_raises_value_error_naming_the_allowed_ones_and_writes_nothing(store, images, csv_path):
    with pytest.raises(ValueError, match="Rover, Surface, Skip") as raised:
        store.record(images[0], "Sky")
    assert "'Sky'" in str(raised.value)
    assert not csv_path.exists() and store.labels() == {}


def test_paths_under_root_are_stored_relative_and_others_absolute(store, tmp_path, csv_path):
    inside = make_image(tmp_path / "feed" / "sol1000" / "a.jpg", fmt="JPEG")
    outside = make_image(tmp_path / "elsewhere" / "b.jpg", fmt="JPEG")
    store.record(inside, "Rover")
    store.record(outside, "Surface")
    assert store.labels() == {"sol1000/a.jpg": "Rover", str(outside): "Surface"}
    assert store.get("sol1000/a.jpg") == "Rover", "relative paths are read relative to root"
    assert store.resolve("sol1000/a.jpg") == inside


@pytest.mark.parametrize("failing", ["write", "fsync", "replace"])
def test_a_crash_while_writing_leaves_the_previous_csv_intact_and_the_store_usable(
        store, images, csv_path, monkeypatch, failing):
    store.record(images[0], "Rover")
    before = csv_path.read_bytes()

    class Crash(RuntimeError):
        pass

    def crash(*args, **kwargs):
        raise Crash("simulated crash")

    if failing == "write":  # the crash hits in the middle of writing the temporary file
        real_writer = csv.writer

        def half_writer(handle, *args, **kwargs):
            writer = real_writer(handle, *args, **kwargs)

            class Half:
                rows = 0

                def writerow(self, row):
                    Half.rows += 1
                    if Half.rows > 1:
                        handle.write("img1.png,Surf")  # a partial line, then the crash
                        raise Crash("simulated crash")
                    writer.writerow(row)
            return Half()
        monkeypatch.setattr(labeler.csv, "writer", half_writer)
    else:
        monkeypatch.setattr(labeler.os, failing, crash)

    with pytest.raises(Crash):
        store.record(images[1], "Surface")
    monkeypatch.undo()

    assert csv_path.read_bytes() == before, "the CSV on disk is the one from before the crash"
    assert LabelStore(csv_path, root=store.root).labels() == {"img0.png": "Rover"}
    assert store.labels() == {"img0.png": "Rover"}, "memory matches the disk: the failed label is not kept"
    assert [p.name for p in csv_path.parent.iterdir()] == ["labels.csv"], "no temporary file is left behind"

    store.record(images[1], "Surface")  # still usable
    assert LabelStore(csv_path, root=store.root).labels() == {"img0.png": "Rover", "img1.png": "Surface"}


def test_a_label_file_with_a_bad_label_is_refused_with_file_and_line(csv_path, tmp_path):
    csv_path.parent.mkdir(parents=True)
    csv_path.write_text("path,label,labelled_at\na.png,Rover,\nb.png,Sky,\n")
    with pytest.raises(ValueError, match=r"labels\.csv:3: .*Rover, Surface, Skip"):
        LabelStore(csv_path)


# -- LabelingSession ------------------------------------------------------------------------------

def test_a_session_shows_images_in_order_and_a_new_session_resumes_at_the_first_unlabelled(store, images, csv_path):
    session = LabelingSession(images, store)
    assert session.current() == images[0] and not session.done
    assert session.label_current("Rover") == images[0]
    assert session.current() == images[1]

    resumed = LabelingSession(images, LabelStore(csv_path, root=store.root))
    assert resumed.current() == images[1]
    assert resumed.progress() == (1, 3)


def test_skip_counts_as_handled_but_is_left_out_of_labels_as_index(store, images, tmp_path):
    session = LabelingSession(images, store)
    session.label_current("Rover")
    session.label_current("Skip")
    assert session.current() == images[2], "a skipped image is not shown again"
    session.label_current("Surface")
    assert session.done and session.current() is None
    assert session.counts() == {"Rover": 1, "Surface": 1, "Skip": 1}
    with pytest.raises(RuntimeError, match="all 3 images are labelled"):
        session.label_current("Rover")

    index = labels_as_index(store, tmp_path / "feed")
    assert list(index.columns[:3]) == ["path", "label", "label_name"]
    assert index[["path", "label", "label_name"]].values.tolist() == [
        ["img0.png", 0, "Rover"], ["img2.png", 1, "Surface"]]
    assert index["id"].tolist() == ["img0", "img2"] and index["sha256"].str.len().tolist() == [64, 64]
    assert all((tmp_path / "feed" / p).is_file() for p in index["path"])


def test_labels_as_index_gives_absolute_paths_for_images_outside_root(store, tmp_path):
    outside = make_image(tmp_path / "other" / "x.jpg", fmt="JPEG")
    store.record(outside, "Surface")
    index = labels_as_index(store, tmp_path / "feed")
    assert index["path"].tolist() == [str(outside)] and index["label"].tolist() == [1]
    assert labels_as_index(LabelStore(tmp_path / "empty.csv")).empty


def test_undo_removes_the_last_label_persists_it_and_shows_that_image_again(store, images, csv_path):
    session = LabelingSession(images, store)
    assert session.undo() is None and not session.can_undo
    session.label_current("Rover")
    session.label_current("Surface")
    assert session.undo() == images[1]
    assert session.current() == images[1]
    assert [r["path"] for r in read_csv_rows(csv_path)] == ["img0.png"], "the undo is written at once"
    assert session.undo() == images[0]
    assert read_csv_rows(csv_path) == [] and csv_path.exists()
    assert session.progress_text() == "0 of 3"


def test_undo_in_a_resumed_session_takes_back_the_image_before_the_current_one(store, images, csv_path):
    first = LabelingSession(images, store)
    first.label_current("Rover")
    first.label_current("Skip")
    resumed = LabelingSession(images, LabelStore(csv_path, root=store.root))
    assert resumed.undo() == images[1]
    assert resumed.current() == images[1]
    assert LabelStore(csv_path, root=store.root).labels() == {"img0.png": "Rover"}


def test_progress_counts_handled_images_of_the_session(store, images):
    session = LabelingSession([*images, images[0]], store)  # a duplicate is listed once
    assert session.progress() == (0, 3) and session.progress_text() == "0 of 3"
    session.label_current("Skip")
    session.label_current("Rover")
    assert session.progress() == (2, 3) and session.progress_text() == "2 of 3"


# -- images_to_label ------------------------------------------------------------------------------

def test_images_to_label_finds_nested_images_sorted_and_ignores_other_extensions(tmp_path):
    root = tmp_path / "raw"
    b = make_image(root / "sol2" / "b.JPG", fmt="JPEG")
    a = make_image(root / "sol1" / "deep" / "a.jpeg", fmt="JPEG")
    c = make_image(root / "c.png")
    (root / "notes.txt").write_text("not an image")
    (root / "sol1" / "a.tif").write_bytes(b"")
    make_image(root / ".ipynb_checkpoints" / "hidden.png")
    assert images_to_label(root) == sorted([a, b, c])
    assert images_to_label(str(root), extensions=(".png",)) == [c]
    assert images_to_label([c, root / "sol2"]) == sorted([b, c])
    with pytest.raises(FileNotFoundError):
        images_to_label(tmp_path / "missing")


# -- the widget -----------------------------------------------------------------------------------

def test_the_widget_is_driven_by_buttons_and_the_shortcut_box(store, images, csv_path):
    session = LabelingSession(images, store)
    ui = labeler_widget(session, image_width=24)
    assert isinstance(ui, widgets.VBox)
    assert "img0.png" in ui.caption.value and "0 of 3" in ui.caption.value
    assert Image.open(io.BytesIO(ui.image.value)).width == 24, "the image is downscaled"
    assert ui.shortcuts.continuous_update and "r</b> = Rover" in ui.help.value
    assert ui.buttons["Undo"].disabled

    ui.buttons["Rover"].click()
    assert "img1.png" in ui.caption.value and "1 of 3" in ui.caption.value
    ui.buttons["Surface"].click()
    assert "img2.png" in ui.caption.value

    ui.shortcuts.value = "k"  # as typed in the box: acts at once and clears it
    assert ui.shortcuts.value == ""
    assert "3 of 3" in ui.caption.value
    assert "All 3 images labelled" in ui.message.value
    assert "Rover: 1, Surface: 1, Skip: 1" in ui.message.value
    assert ui.buttons["Rover"].disabled and not ui.buttons["Undo"].disabled
    assert [(r["path"], r["label"]) for r in read_csv_rows(csv_path)] == [
        ("img0.png", "Rover"), ("img1.png", "Surface"), ("img2.png", "Skip")]

    ui.shortcuts.value = "xU"  # only the last letter counts, in any case
    assert "img2.png" in ui.caption.value and "2 of 3" in ui.caption.value
    ui.shortcuts.value = "q"
    assert "unknown key 'q'" in ui.message.value
    ui.actions["Surface"]()  # the exposed functions work without the widgets
    assert store.labels()["img2.png"] == "Surface"
    assert LabelStore(csv_path, root=store.root).counts() == {"Rover": 1, "Surface": 2, "Skip": 0}


def test_the_widget_shows_an_unreadable_image_as_a_grey_box_and_errors_in_its_message(store, tmp_path, monkeypatch):
    broken = tmp_path / "feed" / "broken.jpg"
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a jpeg")
    ui = labeler_widget(LabelingSession([broken], store))
    assert ui.image.value and "cannot display this image" in ui.message.value

    monkeypatch.setattr(labeler.os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    ui.buttons["Skip"].click()
    assert "disk full" in ui.message.value and "broken.jpg" in ui.caption.value
    assert store.labels() == {} and list(store.csv_path.parent.iterdir()) == []
