from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_SET, TINY_SIZES, write_tiny_set
from marsrover import config, dataset


@pytest.mark.parametrize("name, sol, instrument", [
    ("0077ML0005780000102730I01_DRCL.JPG", 77, "Mastcam left"),
    ("calibrated/0830MR0036510000500684E01_DRCL.JPG", 830, "Mastcam right"),
    ("0640MH0002640000203781I01_DRCL.JPG", 640, "MAHLI"),
])
def test_sol_and_instrument_come_from_the_file_name(name, sol, instrument):
    assert dataset.parse_image_name(name) == (sol, instrument)


def test_an_unparseable_file_name_is_an_error_naming_it():
    with pytest.raises(dataset.DataSetError, match="IMG_1234.jpg"):
        dataset.parse_image_name("IMG_1234.jpg")


def test_an_images_observation_is_its_sol_camera_and_sequence_number_or_its_own_id():
    ids = pd.Series(["0989MH0004980040304441I01_DRCL", "0989MH0004980000304437C00_DRCL",
                     "0838MR0036830060500783D01_DRCL", "0838ML0036830010500778I01_DRCL", "0838MH0036830000500001I01",
                     "my_photo"], index=[3, 1, 4, 1, 5, 9])
    sequences = dataset.observation_sequences(ids)
    # Mastcam's left and right eyes are one camera: a sequence often takes a stereo pair of one scene
    assert sequences.tolist() == ["0989MH000498", "0989MH000498", "0838MC003683", "0838MC003683", "0838MH003683",
                                  "my_photo"]
    assert sequences.index.tolist() == [3, 1, 4, 1, 5, 9]


def test_a_malformed_split_line_names_file_and_line(tmp_path):
    split_file = tmp_path / "train-calibrated-shuffled.txt"
    split_file.write_text("calibrated/a.JPG 3\ncalibrated/b.JPG\n")
    with pytest.raises(dataset.DataSetError, match=r"train-calibrated-shuffled.txt:2"):
        dataset.read_split_file(split_file)


def test_the_index_describes_every_listed_image(tiny_images_root):
    index = dataset.build_index(tiny_images_root, progress=False)
    assert list(index.columns) == dataset.INDEX_COLUMNS
    assert len(index) == len(TINY_SET)
    first = index.iloc[0]
    assert first["id"] == "0010ML0000010000100001E01_DRCL"
    assert (first["split"], first["msl_class"], first["msl_name"]) == ("train", 8, "ground")
    assert (first["label"], first["label_name"]) == (1, "Surface")
    assert (first["sol"], first["instrument"]) == (10, "Mastcam left")
    assert (first["width"], first["height"], first["mode"]) == (40, 32, "RGB")
    assert len(first["sha256"]) == 64 and first["error"] == ""
    assert index.loc[index["msl_name"] == "wheel", "label_name"].item() == "Rover"
    assert dataset.index_problems(index, TINY_SIZES) == []


def test_a_class_id_the_data_set_does_not_define_is_an_error_naming_the_split_file(tmp_path):
    entries = TINY_SET + [(TINY_SET[0][0].replace("0001E01", "0009E01"), "val", 30)]
    root = write_tiny_set(tmp_path / "msl-images", entries)
    with pytest.raises(dataset.DataSetError, match=r"val-calibrated-shuffled.txt: unknown MSL class id\(s\) \[30\]"):
        dataset.build_index(root, progress=False)


def test_checks_name_wrong_counts_broken_and_missing_files_and_split_overlap(tmp_path):
    entries = TINY_SET + [(TINY_SET[0][0], "test", 8)]  # the first training image listed again in test
    root = write_tiny_set(tmp_path / "msl-images", entries)
    (root / "calibrated" / TINY_SET[1][0]).write_bytes(b"this is not an image")
    (root / "calibrated" / TINY_SET[2][0]).unlink()
    index = dataset.build_index(root, progress=False)
    problems = "\n".join(dataset.index_problems(index, TINY_SIZES))
    assert "split 'test' lists 3 images, expected 2" in problems
    assert f"calibrated/{TINY_SET[1][0]} (train): UnidentifiedImageError" in problems
    assert f"calibrated/{TINY_SET[2][0]} (train): missing file" in problems
    assert "0010ML0000010000100001E01_DRCL is listed in several splits: test, train" in problems
    with pytest.raises(dataset.DataSetError, match="failed 4 check"):
        dataset.check_index(index, TINY_SIZES)


def test_a_truncated_jpeg_is_reported_not_skipped(tiny_images_root):
    path = tiny_images_root / "calibrated" / TINY_SET[0][0]
    path.write_bytes(path.read_bytes()[:200])
    index = dataset.build_index(tiny_images_root, progress=False)
    assert "truncated" in index.loc[0, "error"].lower() or "OSError" in index.loc[0, "error"]


def test_the_index_is_built_once_per_extracted_archive(tmp_path, monkeypatch):
    paths = config.data_paths(tmp_path / "data")
    write_tiny_set(paths.images_root)
    (paths.interim / ".extracted").write_text("abc123")
    monkeypatch.setattr(dataset, "EXPECTED_SPLIT_SIZES", TINY_SIZES)
    monkeypatch.setattr(dataset, "check_index", lambda index, sizes=None: None)
    first = dataset.load_or_build_index(paths, progress=False)
    monkeypatch.setattr(dataset, "build_index", lambda *a, **k: pytest.fail("index rebuilt"))
    again = dataset.load_or_build_index(paths, progress=False)
    pd.testing.assert_frame_equal(first, again, check_dtype=False)
    (paths.interim / ".extracted").write_text("a different archive")
    with pytest.raises(pytest.fail.Exception):
        dataset.load_or_build_index(paths, progress=False)


def test_subsampling_keeps_every_split_and_both_labels_and_is_repeatable():
    index = pd.DataFrame({
        "id": [f"i{n}" for n in range(300)],
        "split": ["train"] * 200 + ["val"] * 60 + ["test"] * 40,
        "label": ([1] * 140 + [0] * 60) + ([0] * 45 + [1] * 15) + ([0] * 30 + [1] * 10),
    })
    small = dataset.subsample(index, 20, seed=1)
    assert small["split"].value_counts().to_dict() == {"train": 20, "val": 20, "test": 20}
    assert small.groupby("split")["label"].nunique().min() == 2
    assert small[small["split"] == "train"]["label"].mean() == pytest.approx(0.7)
    pd.testing.assert_frame_equal(small, dataset.subsample(index, 20, seed=1))
    assert len(dataset.subsample(index, None, seed=1)) == 300


def test_images_load_as_rgb_uint8_at_the_asked_size(tmp_path):
    from PIL import Image

    grey = tmp_path / "grey.png"
    Image.new("L", (50, 30), 128).save(grey)
    array = dataset.load_image(grey, 16)
    assert array.shape == (16, 16, 3) and array.dtype.name == "uint8"
    assert dataset.load_image(Path(grey)).shape == (30, 50, 3)
