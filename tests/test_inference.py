"""Classifying image files: finding them, reading any JPEG/PNG properly, refusing broken ones, batching.

A stub model stands in for Keras here (its P(Surface) is the image's mean brightness), so the
tests are fast and exact; tests/test_cli.py runs a real (tiny, untrained) Keras model.
"""

from __future__ import annotations

import io
import json
import os
import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from marsrover import config, inference
from marsrover.inference import ImageReadError, NoModelError

SIZE = 16


class StubModel:
    """Keras-like: ``input_shape``, ``name`` and ``predict_on_batch``; P(Surface) = mean pixel / 255."""

    name = "stub"

    def __init__(self, size: int = SIZE):
        self.input_shape = (None, size, size, 3)
        self.batches: list[int] = []

    def predict_on_batch(self, images):
        images = np.asarray(images)
        assert images.ndim == 4 and images.shape[1:] == self.input_shape[1:]
        self.batches.append(len(images))
        p = images.astype("float64").mean(axis=(1, 2, 3)) / 255.0
        return np.stack([1 - p, p], axis=1)


def solid(path: Path, value: int, mode: str = "RGB", size=(24, 20)) -> Path:
    """A uniform image of brightness ``value`` (0..255) in ``mode``, saved by extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "I;16":
        Image.fromarray(np.full(size[::-1], value * 257, dtype=np.uint16)).save(path)
    else:
        Image.new("RGB", size, (value,) * 3).convert(mode).save(path)
    return path


def jpeg_bytes(size=(64, 48), seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.fixture
def mixed(tmp_path: Path) -> dict[str, Path]:
    """Valid images in every mode the tool accepts, broken files, and files that are not images."""
    root = tmp_path / "images"
    files = {
        "rgb": solid(root / "rgb.jpg", 200),
        "grey": solid(root / "grey.PNG", 40, "L"),
        "rgba": solid(root / "rgba.png", 120, "RGBA"),
        "palette": solid(root / "palette.png", 220, "P"),
        "sixteen": solid(root / "nested" / "deep" / "sixteen.png", 250, "I;16"),
        "large": solid(root / "nested" / "large.JPEG", 10, size=(2400, 1800)),
        "empty": root / "empty.jpg",
        "truncated": root / "truncated.jpg",
        "text": root / "text.jpg",
        "bomb": solid(root / "bomb.png", 100, size=(300, 300)),
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(jpeg_bytes()[:400])
    files["text"].write_text("this is not a JPEG\n")
    (root / "notes.txt").write_text("ignored")
    (root / "scan.tif").write_bytes(b"ignored too")
    (root / "nested" / "table.csv").write_text("a,b\n")
    return files


MAX_PIXELS = 50_000  # the 300x300 "bomb" exceeds it; the 2400x1800 large image is allowed per test


# --------------------------------------------------------------------------------------------
# discover_images


def test_discover_walks_folders_recursively_and_keeps_only_jpeg_and_png(mixed):
    root = mixed["rgb"].parent
    found = inference.discover_images([root])
    assert sorted(found) == sorted(mixed.values())
    assert all(p.suffix.lower() in {".jpg", ".jpeg", ".png"} for p in found)


def test_discover_expands_globs_including_recursive_ones_and_skips_duplicates(mixed):
    root = mixed["rgb"].parent
    pngs = inference.discover_images([str(root / "*.png")])
    assert sorted(pngs) == sorted([mixed["rgba"], mixed["palette"], mixed["bomb"]])  # glob is case-sensitive
    everywhere = inference.discover_images([str(root / "**" / "*.png"), str(root / "**" / "*.png")])
    assert mixed["sixteen"] in everywhere and len(everywhere) == len(set(everywhere))
    both = inference.discover_images([mixed["rgb"], root, mixed["rgb"]])
    assert both[0] == mixed["rgb"] and len(both) == len(mixed)


def test_discover_keeps_files_named_on_their_own_and_reports_missing_paths(mixed, tmp_path):
    root = mixed["rgb"].parent
    assert inference.discover_images([root / "notes.txt"]) == [root / "notes.txt"]  # tried, so its error is shown
    assert root / "notes.txt" not in inference.discover_images([root, str(root / "*")])  # folders and globs: images
    with pytest.raises(FileNotFoundError, match="nowhere.jpg.*nothing-\\*.png"):
        inference.discover_images([tmp_path / "nowhere.jpg", str(tmp_path / "nothing-*.png")])


def test_discover_leaves_out_excluded_folders(mixed):
    root = mixed["rgb"].parent
    found = inference.discover_images([root], exclude=[root / "nested"])
    assert mixed["sixteen"] not in found and mixed["large"] not in found and mixed["rgb"] in found


# --------------------------------------------------------------------------------------------
# read_image: every mode to 8-bit RGB at the model's size


@pytest.mark.parametrize("key, value", [("rgb", 200), ("grey", 40), ("palette", 220), ("sixteen", 250)])
def test_read_image_converts_each_mode_to_rgb_uint8_at_the_requested_size(mixed, key, value):
    array = inference.read_image(mixed[key], (SIZE, SIZE + 4))
    assert array.shape == (SIZE, SIZE + 4, 3) and array.dtype == np.uint8
    assert abs(int(np.median(array)) - value) <= 2  # JPEG may move a level or two


def test_sixteen_bit_images_are_scaled_down_not_clipped(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (4, 1))
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    assert Image.open(tmp_path / "ramp.png").mode == "I;16"
    array = inference.read_image(tmp_path / "ramp.png")
    assert array.shape == (4, 256, 3)
    assert array[0, 0, 0] == 0 and array[0, -1, 0] == 255
    assert np.all(np.diff(array[0, :, 0].astype(int)) >= 0)  # a ramp stays a ramp...
    assert len(np.unique(array)) > 200  # ...over the full 8-bit range, not clipped to 255 above 255
    middle = inference.to_rgb8(Image.fromarray(np.full((2, 2), 32896, dtype=np.uint16)))
    assert np.asarray(middle)[0, 0].tolist() == [128, 128, 128]


def test_32_bit_and_float_greyscale_are_scaled_too():
    as_int = inference.to_rgb8(Image.fromarray(np.array([[0, 65535]], dtype=np.int32)))
    assert np.asarray(as_int)[0].tolist() == [[0, 0, 0], [255, 255, 255]]
    as_float = inference.to_rgb8(Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32)))
    assert np.asarray(as_float)[0, :, 0].tolist() == [0, 128]


def test_transparent_pixels_are_composited_onto_black():
    rgba = Image.new("RGBA", (2, 1), (255, 255, 255, 255))
    rgba.putpixel((1, 0), (255, 255, 255, 0))
    assert np.asarray(inference.to_rgb8(rgba))[0].tolist() == [[255, 255, 255], [0, 0, 0]]


def test_a_large_image_is_resized_to_the_model_input(mixed):
    assert inference.read_image(mixed["large"], SIZE).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize("key, reason", [
    ("empty", "empty file"),
    ("truncated", "(?i)truncated"),
    ("text", "not an image"),
    ("bomb", "too large"),
])
def test_broken_files_raise_image_read_error_with_a_reason(mixed, key, reason):
    with pytest.raises(ImageReadError, match=reason):
        inference.read_image(mixed[key], SIZE, max_pixels=MAX_PIXELS)


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that claims ``width`` x ``height`` pixels but holds almost no data (a bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    return path


def test_the_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    path = png_header_only(tmp_path / "bomb.png", 10_000, 6_000)  # decoded, 60 MB of pixels
    loads = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(1))
    with pytest.raises(ImageReadError, match="60000000 pixels exceeds the limit of 50000000"):
        inference.read_image(path, SIZE)  # the default limit, 50e6
    assert loads == []


def test_pillows_own_bomb_check_is_reported_too(tmp_path):
    path = png_header_only(tmp_path / "huge.png", 20_000, 20_000)  # beyond Pillow's hard limit
    with pytest.raises(ImageReadError, match="decompression bomb"):
        inference.read_image(path, SIZE, max_pixels=1e12)


def test_pillows_own_decompression_bomb_error_is_caught(mixed, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 300x300 > 2 x 1000: Pillow refuses at open
    with pytest.raises(ImageReadError, match="decompression bomb"):
        inference.read_image(mixed["bomb"], SIZE, max_pixels=None)


# --------------------------------------------------------------------------------------------
# classify_files


def test_classify_files_gives_one_row_per_file_with_labels_or_errors(mixed):
    files = inference.discover_images([mixed["rgb"].parent])
    table = inference.classify_files(StubModel(), files, max_pixels=MAX_PIXELS * 100, progress=False)
    assert list(table.columns) == ["path", "label", "p_surface", "model", "error"]
    assert table["path"].tolist() == [str(f) for f in files]
    by_name = table.set_index(table["path"].map(lambda p: Path(p).stem))
    for broken in ("empty", "truncated", "text"):
        assert by_name.loc[broken, "label"] == "" and np.isnan(by_name.loc[broken, "p_surface"])
        assert by_name.loc[broken, "error"]
    valid = table[table["error"] == ""]
    assert len(valid) == 7  # rgb, grey, rgba, palette, sixteen, large, and the bomb under a 5e6 limit
    assert valid["p_surface"].between(0, 1).all()
    assert (valid["label"] == np.where(valid["p_surface"] >= 0.5, "Surface", "Rover")).all()
    assert by_name.loc["rgb", "label"] == "Surface" and by_name.loc["grey", "label"] == "Rover"
    assert by_name.loc["sixteen", "p_surface"] == pytest.approx(250 / 255, abs=0.01)
    assert set(table["model"]) == {"stub"}


def test_classify_files_reports_the_bomb_under_a_small_pixel_limit(mixed):
    table = inference.classify_files(StubModel(), [mixed["bomb"], mixed["rgb"]], max_pixels=MAX_PIXELS,
                                     progress=False)
    assert "too large" in table.loc[0, "error"] and table.loc[0, "label"] == ""
    assert table.loc[1, "label"] == "Surface"


def test_prediction_is_batched_one_predict_call_per_batch(tmp_path):
    files = [solid(tmp_path / f"{i:02d}.png", 10 * i) for i in range(10)]
    files.insert(5, tmp_path / "broken.png")
    files[5].write_bytes(b"\x89PNG broken")
    model = StubModel()
    table = inference.classify_files(model, files, batch_size=4, workers=2, progress=False)
    assert model.batches == [4, 3, 3]  # 11 files in batches of 4; the broken one is left out of batch 2
    assert table["error"].ne("").sum() == 1
    assert table["p_surface"].dropna().tolist() == pytest.approx([10 * i / 255 for i in range(10)], abs=1e-9)


def test_a_batch_with_no_readable_image_calls_no_predict(tmp_path):
    files = [tmp_path / f"{i}.jpg" for i in range(3)]
    for path in files:
        path.write_bytes(b"")
    model = StubModel()
    table = inference.classify_files(model, files, batch_size=2, progress=False)
    assert model.batches == [] and (table["error"] == "empty file (0 bytes)").all()


def test_threshold_moves_the_label_boundary(tmp_path):
    files = [solid(tmp_path / "dim.png", 77), solid(tmp_path / "bright.png", 204)]  # p = 0.302, 0.8
    assert inference.classify_files(StubModel(), files, progress=False)["label"].tolist() == ["Rover", "Surface"]
    table = inference.classify_files(StubModel(), files, threshold=0.3, progress=False)
    assert table["label"].tolist() == ["Surface", "Surface"]
    table = inference.classify_files(StubModel(), files, threshold=0.9, progress=False)
    assert table["label"].tolist() == ["Rover", "Rover"]
    with pytest.raises(ValueError, match="threshold"):
        inference.classify_files(StubModel(), files, threshold=1.5)


def test_summary_and_csv(tmp_path):
    table = pd.DataFrame({"path": ["a", "b", "c"], "label": ["Rover", "Surface", ""],
                          "p_surface": [0.1, 0.9, np.nan], "model": "m", "error": ["", "", "bad"]})
    assert inference.summarize(table) == {"images": 3, "Rover": 1, "Surface": 1, "failed": 1}
    out = inference.write_csv(table, tmp_path / "out" / "p.csv")
    assert sorted(p.name for p in out.parent.iterdir()) == ["p.csv"]
    back = pd.read_csv(out, keep_default_na=False)
    assert back["error"].tolist() == ["", "", "bad"]


# --------------------------------------------------------------------------------------------
# The default model


@pytest.fixture
def model_dirs(tmp_path, monkeypatch):
    models, reports = tmp_path / "models", tmp_path / "reports"
    monkeypatch.setattr(config, "MODELS_DIR", models)
    monkeypatch.setattr(config, "REPORTS_DIR", reports)
    return models, reports


def test_without_any_saved_model_the_error_says_what_to_do(model_dirs):
    with pytest.raises(NoModelError) as error:
        inference.find_default_model()
    message = str(error.value)
    assert str(model_dirs[0]) in message and "marsrover study" in message and "--model" in message


def test_the_newest_exported_model_is_the_default_and_report_models_only_a_fallback(model_dirs):
    models, reports = model_dirs
    report_model = reports / "full" / "models" / "seed_notebook_random_split.keras"
    report_model.parent.mkdir(parents=True)
    report_model.write_bytes(b"model")
    (reports / "full" / "models" / "notes.txt").write_text("not a model")
    assert inference.find_default_model() == report_model  # nothing exported yet
    models.mkdir(parents=True)
    older, newer = models / "improved_refit-aaa.keras", models / "improved_refit-bbb.keras"
    for path, age in ((older, 100), (newer, 50)):
        path.write_bytes(b"model")
        os.utime(path, (time.time() - age, time.time() - age))
    os.utime(report_model, None)  # the newest file of all, but a study run, not the exported headline
    assert inference.find_default_model() == newer
    os.utime(older, None)
    assert inference.find_default_model() == older


def test_without_an_export_the_reports_headline_is_chosen_over_newer_study_runs(model_dirs):
    _, reports = model_dirs
    saved = reports / "full" / "models"
    saved.mkdir(parents=True)
    headline, leakage = saved / "improved_refit.keras", saved / "seed_notebook_random_split.keras"
    for path, age in ((headline, 100), (leakage, 50)):  # the study saves the leakage run last
        path.write_bytes(b"model")
        os.utime(path, (time.time() - age, time.time() - age))
    (reports / "full" / "metrics.json").write_text(json.dumps({"headline": "improved_refit"}))
    (reports / "smoke").mkdir()
    (reports / "smoke" / "metrics.json").write_text("{half a file")  # unreadable: ignored, not fatal
    assert inference.find_default_model() == headline

    (reports / "full" / "metrics.json").write_text(json.dumps({"headline": "transfer"}))  # skipped: no file
    assert inference.find_default_model() == leakage  # the last resort: the newest model of any run


def test_load_model_of_a_missing_file_raises_no_model_error(tmp_path):
    with pytest.raises(NoModelError, match="does not exist"):
        inference.load_model(tmp_path / "missing.keras")


def test_a_saved_improved_model_loads_in_a_fresh_process(tmp_path):
    # The package's own layers must be registered by load_model itself, not by an earlier import.
    import subprocess
    import sys

    from marsrover.models import build_model

    build_model("improved", 32).save(tmp_path / "improved.keras")
    code = ("from marsrover.inference import load_model; "
            f"print(load_model({str(tmp_path / 'improved.keras')!r}).output_shape)")
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "(None, 2)" in finished.stdout


def test_only_a_mixed_policy_the_machine_lacks_counts_as_emulated():
    policies = {"float32", "mixed_bfloat16"}
    assert inference.emulated_policies(policies, gpu=False, cpu_bfloat16=False) == {"mixed_bfloat16"}
    assert inference.emulated_policies(policies, gpu=False, cpu_bfloat16=True) == set()  # AMX or AVX512-BF16
    assert inference.emulated_policies(policies, gpu=True, cpu_bfloat16=False) == set()
    assert inference.emulated_policies({"mixed_float16"}, gpu=False, cpu_bfloat16=True) == {"mixed_float16"}
    assert inference.emulated_policies({"mixed_float16"}, gpu=True, cpu_bfloat16=False) == set()
    assert inference.emulated_policies({"float32"}, gpu=False, cpu_bfloat16=False) == set()


def _saved_under_bfloat16(path: Path) -> Path:
    """A small model of the project's shapes trained under bfloat16: a nested Sequential (as the augmentation
    block), an adapted Normalization layer (as EfficientNet's), batch norm with non-trivial statistics inside a
    nested model, a float32 softmax."""
    import keras

    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        normalization = keras.layers.Normalization(axis=-1)
        normalization.adapt(rng.normal(100, 40, (64, 16, 16, 3)).astype("float32"))
        inner_input = keras.Input((16, 16, 3))
        batch_norm = keras.layers.BatchNormalization()
        features = batch_norm(keras.layers.Conv2D(4, 3, activation="relu")(inner_input))
        inner = keras.Model(inner_input, keras.layers.GlobalAveragePooling2D()(features), name="backbone")
        block = keras.Sequential([keras.layers.RandomFlip("horizontal")], name="augmentation")
        image = keras.Input((16, 16, 3))
        outputs = keras.layers.Dense(2, activation="softmax", dtype="float32")(inner(normalization(block(image))))
        model = keras.Model(image, outputs)
        batch_norm.moving_mean.assign(rng.normal(0, 1, 4).astype("float32"))
        batch_norm.moving_variance.assign(rng.uniform(0.5, 2, 4).astype("float32"))
        model.save(path)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return path


def test_a_model_trained_in_bfloat16_computes_in_float32_where_the_cpu_would_only_emulate_it(tmp_path, monkeypatch):
    import zipfile

    import keras

    from marsrover import training

    path = _saved_under_bfloat16(tmp_path / "bf16.keras")
    images = np.random.default_rng(1).normal(100, 40, (8, 16, 16, 3)).astype("float32")
    monkeypatch.setattr(inference, "has_gpu", lambda: False)
    monkeypatch.setattr(training, "cpu_supports_bfloat16", lambda: True)
    assert inference.float32_copy_where_emulated(path, tmp_path) is None  # the CPU has bfloat16: loaded as saved
    native = inference.load_model(path)
    assert native.get_layer("backbone").layers[-1].compute_dtype == "bfloat16"
    monkeypatch.setattr(training, "cpu_supports_bfloat16", lambda: False)
    (tmp_path / "copy").mkdir()
    copy = inference.float32_copy_where_emulated(path, tmp_path / "copy")
    config = json.loads(zipfile.ZipFile(copy).read("config.json"))
    assert inference._dtype_policies(config) == {"float32"}  # every layer, nested models' included
    assert "bfloat16" not in json.dumps(config)  # nor any input layer's dtype (the nested Sequential has one)
    assert inference.emulated_here(path) == {"mixed_bfloat16"}
    rebuilt = inference.load_model(path)
    assert rebuilt.get_layer("backbone").layers[-1].compute_dtype == "float32"
    as_saved = inference.load_model(path, float32_where_emulated=False)  # what the benchmark times beside it
    assert as_saved.get_layer("backbone").layers[-1].compute_dtype == "bfloat16"
    # The same weights, loaded the usual way: batch-norm statistics and the Normalization layer's state included.
    saved = keras.models.load_model(path, compile=False)
    assert len(rebuilt.weights) == len(saved.weights)
    for kept, original in zip(rebuilt.weights, saved.weights):
        np.testing.assert_array_equal(kept.numpy(), original.numpy())
    np.testing.assert_allclose(rebuilt.predict(images, verbose=0), native.predict(images, verbose=0), atol=2e-2)
    assert np.ptp(rebuilt.predict(images, verbose=0)[:, 1]) > 1e-3  # not a constant output that matches anything
