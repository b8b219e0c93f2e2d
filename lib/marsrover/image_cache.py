"""Decode and resize each image once per size, into an on-disk array store under ``data/processed``.

The seed pipeline decoded every JPEG again in every epoch; on a 2-core CPU that cost more than the
model. Here a set of images at one size is one ``.npy`` file, named by a key over the images'
ids, content hashes and the size, so any change to the index or the size builds a new file.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .dataset import DataSetError, bulleted, load_image


def cache_key(index: pd.DataFrame, size: int) -> str:
    """A digest of which images (by id and content) are stored, in which order, at which size."""
    digest = hashlib.sha256(f"size={size}\n".encode())
    for image_id, content_hash in zip(index["id"], index["sha256"]):
        digest.update(f"{image_id}:{content_hash}\n".encode())
    return digest.hexdigest()[:20]


def cached_images(index: pd.DataFrame, images_root: Path, size: int, cache_dir: Path, *,
                  progress: bool = True, workers: int | None = None, mmap: bool = False) -> np.ndarray:
    """All images of ``index`` as one ``(n, size, size, 3)`` uint8 array, in index order.

    ``mmap=True`` maps an existing cache file read-only instead of reading it whole, for callers that
    copy some of its rows out (a redrawn split).
    """
    cache_dir = Path(cache_dir)
    path = cache_dir / f"images-{size}px-{len(index)}-{cache_key(index, size)}.npy"
    if path.exists():
        return np.load(path, mmap_mode="r" if mmap else None)
    files = [Path(images_root) / p for p in index["path"]]
    images = np.empty((len(files), size, size, 3), dtype=np.uint8)

    failures: dict[Path, str] = {}

    def decode(position: int) -> None:
        try:
            images[position] = load_image(files[position], size)
        except Exception as error:  # missing, truncated, not an image: gather them all, as the index check does
            failures[files[position]] = f"{type(error).__name__}: {error}"

    with ThreadPoolExecutor(max_workers=workers or min(8, (os.cpu_count() or 2) * 2)) as pool:
        list(tqdm(pool.map(decode, range(len(files))), total=len(files),
                  desc=f"Caching images at {size}px", disable=not progress))
    if failures:  # no cache is written, so nothing half-made is ever reused
        listed = [f"{file}: {reason}" for file, reason in sorted(failures.items())]
        raise DataSetError(
            f"{len(failures)} of the {len(files)} indexed images under {images_root} could not be read "
            f"(changed since the index was checked?):{bulleted(listed, 10)}\n"
            f"If they came from the archive, extract it again: delete {Path(images_root).parent} (its marker "
            "would make `python -m marsrover data` reuse it) and run `python -m marsrover data --rebuild-index`.")
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:  # np.save would append .npy to a name it does not end with
        np.save(handle, images)
    os.replace(tmp, path)
    return images
