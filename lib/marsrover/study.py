"""The steps the notebooks share, so each notebook is a few calls and its narrative.

Notebook 01 calls :func:`acquire`; every later notebook calls :func:`load_index` and
:func:`split_arrays`; 05 calls :func:`train_models`; 06 calls :func:`score_models`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from . import acquisition, config, dataset, reporting
from .image_cache import cached_images


def output_folder(output_dir: str | Path | None, profile: str) -> Path:
    """The report folder for this run: ``output_dir`` or ``reports/<profile>``, created."""
    folder = Path(output_dir) if output_dir else config.REPORTS_DIR / profile
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def acquire(data_dir: str | Path | None = None, *, progress: bool = True,
            rebuild_index: bool = False) -> tuple[config.DataPaths, pd.DataFrame]:
    """Get the archive (mirror or Zenodo), extract it safely and build the checked index."""
    paths = config.data_paths(data_dir)
    archive = acquisition.obtain_archive(paths, progress=progress)
    acquisition.safe_extract(archive, paths.interim, progress=progress)
    return paths, dataset.load_or_build_index(paths, rebuild=rebuild_index, progress=progress)


def load_index(data_dir: str | Path | None = None, *, max_images_per_split: int | None = None,
               seed: int = 42) -> tuple[config.DataPaths, pd.DataFrame]:
    """The index notebook 01 built, subsampled as the profile asks."""
    paths = config.data_paths(data_dir)
    if not paths.index_csv.exists():
        raise FileNotFoundError(f"{paths.index_csv} does not exist: run notebooks/01_acquisition.ipynb "
                                "(or `python run_all.py --only 01`) first")
    index = dataset.subsample(dataset.read_index(paths.index_csv), max_images_per_split, seed)
    return paths, index


def split_arrays(paths: config.DataPaths, index: pd.DataFrame, split: str, size: int, *,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split at one size, from the on-disk cache."""
    rows = index[index["split"] == split].reset_index(drop=True)
    images = cached_images(rows, paths.images_root, size, paths.cache, progress=progress)
    return images, rows["label"].to_numpy()


def train_models(model_names: list[str], paths: config.DataPaths, index: pd.DataFrame, output_dir: Path, *,
                 image_size: int | None, epochs: int | None, batch_size: int | None, seed: int,
                 jit_compile: bool = False) -> dict[str, dict]:
    """Train each model on the train split (validation split for monitoring) and save it."""
    from .models import get_spec
    from .training import save_run, train

    runs = {}
    for name in model_names:
        size = image_size or get_spec(name).image_size
        print(f"\n=== {name} at {size}px ===")
        result = train(name, split_arrays(paths, index, "train", size), split_arrays(paths, index, "val", size),
                       image_size=size, epochs=epochs, batch_size=batch_size, seed=seed, jit_compile=jit_compile)
        save_run(result, output_dir)
        runs[name] = reporting.load_json(Path(output_dir) / "runs" / f"{name}.json")
    return runs


def score_models(model_names: list[str], paths: config.DataPaths, index: pd.DataFrame, output_dir: Path,
                 *, profile: str) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Score each saved model on val and test, choose the headline on val, write ``metrics.json``.

    Returns the metrics and, per model, a table of test images with their P(Surface).
    """
    import keras

    from .evaluation import binary_metrics, majority_baseline, predict_surface_probability
    from .provenance import run_environment

    output_dir = Path(output_dir)
    scores, test_predictions = {}, {}
    for name in model_names:
        model_path = output_dir / "models" / f"{name}.keras"
        if not model_path.exists():
            raise FileNotFoundError(f"{model_path} is missing: run notebook 05 for model {name!r} first")
        model = keras.models.load_model(model_path)
        size = int(model.input_shape[1])
        scores[name] = {}
        for split in ("val", "test"):
            images, labels = split_arrays(paths, index, split, size)
            probabilities = predict_surface_probability(model, images)
            scores[name][split] = binary_metrics(labels, probabilities)
            if split == "test":
                rows = index[index["split"] == "test"].reset_index(drop=True).copy()
                rows["p_surface"] = probabilities
                rows["predicted"] = (probabilities >= 0.5).astype(int)
                test_predictions[name] = rows
    baselines = {"majority class": {split: majority_baseline(index.loc[index["split"] == split, "label"])
                                    for split in ("val", "test")}}
    # Model selection looks at validation only; the test split is reported, never used to choose.
    headline = max(scores, key=lambda name: scores[name]["val"]["balanced_accuracy"])
    metrics = {"headline": headline, "selection": "highest validation balanced accuracy",
               "profile": profile, "models": scores, "baselines": baselines, **run_environment()}
    reporting.save_metrics(output_dir, metrics)
    predictions_dir = output_dir / "predictions"
    predictions_dir.mkdir(exist_ok=True)
    for name, rows in test_predictions.items():
        rows.to_csv(predictions_dir / f"{name}_test.csv", index=False)
    return metrics, test_predictions


def metrics_table(metrics: dict) -> pd.DataFrame:
    """One row per model and baseline: accuracy and balanced accuracy on val and test."""
    rows = []
    for kind, group in (("model", metrics["models"]), ("baseline", metrics.get("baselines", {}))):
        for name, splits in group.items():
            row = {"name": name, "kind": kind}
            for split, values in splits.items():
                for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
                    row[f"{split} {key}"] = values.get(key)
            rows.append(row)
    return pd.DataFrame(rows).set_index("name")


def pick_examples(predictions: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """A mix of right and wrong test predictions per true label, for the example figure."""
    wrong = predictions[predictions["predicted"] != predictions["label"]]
    right = predictions[predictions["predicted"] == predictions["label"]]
    n_wrong = min(len(wrong), count // 4)
    picked = [wrong.sample(n=n_wrong, random_state=seed)] if n_wrong else []
    for label, rows in right.groupby("label"):
        take = min(len(rows), (count - n_wrong) // 2)
        picked.append(rows.sample(n=take, random_state=seed))
    chosen = pd.concat(picked) if picked else predictions.head(0)
    remaining = predictions.drop(chosen.index)
    if len(chosen) < count and len(remaining):
        chosen = pd.concat([chosen, remaining.sample(n=min(len(remaining), count - len(chosen)), random_state=seed)])
    return chosen.sample(frac=1, random_state=seed)
