"""The image index: one row per listed image, built from the extracted archive and checked.

Columns: ``id``, ``path`` (relative to the images root, as the split files write it), ``split``,
``msl_class``, ``msl_name``, ``label``, ``label_name``, ``sol``, ``instrument``, ``width``,
``height``, ``mode``, ``sha256`` and ``error`` (empty unless the image failed to decode).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from . import atomic, labels
from .config import CLASS_NAMES, EXPECTED_SPLIT_SIZES, SPLITS, DataPaths, display_path

SPLIT_FILES = {split: f"{split}-calibrated-shuffled.txt" for split in SPLITS}
CLASS_NAMES_FILE = "msl_synset_words-indexed.txt"

# MSL product ids start with the sol (4 digits) and the instrument code, e.g. 0077ML0005780000102730I01.
INSTRUMENTS = {"ML": "Mastcam left", "MR": "Mastcam right", "MH": "MAHLI"}
_PRODUCT_ID = re.compile(r"^(?P<sol>\d{4})(?P<code>[A-Z]{2})")
# ... followed by the number of the command sequence that took the image (6 digits): 0077ML000578.
_SEQUENCE = re.compile(r"^(?P<sol>\d{4})(?P<code>[A-Z]{2})(?P<number>\d{6})")
_CAMERA = {"ML": "MC", "MR": "MC"}  # Mastcam's two eyes: one sequence often takes a stereo pair of one scene

INDEX_COLUMNS = [
    "id", "path", "split", "msl_class", "msl_name", "label", "label_name", "sol", "instrument",
    "width", "height", "mode", "sha256", "error",
]


class DataSetError(ValueError):
    """The extracted data set is not what the study expects; the message lists every problem."""


def read_split_file(path: Path) -> pd.DataFrame:
    """``path``/``msl_class`` rows of one split file; errors name the file and line."""
    rows = []
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise DataSetError(f"{path}:{line_number}: expected '<image path> <class id>', got {line!r}")
        rows.append((parts[0], int(parts[1])))
    return pd.DataFrame(rows, columns=["path", "msl_class"])


def read_class_names(path: Path) -> dict[int, str]:
    """The archive's class id -> name table (``msl_synset_words-indexed.txt``)."""
    names = {}
    for line_number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        class_id, _, name = line.strip().partition(" ")
        if not class_id.isdigit() or not name.strip():
            class_id, _, name = line.strip().partition("\t")
        if not class_id.isdigit() or not name.strip():
            raise DataSetError(f"{path}:{line_number}: expected '<class id> <name>', got {line!r}")
        names[int(class_id)] = name.strip()
    return names


def parse_image_name(name: str) -> tuple[int, str]:
    """(sol, instrument) from an MSL file name such as ``0077ML0005780000102730I01_DRCL.JPG``."""
    match = _PRODUCT_ID.match(Path(name).name)
    if not match or match["code"] not in INSTRUMENTS:
        raise DataSetError(f"cannot read sol and instrument from image name {name!r}")
    return int(match["sol"]), INSTRUMENTS[match["code"]]


def observation_sequences(ids: pd.Series) -> pd.Series:
    """Each image's observation: sol, camera and sequence number from its MSL product id (``0989MH000498``
    for ``0989MH0004980040304441I01_DRCL``; Mastcam left and right as one camera, ``MC``), or the id itself
    when it has no such prefix.

    One sequence's images are often the same scene: the frames of a MAHLI focus stack, a Mastcam stereo pair,
    or one frame as a thumbnail and as a full image. A gallery that shows one image per sequence repeats a
    scene far less often (a scene can still come back in another sequence).
    """
    def sequence(name: str) -> str:
        if not (match := _SEQUENCE.match(name)):
            return name
        return f"{match['sol']}{_CAMERA.get(match['code'], match['code'])}{match['number']}"

    return ids.astype(str).map(sequence)


def describe_image(path: Path) -> dict:
    """Width, height, colour mode and SHA-256 of one image file, or the reason it is unreadable."""
    record = {"width": 0, "height": 0, "mode": "", "sha256": "", "error": ""}
    try:
        payload = Path(path).read_bytes()
        record["sha256"] = hashlib.sha256(payload).hexdigest()
        with Image.open(path) as image:
            image.load()  # a full decode: truncated files fail here, not at training time
            record.update(width=image.width, height=image.height, mode=image.mode)
    except FileNotFoundError:
        record["error"] = "missing file"
    except Exception as error:  # noqa: BLE001 - any decoder failure is recorded, not fatal here
        record["error"] = f"{type(error).__name__}: {error}"
    return record


