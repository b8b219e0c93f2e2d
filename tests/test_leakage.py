import hashlib
import shutil

import imagehash
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance
from scipy.spatial.distance import cdist

from marsrover.leakage import count_shared, hash_bits, min_hamming_distances, perceptual_hashes, random_split


def _scene(seed: int) -> Image.Image:
    """A smooth random 64x64 'scene': unrelated seeds give perceptual hashes ~20+ bits apart."""
    blocks = np.random.default_rng(seed).integers(0, 256, (6, 6, 3)).astype("uint8")
    return Image.fromarray(blocks).resize((64, 64), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def leaky_set(tmp_path_factory):
    """train: a, b, c; val: an exact byte copy of a, a brightened JPEG re-encoding of b, two
    unrelated scenes and an unreadable file."""
    root = tmp_path_factory.mktemp("leaky")
    for name, seed in (("a", 0), ("b", 1), ("c", 2), ("d", 3), ("e", 4)):
        _scene(seed).save(root / f"{name}.png")
    shutil.copyfile(root / "a.png", root / "a_copy.png")
    ImageEnhance.Brightness(Image.open(root / "b.png")).enhance(1.1).save(root / "b_bright.jpg", quality=75)
    (root / "broken.png").write_bytes(b"not an image")
    rows = [("a", "train"), ("b", "train"), ("c", "train"),
            ("a_copy", "val"), ("b_bright", "val"), ("d", "val"), ("e", "val"), ("broken", "val")]
    paths = {name: next(root.glob(f"{name}.*")).name for name, _ in rows}
    index = pd.DataFrame({
        "id": [name for name, _ in rows],
        "path": [paths[name] for name, _ in rows],
        "split": [split for _, split in rows],
        "label": [1, 0, 1, 1, 0, 0, 1, 1],
        "sha256": [hashlib.sha256((root / paths[name]).read_bytes()).hexdigest() for name, _ in rows],
    })
    return root, index


def test_perceptual_hashes_are_aligned_with_the_index(leaky_set):
    root, index = leaky_set
    hashes = perceptual_hashes(index.set_index(index.index + 10), root, progress=False, workers=2)
    assert list(hashes.index) == list(range(10, 18)) and hashes.name == "phash"
    assert hashes.iloc[-1] is None  # the unreadable file
    assert hashes.iloc[0] == hashes.iloc[3] == str(imagehash.phash(Image.open(root / "a.png")))
    assert all(len(h) == 16 for h in hashes.iloc[:-1])


def test_exact_and_perceptual_twins_are_counted(leaky_set):
    root, index = leaky_set
    hashes = perceptual_hashes(index, root, progress=False)
    near = imagehash.hex_to_hash(hashes[1]) - imagehash.hex_to_hash(hashes[4])
    assert 0 < near <= 10  # the re-encoded copy is a near twin, not an exact one

    result = count_shared(index, "train", "val", hashes=hashes, max_distance=10)
    assert result["exact"] == 1 and result["exact_ids"] == ["a_copy"]
    assert result["perceptual"] == 2 and result["perceptual_ids"] == ["a_copy", "b_bright"]
    assert (result["n_a"], result["n_b"]) == (3, 5)
    assert result["perceptual_share"] == pytest.approx(2 / 5)

    assert count_shared(index, "train", "val", hashes=hashes, max_distance=0)["perceptual"] == 1
    assert count_shared(index.assign(phash=hashes), "train", "val", max_distance=10)["perceptual"] == 2
    without = count_shared(index, "train", "val")
    assert without["exact"] == 1 and without["perceptual"] is None
    # Counted from the other side: images of train with a twin in val.
    assert count_shared(index, "val", "train", hashes=hashes, max_distance=10)["perceptual"] == 2


def test_images_whose_observation_sequence_also_took_training_images_are_counted():
    index = pd.DataFrame({
        "id": ["0100ML0001230000000001I01_DRCL", "0100MR0001230000000002I01_DRCL", "0200MH0004560000000003I01_DRCL",
               "0100MR0001230000000009E01_DRCL", "0200MH0004570000000004I01_DRCL", "my_photo"],
        "split": ["train", "train", "train", "val", "val", "val"], "sha256": list("abcdef")})
    result = count_shared(index, "train", "val")
    # the right eye's frame shares the left eye's sequence; the next MAHLI sequence and an odd id do not
    assert result["sequence"] == 1 and result["sequence_ids"] == ["0100MR0001230000000009E01_DRCL"]
    assert result["sequence_share"] == pytest.approx(1 / 3) and result["exact"] == 0


def test_vectorised_hamming_distances_match_scipy():
    rng = np.random.default_rng(0)
    as_hex = lambda n: [row.tobytes().hex() for row in rng.integers(0, 256, (n, 8), dtype=np.uint8)]
    hashes_a, hashes_b = as_hex(300), as_hex(200)
    bits_a, bits_b = hash_bits(hashes_a), hash_bits(hashes_b)
    assert bits_a.shape == (300, 64) and bits_a.dtype == bool
    assert hash_bits(["8000000000000001"])[0].nonzero()[0].tolist() == [0, 63]
    expected = np.rint(cdist(bits_b, bits_a, "hamming") * 64).min(axis=1)
    np.testing.assert_array_equal(min_hamming_distances(hashes_b, hashes_a, chunk=64), expected)
    assert min_hamming_distances(hashes_b[:3], []).tolist() == [65] * 3


@pytest.fixture
def official_index():
    labels = np.r_[np.ones(42), np.zeros(18), np.ones(10), np.zeros(15), np.zeros(15)].astype(int)
    splits = ["train"] * 60 + ["val"] * 25 + ["test"] * 15
    return pd.DataFrame({"id": [f"img{i:03d}" for i in range(100)], "split": splits, "label": labels})


def test_random_split_pools_train_and_val_and_stratifies_by_label(official_index):
    split = random_split(official_index, val_fraction=0.2, seed=42)
    assert len(split) == 85 and "test" not in set(split["split"]) and "test" not in set(split["original_split"])
    val = split[split["split"] == "val"]
    assert len(val) == 17
    assert val["label"].sum() == round(17 * 52 / 85)  # the pooled Surface share, 52 of 85
    assert list(split.index) == list(official_index.index[:85])  # order and index kept
    assert (split["original_split"] != split["split"]).any()


def test_random_split_is_deterministic_given_the_seed(official_index):
    first = random_split(official_index, seed=42)
    pd.testing.assert_frame_equal(first, random_split(official_index, seed=42))
    assert not first["split"].equals(random_split(official_index, seed=43)["split"])
    assert len(random_split(official_index, pool=None)) == 100
