"""Crash-safe writes: a reader sees the old file or the new one, never half of one, and no temporary is left."""

import os

import pandas as pd
import pytest

from marsrover import atomic


def test_write_text_creates_missing_folders_and_returns_the_path(tmp_path):
    target = tmp_path / "deep" / "er" / "notes.txt"

    written = atomic.write_text(target, "Mars — Gale crater\n")

    assert written == target
    assert target.read_text(encoding="utf-8") == "Mars — Gale crater\n"


def test_write_text_replaces_an_existing_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("old", encoding="utf-8")

    atomic.write_text(target, "new")

    assert target.read_text(encoding="utf-8") == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["metrics.json"]


def test_a_failed_write_keeps_the_old_file_whole_and_cleans_up(tmp_path, monkeypatch):
    target = tmp_path / "index.csv"
    target.write_text("the old index", encoding="utf-8")

    def disk_full(source, destination):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text(target, "half of a new index")

    assert target.read_text(encoding="utf-8") == "the old index"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["index.csv"]


def test_an_unencodable_text_fails_before_touching_the_target(tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("kept", encoding="utf-8")

    with pytest.raises(UnicodeEncodeError):
        atomic.write_text(target, "lone surrogate \udc80")

    assert target.read_text(encoding="utf-8") == "kept"
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_write_csv_writes_the_table_without_its_index(tmp_path):
    table = pd.DataFrame({"image": ["a.jpg", "b.jpg"], "label": ["Rover", "Surface"]}, index=[7, 9])

    path = atomic.write_csv(table, tmp_path / "labels.csv")

    assert path.read_text(encoding="utf-8").splitlines() == ["image,label", "a.jpg,Rover", "b.jpg,Surface"]
    pd.testing.assert_frame_equal(pd.read_csv(path), table.reset_index(drop=True))
