"""Put a trained model to work: classify image files as Rover or Surface.

Usable from notebooks as well as from ``marsrover predict``::

    from marsrover import inference
    model = inference.load_model()                      # newest saved model, or a path
    files = inference.discover_images(["new-images/", "more/*.png"])
    table = inference.classify_files(model, files)      # path, label, p_surface, model, error

Images are JPEG or PNG of any size and colour mode (greyscale, RGBA, palette, 16-bit). Each is
converted to 8-bit RGB and resized to the model's input size the way the training images were
(bilinear). Unreadable files (empty, truncated, not an image, more pixels than ``max_pixels``) get
a row with the reason instead of a label; they never stop the run. Decoding runs in a thread pool
and the model sees whole batches: one ``predict_on_batch`` call per batch, never one per image.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import zipfile
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from . import atomic, config
from .config import CLASS_NAMES

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_BATCH_SIZE",
    "PREDICTION_COLUMNS",
    "ImageReadError",
    "NoModelError",
    "find_default_model",
    "load_model",
    "model_image_size",
    "discover_images",
    "read_image",
    "to_rgb8",
    "iter_predictions",
    "classify_files",
    "label_for",
    "summarize",
    "write_csv",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_BATCH_SIZE = 256
PREDICTION_COLUMNS = ["path", "label", "p_surface", "model", "error"]
_GLOB_CHARS = frozenset("*?[")


def is_glob(text: str) -> bool:
    """Whether ``text`` holds a glob character (``*``, ``?`` or ``[``), as given on a command line."""
    return bool(_GLOB_CHARS & set(text))


class ImageReadError(ValueError):
    """An image file cannot be used (the message says why)."""


class NoModelError(FileNotFoundError):
    """No trained model was given and none was found where the study saves them."""


# --------------------------------------------------------------------------------------------
# Models


def _model_candidates() -> list[Path]:
    """Every saved model: ``models/**/*.keras`` and the study's ``reports/<profile>/models/*.keras``."""
    found: list[Path] = []
    if config.MODELS_DIR.is_dir():
        found += config.MODELS_DIR.rglob("*.keras")
    if config.REPORTS_DIR.is_dir():
        found += config.REPORTS_DIR.glob("*/models/*.keras")
    return [path for path in found if path.is_file()]


def _report_headlines() -> list[Path]:
    """The saved headline model of each study report whose ``metrics.json`` names one."""
    headlines = []
    for metrics_path in sorted(config.REPORTS_DIR.glob("*/metrics.json")) if config.REPORTS_DIR.is_dir() else []:
        try:
            headline = json.loads(metrics_path.read_text(encoding="utf-8")).get("headline")
        except (OSError, ValueError, AttributeError):  # a half-written or foreign file: not a study's verdict
            continue
        model = metrics_path.parent / "models" / f"{headline}.keras"
        if isinstance(headline, str) and model.is_file():
            headlines.append(model)
    return headlines


def find_default_model() -> Path:
    """The most recently written ``*.keras`` file under ``models/`` (the exported headline models).

    Only when ``models/`` holds none, a study's own headline (``reports/<profile>/models/<headline>.keras``,
    named by that report's ``metrics.json``; the newest when several reports have one); and only when no
    report names one, the newest model in the report folders. Those also hold every run of the study (seed
    and leakage models included), so the newest there is the last resort, not the choice.
    Raises :class:`NoModelError` saying where it looked and what to do when there is none.
    """
    candidates = _model_candidates()
    exported = [path for path in candidates if config.MODELS_DIR in path.parents]
    candidates = exported or _report_headlines() or candidates
    if not candidates:
        raise NoModelError(
            f"no trained model (*.keras) found in {config.MODELS_DIR} or "
            f"{config.REPORTS_DIR}/<profile>/models/; train one first with `marsrover study` "
            "(or notebook 05_training), or pass --model PATH to a saved .keras model"
        )
    return max(candidates, key=lambda path: (path.stat().st_mtime, str(path)))


def load_model(path: str | os.PathLike | None = None, *, float32_where_emulated: bool = True):
    """Load a saved Keras model (``path``, or :func:`find_default_model` when None) for inference, computing in
    float32 where its mixed policy would only be emulated (:func:`float32_copy_where_emulated`; turned off by
    ``float32_where_emulated=False``, as the benchmark does to time the model as saved)."""
    path = Path(path) if path is not None else find_default_model()
    if path.is_dir():
        raise NoModelError(f"model {path} is a folder; give a saved .keras file")
    if not path.is_file():
        raise NoModelError(f"model file {path} does not exist")
    import keras  # imported here: listing or sorting files must not pay TensorFlow's start-up

    from . import models  # noqa: F401  registers the package's own layers, which saved models name

    if path.suffix == ".keras" and not zipfile.is_zipfile(path):  # Keras would call it "not found"
        raise ValueError(f"{path} is not a .keras model: a .keras file is a zip archive, and this one is not")
    try:
        with tempfile.TemporaryDirectory() as folder:
            float32_copy = float32_copy_where_emulated(path, Path(folder)) if float32_where_emulated else None
            return keras.models.load_model(float32_copy or path, compile=False)
    except (ValueError, OSError, KeyError, TypeError, zipfile.BadZipFile) as error:
        raise ValueError(f"could not load the model in {path} ({type(error).__name__}: {error}); a damaged file, "
                         "or one saved by another version of marsrover or Keras") from error


_MIXED_DTYPES = {"bfloat16", "float16"}  # the compute types of the mixed policies; variables stay float32


def _dtype_policies(config) -> set[str]:
    """The names of every dtype policy in a Keras model config, nested models' included."""
    if isinstance(config, dict):
        own = {config["config"]["name"]} if config.get("class_name") == "DTypePolicy" else set()
        return own.union(*(_dtype_policies(value) for value in config.values()))
    if isinstance(config, list):
        return set().union(*(_dtype_policies(value) for value in config))
    return set()


def _in_float32(config):
    """``config`` with every dtype policy, and every input layer's dtype (a nested Sequential casts its input to
    it), set to float32."""
    if isinstance(config, list):
        return [_in_float32(value) for value in config]
    if not isinstance(config, dict):
        return config
    if config.get("class_name") == "DTypePolicy":
        return {**config, "config": {**config["config"], "name": "float32"}}
    config = {key: _in_float32(value) for key, value in config.items()}
    # input layers, and the tensors a functional config records between layers, name a dtype of their own
    if config.get("class_name") in ("InputLayer", "__keras_tensor__") and config.get("config", {}).get(
            "dtype") in _MIXED_DTYPES:
        config["config"] = {**config["config"], "dtype": "float32"}
    return config


def emulated_policies(policies: set[str], *, gpu: bool, cpu_bfloat16: bool) -> set[str]:
    """The mixed policies among ``policies`` this machine has no native arithmetic for. Any GPU counts as
    native for both (an older one without bfloat16, such as a T4, still runs it faster than a CPU emulates it)."""
    return {policy for policy in policies
            if (policy == "mixed_float16" and not gpu) or (policy == "mixed_bfloat16" and not gpu and not cpu_bfloat16)}


def has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _emulated(config: dict) -> set[str]:
    """The mixed policies of a saved model's config that this machine would only emulate."""
    from .training import cpu_supports_bfloat16

    return emulated_policies(_dtype_policies(config), gpu=has_gpu(), cpu_bfloat16=cpu_supports_bfloat16())


def emulated_here(path: Path) -> set[str]:
    """The mixed policies of the ``.keras`` model at ``path`` that this machine would only emulate."""
    if Path(path).suffix != ".keras":
        return set()
    with zipfile.ZipFile(path) as archive:
        return _emulated(json.loads(archive.read("config.json")))


def float32_copy_where_emulated(path: Path, folder: Path) -> Path | None:
    """None when the ``.keras`` model at ``path`` runs natively here; when it was trained under a mixed policy
    this machine only emulates (bfloat16 on a CPU without native bfloat16, as the `full` profile's models on most
    laptops; float16 without a GPU), a copy in ``folder`` whose config computes in float32, faster there.

    Only the config changes: Keras loads the weights, float32 under every policy, the usual way (a layer that
    keeps derived state, such as a Normalization layer's mean, rebuilds it). The probabilities differ only by the
    rounding the mixed policy added.
    """
    if path.suffix != ".keras":
        return None
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        if not _emulated(config):
            return None
        copy = folder / path.name
        with zipfile.ZipFile(copy, "w") as rewritten:
            for entry in archive.infolist():
                content = json.dumps(_in_float32(config)) if entry.filename == "config.json" else archive.read(entry)
                rewritten.writestr(entry, content)
    return copy


def model_image_size(model) -> tuple[int, int]:
    """(height, width) the model expects, read from ``model.input_shape`` (``(None, H, W, 3)``)."""
    shape = model.input_shape
    if isinstance(shape, list):  # a multi-input model: the image is the first input
        shape = shape[0]
    try:
        height, width = int(shape[1]), int(shape[2])
    except (TypeError, IndexError) as error:
        raise ValueError(f"cannot read a fixed image size from the model's input shape {shape}") from error
    return height, width


# --------------------------------------------------------------------------------------------
# Finding files


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _images_under(folder: str | os.PathLike, exclude: Sequence[Path]) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        dirs[:] = sorted(d for d in dirs if (root_path / d).resolve() not in exclude)
        yield from (root_path / name for name in sorted(files) if _is_image_name(Path(name)))


def _walk(folder: Path, exclude: Sequence[Path]) -> list[Path]:
    return list(_images_under(folder, exclude))


def holds_images(folder: str | os.PathLike, *, exclude: Iterable[str | os.PathLike] = ()) -> bool:
    """Whether searching ``folder`` as :func:`discover_images` does would find an image (it stops at the first)."""
    return next(_images_under(folder, [Path(p).resolve() for p in exclude]), None) is not None


def discover_images(paths: Iterable[str | os.PathLike], *, exclude: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Image files named by ``paths``: files, folders (searched recursively) and glob patterns.

    Folders and glob patterns yield ``.jpg``, ``.jpeg`` and ``.png`` files (any letter case); a file
    named on its own is always kept, whatever its extension, so that one that is not an image gets a
    row with its error instead of vanishing. Folders listed in ``exclude`` (e.g. the output folder of a sort) are not searched. Order:
    as given, each folder sorted; every file once. A path that names nothing raises
    ``FileNotFoundError`` listing every such path.
    """
    excluded = [Path(p).resolve() for p in exclude]
    found: list[Path] = []
    missing: list[str] = []
    for raw in paths:
        text = os.fspath(raw)
        path = Path(text).expanduser()
        if path.is_dir():
            found += _walk(path, excluded)
        elif path.is_file():
            found.append(path)
        elif is_glob(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                missing.append(text)
            for match in map(Path, matches):
                if match.is_dir():
                    found += _walk(match, excluded)
                elif match.is_file() and _is_image_name(match):
                    found.append(match)
        else:
            missing.append(text)
    if missing:
        raise FileNotFoundError("no such file or folder (and no glob match): " + ", ".join(missing))
    seen: set[Path] = set()
    unique = []
    for path in found:
        key = path.resolve()
        if key not in seen and not any(key.is_relative_to(folder) for folder in excluded):
            seen.add(key)
            unique.append(path)
    return unique


# --------------------------------------------------------------------------------------------
# Decoding


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow image as 8-bit RGB.

    16- and 32-bit greyscale (``I;16*``, ``I``) is scaled down to 0..255 (65535 -> 255), never
    clipped; floating point (``F``) in [0, 1] is scaled up, other float ranges are stretched.
    Transparency (RGBA, LA, palette with a transparent colour) is composited onto black.
    """
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if mode.startswith("I;16"):
            scaled = values / 257.0
        elif mode == "I" and values.size and values.min() >= 0 and values.max() <= 65535:
            scaled = values / 257.0  # 16-bit samples held in 32-bit integers (older Pillow PNGs)
        elif mode == "F" and values.size and values.min() >= 0 and values.max() <= 1:
            scaled = values * 255.0
        else:
            low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
            scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
        return grey.convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def read_image(path: str | os.PathLike, size: tuple[int, int] | int | None = None, *,
               max_pixels: float | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One image file as an RGB ``uint8`` array, resized to ``size`` ((height, width) or square).

    Raises :class:`ImageReadError` with a short reason when the file cannot be used: empty, not an
    image, truncated, or with more than ``max_pixels`` pixels (checked before decoding, so a
    decompression bomb costs nothing).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise ImageReadError("empty file (0 bytes)")
        # Image.open reads only the header. Our limit is checked before anything is decoded;
        # Pillow's own DecompressionBombError (above 2 x Image.MAX_IMAGE_PIXELS) is caught below.
        # (No warnings.catch_warnings here: it is not thread-safe and this runs in a pool.)
        with Image.open(path) as image:
            pixels = image.width * image.height
            if max_pixels is not None and pixels > max_pixels:
                raise ImageReadError(
                    f"image too large: {image.width}x{image.height} = {pixels} pixels exceeds the "
                    f"limit of {int(max_pixels)} (possible decompression bomb; see --max-pixels)")
            if image.format not in ("JPEG", "PNG", "MPO"):
                raise ImageReadError(f"not a JPEG or PNG image (Pillow reads it as {image.format})")
            image.load()  # the full decode: truncated files fail here
            image = ImageOps.exif_transpose(image)
            rgb = to_rgb8(image)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError("file not found") from None
    except Image.UnidentifiedImageError:
        raise ImageReadError("not an image (cannot identify the file format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageReadError(f"image too large (decompression bomb): {error}") from None
    except Exception as error:  # noqa: BLE001 - any decoder failure becomes the file's error text
        raise ImageReadError(f"cannot decode image: {type(error).__name__}: {error}") from None
    if size:
        height, width = (size, size) if isinstance(size, int) else size
        if rgb.size != (width, height):
            rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)  # as dataset.load_image
    return np.asarray(rgb, dtype=np.uint8)


# --------------------------------------------------------------------------------------------
# Prediction


@dataclass(frozen=True)
class Prediction:
    """One file's outcome: P(Surface), or the reason it could not be read."""

    path: Path
    p_surface: float | None
    error: str = ""


def label_for(p_surface: float | None, threshold: float = 0.5) -> str:
    """``Surface`` when P(Surface) >= threshold, ``Rover`` below it, empty when unknown."""
    if p_surface is None or (isinstance(p_surface, float) and np.isnan(p_surface)):
        return ""
    return CLASS_NAMES[1] if p_surface >= threshold else CLASS_NAMES[0]


def _default_workers() -> int:
    return min(8, (os.cpu_count() or 2) * 2)


def _decode(path: Path, size: tuple[int, int], max_pixels: float | None) -> np.ndarray | str:
    try:
        return read_image(path, size, max_pixels=max_pixels)
    except ImageReadError as error:
        return str(error)


def iter_predictions(model, files: Sequence[str | os.PathLike], *, batch_size: int = DEFAULT_BATCH_SIZE,
                     workers: int | None = None, max_pixels: float | None = DEFAULT_MAX_PIXELS,
                     progress: bool = True) -> Iterator[list[Prediction]]:
    """Yield one list of :class:`Prediction` per batch of ``files``, in order.

    The thread pool decodes the next batch while the model scores the current one; each batch is
    one ``model.predict_on_batch`` call (none for a batch where no file could be read).
    """
    from .evaluation import predict_surface_probability

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    files = [Path(f) for f in files]
    size = model_image_size(model)
    batches = [files[i:i + batch_size] for i in range(len(files))[::batch_size]]
    with ThreadPoolExecutor(max_workers=workers or _default_workers()) as pool, \
            tqdm(total=len(files), desc="Classifying", unit="img", disable=not progress) as bar:

        def submit(batch: list[Path]) -> list[Future]:
            return [pool.submit(_decode, path, size, max_pixels) for path in batch]

        pending = submit(batches[0]) if batches else []
        for number, batch in enumerate(batches):
            decoded = [future.result() for future in pending]
            pending = submit(batches[number + 1]) if number + 1 < len(batches) else []
            good = [i for i, item in enumerate(decoded) if isinstance(item, np.ndarray)]
            probabilities = {}
            if good:
                stacked = np.stack([decoded[i] for i in good])
                scores = predict_surface_probability(model, stacked, batch_size=len(good))
                probabilities = {i: float(min(1.0, max(0.0, p))) for i, p in zip(good, scores)}
            yield [Prediction(path, probabilities[i], "") if i in probabilities
                   else Prediction(path, None, decoded[i]) for i, path in enumerate(batch)]
            bar.update(len(batch))


def _model_name(model, model_name: str | None) -> str:
    return model_name or str(getattr(model, "name", type(model).__name__))


def classify_files(model, files: Sequence[str | os.PathLike], *, batch_size: int = DEFAULT_BATCH_SIZE,
                   threshold: float = 0.5, workers: int | None = None,
                   max_pixels: float | None = DEFAULT_MAX_PIXELS, model_name: str | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """One row per file: ``path``, ``label`` (Rover/Surface), ``p_surface``, ``model``, ``error``.

    ``label`` is Surface when P(Surface) >= ``threshold``. A file that cannot be read has an empty
    label, NaN ``p_surface`` and the reason in ``error``.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    name = _model_name(model, model_name)
    rows = []
    for batch in iter_predictions(model, files, batch_size=batch_size, workers=workers,
                                  max_pixels=max_pixels, progress=progress):
        for item in batch:
            rows.append({"path": str(item.path), "label": label_for(item.p_surface, threshold),
                         "p_surface": np.nan if item.p_surface is None else item.p_surface,
                         "model": name, "error": item.error})
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS).astype({"p_surface": "float64"})


def summarize(table: pd.DataFrame) -> dict[str, int]:
    """Counts of a :func:`classify_files` table: images, Rover, Surface, failed."""
    labels = table["label"].fillna("")
    return {"images": int(len(table)), "Rover": int((labels == CLASS_NAMES[0]).sum()),
            "Surface": int((labels == CLASS_NAMES[1]).sum()), "failed": int((labels == "").sum())}


def write_csv(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``table`` to ``path`` through a temporary file, so a crash never leaves half a CSV."""
    return atomic.write_csv(table, path)
