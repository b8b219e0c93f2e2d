"""The ``marsrover predict`` and ``sort`` commands as a user runs them, with a real (tiny) Keras model.

The model is the seed notebook's CNN at 32 px, untrained and saved as ``.keras``: its answers are
arbitrary but valid probabilities, which is all these tests need. Where the folder an image lands
in matters, a stub model is swapped in for ``inference.load_model``.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from marsrover import cli, config, inference
from marsrover.dataset import DataSetError

pytest.importorskip("keras")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from marsrover.models import build_model

    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    build_model("seed_notebook", 32).save(path)
    return path


@pytest.fixture
def images(tmp_path) -> Path:
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(root / f"rgb{i}.jpg")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(root / "sub" / "grey.PNG")
    Image.fromarray(rng.integers(0, 65535, (30, 30), dtype=np.uint16)).save(root / "sub" / "sixteen.png")
    (root / "readme.txt").write_text("not an image")
    return root


def read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False)


def test_predict_writes_one_row_per_image_and_exits_zero(tiny_model, images, tmp_path, capsys):
    out = tmp_path / "predictions.csv"
    status = cli.main(["predict", str(images), "--model", str(tiny_model), "--out", str(out), "--no-progress"])
    assert status == 0
    table = read_predictions(out)
    assert list(table.columns) == ["path", "label", "p_surface", "model", "error"]
    assert len(table) == 7 and (table["error"] == "").all()
    assert table["label"].isin(["Rover", "Surface"]).all()
    assert table["p_surface"].astype(float).between(0, 1).all()
    assert set(table["model"]) == {str(tiny_model)}
    counts = table["label"].value_counts()
    text = capsys.readouterr().out
    assert (f"7 image(s): {counts.get('Rover', 0)} Rover, {counts.get('Surface', 0)} Surface, 0 failed"
            in text)


def test_predict_reports_broken_files_carries_on_and_exits_two(tiny_model, images, tmp_path, capsys):
    (images / "empty.jpg").write_bytes(b"")
    (images / "sub" / "fake.jpeg").write_text("hello")
    Image.new("RGB", (200, 200)).save(images / "big.png")
    out = tmp_path / "p.csv"
    status = cli.main(["predict", str(images), "--model", str(tiny_model), "--out", str(out),
                       "--max-pixels", "1e4", "--threshold", "0.3", "--batch-size", "3", "--no-progress"])
    assert status == 2
    table = read_predictions(out).set_index("path")
    assert len(table) == 10
    assert "empty file" in table.loc[str(images / "empty.jpg"), "error"]
    assert "not an image" in table.loc[str(images / "sub" / "fake.jpeg"), "error"]
    assert "too large" in table.loc[str(images / "big.png"), "error"]
    failed = table[table["error"] != ""]
    assert (failed["label"] == "").all() and (failed["p_surface"] == "").all()
    good = table[table["error"] == ""]
    assert (good["label"] == np.where(good["p_surface"].astype(float) >= 0.3, "Surface", "Rover")).all()
    text = capsys.readouterr().out
    assert "3 failed" in text and "empty.jpg" in text


def test_predict_takes_globs_and_single_files(tiny_model, images, tmp_path):
    out = tmp_path / "p.csv"
    pattern = str(images / "**" / "*.png")
    assert cli.main(["predict", pattern, str(images / "rgb0.jpg"), "--model", str(tiny_model),
                     "--out", str(out), "--no-progress"]) == 0
    assert sorted(Path(p).name for p in read_predictions(out)["path"]) == ["rgb0.jpg", "sixteen.png"]


def test_predict_uses_the_newest_saved_model_by_default(tiny_model, images, tmp_path, monkeypatch, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.keras").write_bytes(tiny_model.read_bytes())
    monkeypatch.setattr(config, "MODELS_DIR", models)
    monkeypatch.setattr(config, "REPORTS_DIR", tmp_path / "no-reports")
    assert cli.main(["predict", str(images / "rgb1.jpg"), "--out", str(tmp_path / "p.csv"), "--no-progress"]) == 0
    assert f"Model {models / 'tiny.keras'} (32x32 input)" in capsys.readouterr().out


def test_predict_without_a_model_says_how_to_get_one(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(config, "REPORTS_DIR", tmp_path / "reports")
    assert cli.main(["predict", str(images), "--out", str(tmp_path / "p.csv")]) == 1
    error = capsys.readouterr().err
    assert "no trained model" in error and "marsrover study" in error and "--model" in error
    assert not (tmp_path / "p.csv").exists()


def test_predict_of_a_missing_path_is_an_error(tiny_model, tmp_path, capsys):
    assert cli.main(["predict", str(tmp_path / "nope"), "--model", str(tiny_model)]) == 1
    assert "nope" in capsys.readouterr().err


def test_predict_of_a_folder_without_images_is_an_error(tiny_model, tmp_path, capsys):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.txt").write_text("not an image")
    assert cli.main(["predict", str(tmp_path / "docs"), "--model", str(tiny_model)]) == 1
    assert "no images in" in capsys.readouterr().err


def test_predict_gives_a_named_file_that_is_not_an_image_a_row_with_its_error(tiny_model, images, tmp_path):
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(images / "readme.txt"), "--model", str(tiny_model), "--out", str(out)]) == 2
    (row,) = read_predictions(out).itertuples()
    assert row.label == "" and row.error != ""


def test_predict_refuses_a_folder_as_its_output_before_classifying(tiny_model, images, tmp_path, capsys):
    assert cli.main(["predict", str(images), "--model", str(tiny_model), "--out", str(tmp_path)]) == 1
    assert "is a folder" in capsys.readouterr().err


def test_an_output_that_cannot_be_written_is_refused_before_classifying(tiny_model, images, tmp_path, capsys):
    a_file = tmp_path / "taken.csv"
    a_file.write_text("x")
    assert cli.main(["predict", str(images), "--model", str(tiny_model), "--out", str(a_file / "p.csv")]) == 1
    printed = capsys.readouterr()
    assert f"cannot write --out {a_file / 'p.csv'}: {a_file} is a file, not a folder" in printed.err
    assert "image(s) found" not in printed.out  # refused before the model was even loaded
    assert cli.main(["sort", str(images), "--model", str(tiny_model), "--into", str(a_file)]) == 1
    assert f"cannot write --into {a_file}: {a_file} is a file, not a folder" in capsys.readouterr().err
    assert a_file.read_text() == "x"


def test_a_folder_that_refuses_files_is_named_before_classifying(tiny_model, images, tmp_path, monkeypatch, capsys):
    import tempfile

    def refuse(dir=None, **_):
        raise PermissionError(13, "Permission denied", str(dir))

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    assert cli.main(["sort", str(images), "--model", str(tiny_model), "--into", str(tmp_path / "sorted")]) == 1
    printed = capsys.readouterr()
    assert f"cannot write --into {tmp_path / 'sorted'}: Permission denied ({tmp_path})" in printed.err
    assert "image(s) found" not in printed.out


def test_a_run_that_fails_after_the_output_check_leaves_no_empty_folder(images, tmp_path, capsys):
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    out, into = tmp_path / "new" / "deeper" / "p.csv", tmp_path / "sorted" / "here"
    assert cli.main(["predict", str(images), "--model", str(junk), "--out", str(out)]) == 1
    assert cli.main(["sort", str(images), "--model", str(junk), "--into", str(into)]) == 1
    assert "is not a .keras model" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "sorted").exists()


def test_a_file_that_is_not_a_model_is_named_as_such(images, tmp_path, capsys):
    junk = tmp_path / "junk.keras"
    junk.write_text("not a model")
    assert cli.main(["predict", str(images), "--model", str(junk), "--out", str(tmp_path / "p.csv")]) == 1
    assert f"{junk} is not a .keras model: a .keras file is a zip archive, and this one is not" in capsys.readouterr().err
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(broken, "w") as archive:  # a zip, but not what Keras saves
        archive.writestr("config.json", "{}")
    assert cli.main(["predict", str(images), "--model", str(broken), "--out", str(tmp_path / "p.csv")]) == 1
    assert f"could not load the model in {broken}" in capsys.readouterr().err


def test_bad_options_are_refused_with_status_one_as_nothing_was_done(tiny_model, images, capsys):
    for bad in (["--threshold", "1.5"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["predict", str(images), "--model", str(tiny_model), *bad])
        assert exit_info.value.code == cli.EXIT_ERROR != cli.EXIT_SOME_FAILED  # 2 means "some images failed"
        assert "usage: marsrover predict" in capsys.readouterr().err


@pytest.mark.parametrize("command, bad, message", [
    ("predict", ["--threshold", "abc"], "argument --threshold: not a number: 'abc'"),
    ("predict", ["--batch-size", "1.5"], "argument --batch-size: not a whole number: '1.5'"),
    ("predict", ["--max-pixels", "1e9"], "Pillow refuses images over 178956970 pixels"),
    ("predict", ["--max-pixels", "0"], "argument --max-pixels: must be a finite number more than 0, got 0"),
    ("sort", ["--into", "out", "--low", "low"], "argument --low: not a number: 'low'"),
    ("fetch-raw", ["--retries", "-1"], "argument --retries: must not be negative, got -1"),
    ("fetch-raw", ["--timeout", "0"], "argument --timeout: must be a finite number more than 0, got 0"),
    ("fetch-raw", ["--timeout", "inf"], "argument --timeout: must be a finite number more than 0, got inf"),
    ("fetch-raw", ["--limit", "ten"], "argument --limit: not a whole number: 'ten'"),
])
def test_a_bad_option_value_is_named_in_words(command, bad, message, capsys):
    target = ["--mission", "msl"] if command == "fetch-raw" else ["some.jpg"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, *target, *bad])
    assert exit_info.value.code == cli.EXIT_ERROR and message in capsys.readouterr().err


def test_a_folder_given_as_the_model_is_named_as_a_folder(images, tmp_path, capsys):
    assert cli.main(["predict", str(images), "--model", str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 1
    assert f"model {tmp_path} is a folder; give a saved .keras file" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# sort


class BrightnessModel:
    """P(Surface) = mean brightness / 255."""

    name = "brightness"
    input_shape = (None, 8, 8, 3)

    def predict_on_batch(self, batch):
        p = np.asarray(batch, dtype="float64").mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1 - p, p], axis=1)


def test_sort_command_sorts_resumes_and_skips_its_own_output(images, tmp_path, monkeypatch, capsys):
    for name, value in (("dark.png", 5), ("mid.png", 127), ("bright.png", 250)):
        Image.new("RGB", (9, 9), (value,) * 3).save(images / name)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff")
    monkeypatch.setattr(inference, "load_model", lambda path=None: BrightnessModel())
    model_file = tmp_path / "any.keras"
    model_file.write_bytes(b"stand-in")
    into = images / "sorted"  # inside the folder being sorted: must not be sorted again
    argv = ["sort", str(images), "--into", str(into), "--model", str(model_file), "--no-progress"]

    assert cli.main(argv) == 2
    text = capsys.readouterr().out
    assert "broken.jpg" in text and "1 unreadable" in text
    assert (into / "Rover" / "dark.png").exists() and (into / "Surface" / "bright.png").exists()
    assert (into / "Uncertain" / "mid.png").exists()
    total = sum(1 for p in into.rglob("*") if p.is_file() and p.suffix != ".csv")
    assert total == 10  # 7 from the fixture (random noise: Uncertain) + dark, mid, bright

    assert cli.main(argv) == 2  # the unreadable file still is
    assert "10 skipped as sorted by an earlier run" in capsys.readouterr().out
    assert sum(1 for p in into.rglob("*") if p.is_file() and p.suffix != ".csv") == total

    assert cli.main([*argv, "--low", "0.9", "--high", "0.1"]) == 1
    assert "--low" in capsys.readouterr().err


def test_sort_move_with_the_real_model(tiny_model, images, tmp_path, capsys):
    into = tmp_path / "sorted"
    status = cli.main(["sort", str(images), "--into", str(into), "--model", str(tiny_model), "--move",
                       "--low", "0", "--high", "1", "--no-progress"])
    assert status == 0
    assert sorted(p.name for p in (into / "Uncertain").iterdir()) == sorted(
        ["grey.PNG", "sixteen.png", *(f"rgb{i}.jpg" for i in range(5))])
    assert [p.name for p in images.rglob("*") if p.is_file()] == ["readme.txt"]
    assert "Uncertain 7" in capsys.readouterr().out


def test_rerunning_an_interrupted_move_with_the_same_names_finishes_it(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inference, "load_model", lambda path=None: BrightnessModel())
    model_file = tmp_path / "any.keras"
    model_file.write_bytes(b"stand-in")
    into = tmp_path / "sorted"
    named = [str(images / f"rgb{i}.jpg") for i in range(3)]
    options = ["--into", str(into), "--model", str(model_file), "--move", "--no-progress"]
    assert cli.main(["sort", *named[:2], *options]) == 0  # "interrupted" after two of the three

    assert cli.main(["sort", *named, *options]) == 0
    out = capsys.readouterr().out
    assert f"now gone or emptied: {named[0]}, {named[1]}" in out and "1 image(s)" in out
    assert not any(Path(name).exists() for name in named)

    glob_pattern = str(images / "rgb[0-2].jpg")  # a glob whose files were all moved: done, not missing
    assert cli.main(["sort", glob_pattern, *options]) == 0
    assert "Nothing left to sort." in capsys.readouterr().out

    assert cli.main(["sort", str(images), *options]) == 0  # the rest of the folder
    capsys.readouterr()
    assert cli.main(["sort", str(images), *options]) == 0  # the folder, emptied by the move: done
    out = capsys.readouterr().out
    assert f"now gone or emptied: {images}" in out and "Nothing left to sort." in out
    empty = tmp_path / "empty"  # an empty folder the log knows nothing of: still "no images"
    empty.mkdir()
    assert cli.main(["sort", str(empty), *options]) == 1
    assert "no images in" in capsys.readouterr().err

    never_there = str(images / "never.jpg")  # not in the log: still an error
    assert cli.main(["sort", never_there, *options]) == 1
    assert "no such file or folder" in capsys.readouterr().err


def test_a_bare_fetch_raw_fetches_the_newest_hundred_and_says_so(monkeypatch, tmp_path, capsys):
    from marsrover import rawfeeds

    calls = []

    def fake_fetch(mission, **options):
        calls.append(options)
        raise OSError(13, "Permission denied", str(tmp_path / "locked"))

    monkeypatch.setattr(rawfeeds, "fetch_raw", fake_fetch)
    assert cli.main(["fetch-raw", "--mission", "msl"]) == 1  # a disk error is a message, not a traceback
    captured = capsys.readouterr()
    assert "fetching the newest 100 images" in captured.out and calls[-1]["limit"] == 100
    assert "marsrover: error:" in captured.err and "Permission denied" in captured.err
    cli.main(["fetch-raw", "--mission", "msl", "--sols", "100-110"])  # a sol range sets its own end
    assert calls[-1]["limit"] is None
    cli.main(["fetch-raw", "--mission", "msl", "--sols", " "])  # an empty range is no range
    assert calls[-1]["limit"] == 100
    assert cli.main(["fetch-raw", "--mission", "msl", "--sols", "20-10"]) == 1  # refused before any request
    assert "is empty: 20 > 10" in capsys.readouterr().err and calls[-1]["sols"] == " "
    cli.main(["fetch-raw", "--mission", "msl", "--limit", "5000"])
    assert calls[-1]["limit"] == 5000 and calls[-1]["size"] == "medium"
    cli.main(["fetch-raw", "--mission", "mars2020", "--size", "large"])
    assert calls[-1]["size"] == "large"
    count = len(calls)
    assert cli.main(["fetch-raw", "--mission", "msl", "--size", "large"]) == 1  # a rendition MSL does not have
    assert "the msl feed has one size" in capsys.readouterr().err and len(calls) == count


def test_data_with_a_wrong_checksum_says_what_and_where_without_a_traceback(tmp_path, monkeypatch, capsys):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / config.ARCHIVE_NAME).write_bytes(b"not the archive")
    (mirror / "SHA256SUMS").write_text(f"{'0' * 64}  {config.ARCHIVE_NAME}\n")
    monkeypatch.setenv(config.MIRROR_ENV, str(mirror))
    assert cli.main(["data", "--data-dir", str(tmp_path / "data")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("marsrover: error:") and config.ARCHIVE_NAME in error and "Traceback" not in error


@pytest.mark.parametrize("error", [DataSetError("train.txt: unknown MSL class id(s) [30]"),
                                   OSError(28, "No space left on device")], ids=["bad data set", "full disk"])
def test_data_reports_a_bad_data_set_or_disk_as_a_message(error, monkeypatch, capsys):
    from marsrover import study

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(study, "acquire", fail)
    assert cli.main(["data"]) == 1
    assert capsys.readouterr().err.startswith("marsrover: error:")


def test_data_lets_a_programming_error_through(monkeypatch):
    from marsrover import study

    monkeypatch.setattr(study, "acquire", lambda *args, **kwargs: [][0])
    with pytest.raises(IndexError):  # a bug keeps its traceback
        cli.main(["data"])


def test_python_dash_m_marsrover_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "marsrover", "--help"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0
    for command in ("data", "study", "predict", "sort", "fetch-raw"):
        assert command in result.stdout


def test_the_command_line_prints_no_tensorflow_start_up_lines_but_every_other_message(tiny_model, images, tmp_path):
    # TensorFlow prints them from C++ on a machine without a GPU; they read as errors ("failed call to cuInit").
    (images / "empty.jpg").write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "marsrover", "predict", str(images), "--model", str(tiny_model),
                             "--out", str(tmp_path / "p.csv")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert "cudart_stub" not in result.stderr and "cuInit" not in result.stderr
    assert "Classifying" in result.stderr  # the progress bar still shows
    assert "1 failed" in result.stdout and "empty.jpg" in result.stdout
