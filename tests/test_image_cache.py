import numpy as np
import pytest

from marsrover import config, dataset, study
from marsrover.image_cache import cache_key, cached_images


def test_images_are_decoded_once_then_read_from_the_cache(tiny_images_root, tmp_path, monkeypatch):
    index = dataset.build_index(tiny_images_root, progress=False)
    cache = tmp_path / "cache"
    first = cached_images(index, tiny_images_root, 24, cache, progress=False)
    assert first.shape == (len(index), 24, 24, 3) and first.dtype == np.uint8
    assert len(list(cache.glob("*.npy"))) == 1

    monkeypatch.setattr("marsrover.image_cache.load_image", lambda *a: (_ for _ in ()).throw(AssertionError))
    np.testing.assert_array_equal(cached_images(index, tiny_images_root, 24, cache, progress=False), first)


def test_images_broken_after_indexing_are_all_named_and_no_cache_is_written(tiny_images_root, tmp_path):
    index = dataset.build_index(tiny_images_root, progress=False)
    first, second = (tiny_images_root / p for p in index["path"][:2])
    first.write_bytes(first.read_bytes()[:20])  # truncated
    second.unlink()
    with pytest.raises(dataset.DataSetError, match="2 of the") as error:
        cached_images(index, tiny_images_root, 24, tmp_path / "cache", progress=False)
    assert str(first) in str(error.value) and str(second) in str(error.value)
    assert f"delete {tiny_images_root.parent}" in str(error.value) and "--rebuild-index" in str(error.value)
    assert not list((tmp_path / "cache").glob("*"))


def test_the_cache_key_changes_with_size_content_and_order(tiny_images_root):
    index = dataset.build_index(tiny_images_root, progress=False)
    key = cache_key(index, 64)
    assert cache_key(index, 32) != key
    assert cache_key(index.iloc[::-1], 64) != key
    changed = index.copy()
    changed.loc[0, "sha256"] = "0" * 64
    assert cache_key(changed, 64) != key
    assert cache_key(index.copy(), 64) == key


@pytest.mark.parametrize("redraw, per_split", [
    (lambda index: study.random_split_index(index, seed=0), None),
    (study.forward_validation_index, None),
    (study.forward_validation_index, 2),  # a profile's subsample: the official caches are of the subsample
], ids=["random 80/20", "forward validation", "forward validation, subsampled"])
def test_redrawn_splits_are_sliced_from_the_official_caches_not_decoded_again(tiny_images_root, tmp_path,
                                                                              monkeypatch, redraw, per_split):
    index = dataset.subsample(dataset.build_index(tiny_images_root, progress=False), per_split, 0)
    paths = config.DataPaths(tmp_path / "data")
    monkeypatch.setattr(config.DataPaths, "images_root", property(lambda self: tiny_images_root))
    by_id = {}
    for split in ("train", "val", "test"):
        images, _ = study.split_arrays(paths, index, split, 24, progress=False)
        by_id.update(zip(index.loc[index["split"] == split, "id"], images))
    cache_files = sorted(paths.cache.glob("*.npy"))
    monkeypatch.setattr("marsrover.image_cache.load_image", lambda *a: (_ for _ in ()).throw(AssertionError))

    redrawn = redraw(index)
    for split in redrawn["split"].unique():
        images, labels = study.split_arrays(paths, redrawn, split, 24, progress=False)
        rows = redrawn[redrawn["split"] == split]
        np.testing.assert_array_equal(images, np.stack([by_id[image_id] for image_id in rows["id"]]))
        np.testing.assert_array_equal(labels, rows["label"].to_numpy())
    assert sorted(paths.cache.glob("*.npy")) == cache_files
