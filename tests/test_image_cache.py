import numpy as np

from marsrover import dataset
from marsrover.image_cache import cache_key, cached_images


def test_images_are_decoded_once_then_read_from_the_cache(tiny_images_root, tmp_path, monkeypatch):
    index = dataset.build_index(tiny_images_root, progress=False)
    cache = tmp_path / "cache"
    first = cached_images(index, tiny_images_root, 24, cache, progress=False)
    assert first.shape == (len(index), 24, 24, 3) and first.dtype == np.uint8
    assert len(list(cache.glob("*.npy"))) == 1

    monkeypatch.setattr("marsrover.image_cache.load_image", lambda *a: (_ for _ in ()).throw(AssertionError))
    np.testing.assert_array_equal(cached_images(index, tiny_images_root, 24, cache, progress=False), first)


def test_the_cache_key_changes_with_size_content_and_order(tiny_images_root):
    index = dataset.build_index(tiny_images_root, progress=False)
    key = cache_key(index, 64)
    assert cache_key(index, 32) != key
    assert cache_key(index.iloc[::-1], 64) != key
    changed = index.copy()
    changed.loc[0, "sha256"] = "0" * 64
    assert cache_key(changed, 64) != key
    assert cache_key(index.copy(), 64) == key