def build_index(images_root: Path, *, progress: bool = True, workers: int = 4) -> pd.DataFrame:
    """Read the split files under ``images_root`` and describe every listed image."""
    images_root = Path(images_root)
    for name in [*SPLIT_FILES.values(), CLASS_NAMES_FILE]:
        if not (images_root / name).is_file():
            raise DataSetError(f"{images_root / name} is missing: is the archive extracted there?")
    class_names = read_class_names(images_root / CLASS_NAMES_FILE)
    labels.check_class_names(class_names)

    frames = []
    for split, file_name in SPLIT_FILES.items():
        frame = read_split_file(images_root / file_name)
        unknown = frame[~frame["msl_class"].isin(range(len(labels.MSL_CLASSES)))]
        if len(unknown):
            raise DataSetError(f"{images_root / file_name}: unknown MSL class id(s) "
                               f"{sorted(set(unknown['msl_class']))} (first at {unknown['path'].iloc[0]}); "
                               f"the data set defines 0-{len(labels.MSL_CLASSES) - 1}")
        frame.insert(1, "split", split)
        frames.append(frame)
    index = pd.concat(frames, ignore_index=True)
    index.insert(0, "id", index["path"].map(lambda p: Path(p).stem))
    index["msl_name"] = index["msl_class"].map(class_names)
    index["label"] = index["msl_class"].map(labels.binary_label).astype(int)
    index["label_name"] = index["label"].map(dict(enumerate(CLASS_NAMES)))
    parsed = index["path"].map(parse_image_name)
    index["sol"] = parsed.str[0].astype(int)
    index["instrument"] = parsed.str[1]

    paths = [images_root / p for p in index["path"]]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        described = list(tqdm(pool.map(describe_image, paths), total=len(paths),
                              desc="Checking images", disable=not progress))
    index = pd.concat([index, pd.DataFrame(described)], axis=1)
    return index[INDEX_COLUMNS]


def index_problems(index: pd.DataFrame, expected_sizes: dict[str, int] | None = None) -> list[str]:
    """Every reason the index is unfit for the study; empty when all is well."""
    expected_sizes = EXPECTED_SPLIT_SIZES if expected_sizes is None else expected_sizes
    problems = []
    counts = index["split"].value_counts().to_dict()
    for split, expected in expected_sizes.items():
        if counts.get(split, 0) != expected:
            problems.append(f"split {split!r} lists {counts.get(split, 0)} images, expected {expected}")
    for _, row in index[index["error"].fillna("") != ""].iterrows():
        problems.append(f"{row['path']} ({row['split']}): {row['error']}")
    in_several = index.groupby("id")["split"].nunique()
    for image_id in in_several[in_several > 1].index:
        splits = sorted(index.loc[index["id"] == image_id, "split"].unique())
        problems.append(f"image {image_id} is listed in several splits: {', '.join(splits)}")
    duplicated = index[index.duplicated(["id", "split"], keep="first")]
    for _, row in duplicated.iterrows():
        problems.append(f"image {row['id']} is listed twice in split {row['split']!r}")
    return problems


def bulleted(problems: list[str], limit: int) -> str:
    """The first ``limit`` problems as an indented list, then how many more there are."""
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n  - " + "\n  - ".join(problems[:limit]) + more


def check_index(index: pd.DataFrame, expected_sizes: dict[str, int] | None = None) -> None:
    """Raise :class:`DataSetError` listing every problem :func:`index_problems` finds."""
    problems = index_problems(index, expected_sizes)
    if problems:
        raise DataSetError(f"the data set failed {len(problems)} check(s):{bulleted(problems, 50)}")


def load_or_build_index(paths: DataPaths, *, rebuild: bool = False, progress: bool = True) -> pd.DataFrame:
    """The checked index, built once per extracted archive and reused from ``data/processed``."""
    marker = (paths.interim / ".extracted").read_text().strip() if (paths.interim / ".extracted").exists() else ""
    meta_path = paths.index_csv.with_suffix(".json")
    if not rebuild and paths.index_csv.exists() and meta_path.exists():
        if json.loads(meta_path.read_text()).get("archive_sha256") == marker and marker:
            print(f"Reusing the image index {display_path(paths.index_csv)} (built from this archive)")
            return read_index(paths.index_csv)
    index = build_index(paths.images_root, progress=progress)
    check_index(index)
    atomic.write_csv(index, paths.index_csv)
    meta_path.write_text(json.dumps({"archive_sha256": marker, "rows": len(index)}, indent=2))
    print(f"Wrote the image index {display_path(paths.index_csv)} ({len(index)} images)")
    return index


def read_index(path: Path) -> pd.DataFrame:
    """Read an index CSV written by :func:`load_or_build_index`."""
    return pd.read_csv(path, keep_default_na=False, dtype={"error": str, "sha256": str})


def subsample(index: pd.DataFrame, max_per_split: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_per_split`` images per split, stratified by label (smoke runs); all if None."""
    if not max_per_split:
        return index.reset_index(drop=True)
    parts = []
    for _, split_rows in index.groupby("split", sort=False):
        if len(split_rows) <= max_per_split:
            parts.append(split_rows)
            continue
        shares = split_rows["label"].value_counts(normalize=True)
        for label, share in shares.items():
            rows = split_rows[split_rows["label"] == label]
            take = min(len(rows), max(1, round(share * max_per_split)))
            parts.append(rows.sample(n=take, random_state=seed))
    return pd.concat(parts).sort_index().reset_index(drop=True)


def summary_counts(index: pd.DataFrame, by: str | Iterable[str]) -> pd.DataFrame:
    """Counts per ``by`` and split, splits as columns, with a total column."""
    table = pd.crosstab([index[c] for c in ([by] if isinstance(by, str) else list(by))], index["split"])
    table = table.reindex(columns=[s for s in SPLITS if s in table.columns])
    table["total"] = table.sum(axis=1)
    return table


def load_image(path: Path, size: int | None = None) -> np.ndarray:
    """An image as an RGB uint8 array, resized to ``size`` x ``size`` when given."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size:
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)
