"""The leakage study: how many images of one split have a twin in another.

The seed blog split the pooled images at random (80/20); the official split is by sol. Images
taken minutes apart on the same sol look almost identical, so a random split puts near-copies on
both sides and flatters validation accuracy. These counters measure that: exact twins by content
hash (``sha256`` from the index), near twins by perceptual hash (``imagehash.phash``, 64 bits)
within a Hamming distance, and images whose observation sequence (``dataset.observation_sequences``: the
same sol, camera and command sequence) also has images on the other side.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

from .dataset import observation_sequences

ORIGINAL_SPLIT = "original_split"  # the official split of each row, in indexes whose splits were redrawn


def random_split(index: pd.DataFrame, *, val_fraction: float = 0.2, seed: int = 42,
                 pool: tuple[str, ...] | None = ("train", "val")) -> pd.DataFrame:
    """The images of the ``pool`` splits (all rows when None) reassigned to a random train/val split.

    Stratified by ``label`` (scikit-learn ``train_test_split``), ``val_fraction`` of the images go
    to ``val``; the same seed gives the same split. Rows keep their order and index; the official
    split is kept in a new column ``original_split``.
    """
    rows = index if pool is None else index[index["split"].isin(pool)]
    rows = rows.copy()
    if rows.empty:
        raise ValueError(f"no images in splits {pool}")
    _, val_index = train_test_split(rows.index, test_size=val_fraction, random_state=seed,
                                    stratify=rows["label"])
    rows[ORIGINAL_SPLIT] = rows["split"]
    rows["split"] = "train"
    rows.loc[val_index, "split"] = "val"
    return rows


def _phash(path: Path, hash_size: int) -> str | None:
    import imagehash
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(imagehash.phash(image, hash_size=hash_size))
    except Exception:  # noqa: BLE001 - an unreadable image has no hash; it is reported as None
        return None


def perceptual_hashes(index: pd.DataFrame, images_root: Path, *, progress: bool = True, workers: int = 4,
                      hash_size: int = 8) -> pd.Series:
    """``imagehash.phash`` of every image of ``index`` as a hex string (None when unreadable).

    The result is aligned with ``index`` (same index) and named ``phash``; with the default
    ``hash_size`` each hash has 64 bits (16 hex digits).
    """
    paths = [Path(images_root) / path for path in index["path"]]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        hashes = list(tqdm(pool.map(lambda p: _phash(p, hash_size), paths), total=len(paths),
                           desc="Perceptual hashes", disable=not progress))
    return pd.Series(hashes, index=index.index, name="phash", dtype=object)


def hash_bits(hashes) -> np.ndarray:
    """Hex hash strings as a boolean array (n, bits), most significant bit first."""
    hashes = list(hashes)
    if not hashes:
        return np.zeros((0, 64), dtype=bool)
    lengths = {len(h) for h in hashes}
    if len(lengths) != 1:
        raise ValueError(f"hashes have different lengths: {sorted(lengths)}")
    as_bytes = np.frombuffer(bytes.fromhex("".join(hashes)), dtype=np.uint8).reshape(len(hashes), -1)
    return np.unpackbits(as_bytes, axis=1).astype(bool)


def min_hamming_distances(hashes_b, hashes_a, *, chunk: int = 1024) -> np.ndarray:
    """For each hash of ``hashes_b``, the Hamming distance (bits) to its nearest hash in ``hashes_a``.

    Vectorised: for bit arrays x and y, distance = x.(1 - y) + (1 - x).y, a matrix product done
    ``chunk`` rows of ``hashes_b`` at a time. An empty ``hashes_a`` gives distances of ``bits + 1``.
    """
    bits_b = hash_bits(hashes_b).astype(np.float32)
    bits_a = hash_bits(hashes_a).astype(np.float32)
    n_bits = bits_b.shape[1] if len(bits_b) else bits_a.shape[1]
    if len(bits_a) == 0:
        return np.full(len(bits_b), n_bits + 1, dtype=int)
    if bits_a.shape[1] != bits_b.shape[1]:
        raise ValueError("the two sets of hashes have different lengths")
    distances = np.empty(len(bits_b), dtype=int)
    ones_a, zeros_a = bits_a.T, (1.0 - bits_a).T
    for start in range(0, len(bits_b), chunk):
        block = bits_b[start:start + chunk]
        hamming = block @ zeros_a + (1.0 - block) @ ones_a  # exact: small integers in float32
        distances[start:start + len(block)] = np.rint(hamming.min(axis=1)).astype(int)
    return distances


def count_shared(index: pd.DataFrame, split_a: str, split_b: str, *, hashes: pd.Series | None = None,
                 max_distance: int = 0) -> dict[str, object]:
    """How many images of ``split_b`` have a twin in ``split_a``.

    - ``exact``: images of ``split_b`` whose ``sha256`` (the file's bytes) equals that of some
      image of ``split_a``;
    - ``perceptual``: images of ``split_b`` whose perceptual hash is within ``max_distance`` bits
      of some image of ``split_a`` (exact twins included); None without hashes. ``hashes`` is
      aligned with ``index`` (:func:`perceptual_hashes`); by default the ``phash`` column of
      ``index`` is used when there is one. Images without a hash are never matched.

    - ``sequence``: images of ``split_b`` whose observation sequence (sol, camera and sequence number from the
      product id, :func:`marsrover.dataset.observation_sequences`) also took images of ``split_a``: frames
      of one sequence often show one scene, whether or not their hashes are close.

    Also returned: ``n_a``, ``n_b`` (images in each split), ``max_distance``, the shares
    ``exact_share``, ``perceptual_share`` and ``sequence_share`` (of ``split_b``), and the ``id``\\s of the
    matched images of ``split_b`` (``exact_ids``, ``perceptual_ids``, ``sequence_ids``).
    """
    in_a = (index["split"] == split_a).to_numpy()
    in_b = (index["split"] == split_b).to_numpy()
    ids = index["id"] if "id" in index else pd.Series(index.index, index=index.index)

    sha = index["sha256"].fillna("").astype(str)
    known_a = set(sha[in_a]) - {""}
    exact = (sha[in_b] != "") & sha[in_b].isin(known_a)
    result = {
        "split_a": split_a, "split_b": split_b,
        "n_a": int(in_a.sum()), "n_b": int(in_b.sum()),
        "exact": int(exact.sum()),
        "exact_share": float(exact.mean()) if in_b.any() else None,
        "exact_ids": [str(i) for i in ids[in_b][exact.to_numpy()]],
        "max_distance": int(max_distance),
        "perceptual": None, "perceptual_share": None, "perceptual_ids": None,
    }
    sequences = observation_sequences(ids.astype(str))
    same_sequence = sequences[in_b].isin(set(sequences[in_a]))
    result.update(sequence=int(same_sequence.sum()),
                  sequence_share=float(same_sequence.mean()) if in_b.any() else None,
                  sequence_ids=[str(i) for i in ids[in_b][same_sequence.to_numpy()]])

    if hashes is None and "phash" in index:
        hashes = index["phash"]
    if hashes is None:
        return result
    hashes = pd.Series(hashes).reindex(index.index)
    valid = hashes.notna() & (hashes.astype(str) != "")
    hashed_a = hashes[in_a & valid.to_numpy()]
    hashed_b = hashes[in_b & valid.to_numpy()]
    distances = min_hamming_distances(hashed_b.astype(str), hashed_a.astype(str))
    near = distances <= max_distance
    result.update(
        perceptual=int(near.sum()),
        perceptual_share=float(near.sum() / in_b.sum()) if in_b.any() else None,
        perceptual_ids=[str(i) for i in ids[hashed_b.index[near]]],
    )
    return result
