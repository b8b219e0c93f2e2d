"""Side checks beside the study, on the validation split only (the test split plays no part).

``batch-norm``: are the running statistics that batch normalisation uses at inference the right ones?
Keras keeps them as a moving average over the last training batches, taken from augmented images while
the weights still move. Two checks, each against the same statistics recomputed without augmentation
over the images the model was fitted on (``training.recalibrate_batch_norm``), once plainly and once
with each image counted by its instrument x label group's weight in ``improved``'s loss, for every model
(the column ``recomputed_loss_weighted``; ``quick_cnn``'s own loss is unweighted):

1. the saved models of a finished run (``reports/full/models``): validation balanced accuracy with
   the statistics each was saved with (the column ``running``: Keras' running ones, or, for a refit of a
   profile with ``refit_recomputes_batch_norm``, recomputed ones, as the row's ``saved statistics``
   says) and with recomputed ones. A refit was fitted on validation too, so its row says how well it
   fits images it was trained on.
2. a recipe's training trajectory (``--trajectory improved quick_cnn``): the model trained again, with
   the run's seed and numeric policy, and validation scored each epoch all three ways. Recomputing
   statistics cannot change training (a training step normalises by its own batch, and the probe puts
   the running statistics back), so on the same CPU type the column ``running`` repeats the validation
   history in the finished run's record, ``committed_history_matches`` in the JSON.

    python -m marsrover.diagnostics batch-norm [--trajectory improved quick_cnn]

writes ``reports/side_checks/batch_norm.json`` (with the commit and library versions) and prints tables.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, reporting, study

SIDE_CHECKS_DIR = config.REPORTS_DIR / "side_checks"
STATISTICS = ("running", "recomputed", "recomputed_loss_weighted")


def _sample(count: int, sample_size: int | None, seed: int) -> np.ndarray:
    if sample_size is None or sample_size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, sample_size, replace=False))


def validation_scores_by_statistics(model, val_data, fit_images: np.ndarray, loss_weights: np.ndarray) -> dict:
    """Validation balanced accuracy with the model's running statistics, then with recomputed ones (plain,
    then loss-weighted); the model's running statistics are put back afterwards."""
    from sklearn.metrics import balanced_accuracy_score

    from .evaluation import EVAL_BATCH_SIZE
    from .training import batch_norm_layers, recalibrate_batch_norm

    images, labels = val_data

    def score() -> float:
        return float(balanced_accuracy_score(labels, model.predict(images, batch_size=EVAL_BATCH_SIZE,
                                                                   verbose=0).argmax(1)))

    layers_ = batch_norm_layers(model)
    saved = [(layer.moving_mean.numpy(), layer.moving_variance.numpy()) for layer in layers_]
    scores = {"running": score()}
    try:
        for name, weights in (("recomputed", None), ("recomputed_loss_weighted", loss_weights)):
            recalibrate_batch_norm(model, fit_images, weights)
            scores[name] = score()
    finally:
        for layer, (mean, variance) in zip(layers_, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
    return scores


def saved_models_check(run_dir: Path, paths: config.DataPaths, index: pd.DataFrame, *,
                       sample_size: int | None = None, seed: int = 42) -> pd.DataFrame:
    """One row per saved single model of ``run_dir`` that has batch normalisation (the seeds have none;
    averages are made of rows already here): validation balanced accuracy by statistics."""
    from .inference import load_model
    from .training import batch_norm_layers, instrument_balance_weights, release_models

    run_dir = Path(run_dir)
    rows, val_arrays = [], {}  # validation images by size, loaded once
    for record_path in sorted((run_dir / "runs").glob("*.json")):
        record = reporting.load_json(record_path)
        run, conf = record_path.stem, record.get("config", {})
        model_path = run_dir / "models" / f"{run}.keras"
        if "skipped" in record or "members" in conf or study.RANDOM_SPLIT_SUFFIX in run:
            continue  # not trained, an average, or judged on another split
        if not model_path.is_file():
            raise FileNotFoundError(f"{model_path} is missing: the saved models of {run_dir} come from running "
                                    "notebook 05 there (they are not committed)")
        model = load_model(model_path)
        if not batch_norm_layers(model):
            release_models()
            continue
        fit_splits, size = conf.get("fit_on", "train").split("+"), conf["image_size"]
        images, _, groups = study.fit_arrays(paths, index, fit_splits, size, progress=False)
        chosen = _sample(len(images), sample_size, seed)
        if size not in val_arrays:
            val_arrays[size] = study.split_arrays(paths, index, "val", size, progress=False)
        scores = validation_scores_by_statistics(model, val_arrays[size], images[chosen],
                                                 instrument_balance_weights(groups)[chosen])
        rows.append({"run": run, "fit on": "+".join(fit_splits), "kept weights": conf.get("kept_weights"),
                     # records from before the option name none: those models kept Keras' running statistics
                     "saved statistics": conf.get("batch_norm_statistics", "running (Keras' moving average)"),
                     **scores})
        print(f"{run} (fitted on {'+'.join(fit_splits)}; saved with {rows[-1]['saved statistics']} statistics): "
              + ", ".join(f"{name} {value:.3f}" for name, value in scores.items()), flush=True)
        del model, images
        release_models()
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame(columns=["run", *STATISTICS])


def trajectory_check(name: str, paths: config.DataPaths, index: pd.DataFrame, *, seed: int = 42,
                     sample_size: int | None = 1500, image_size: int | None = None, epochs: int | None = None,
                     batch_size: int | None = None) -> tuple[pd.DataFrame, list[float]]:
    """Train ``name`` on train with its recipe, scoring validation after every epoch with running and
    recomputed statistics (on ``sample_size`` training images). Returns the table (one row per epoch)
    and the run's own validation history, which its ``running`` column must repeat."""
    import keras

    from .models import get_spec
    from .training import instrument_balance_weights, release_models, train

    size = image_size or get_spec(name).image_size
    train_images, train_labels, groups = study.fit_arrays(paths, index, ["train"], size, progress=False)
    val_data = study.split_arrays(paths, index, "val", size, progress=False)
    chosen = _sample(len(train_images), sample_size, seed)
    sample_images, sample_weights = train_images[chosen], instrument_balance_weights(groups)[chosen]
    rows: list[dict] = []

    class EpochProbe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            scores = validation_scores_by_statistics(self.model, val_data, sample_images, sample_weights)
            rows.append({"epoch": epoch + 1, **scores})
            print(f"{name} epoch {epoch + 1}: " + ", ".join(f"{key} {value:.3f}" for key, value in scores.items()),
                  flush=True)

    result = train(name, (train_images, train_labels), val_data, image_size=size, epochs=epochs,
                   batch_size=batch_size, seed=seed, train_groups=groups, verbose=0, extra_callbacks=[EpochProbe()])
    history = result.history.get("val_balanced_accuracy", [])
    del result
    release_models()
    return pd.DataFrame(rows).set_index("epoch"), history


def summarise_trajectory(table: pd.DataFrame, last: int = 5) -> dict:
    """Per statistics: the best epoch's score and the mean of the last ``last`` epochs."""
    return {column: {"best": round(float(table[column].max()), 3),
                     "best_epoch": int(table[column].idxmax()),
                     f"mean_last_{last}": round(float(table[column].tail(last).mean()), 3),
                     "last": round(float(table[column].iloc[-1]), 3)} for column in STATISTICS}


def _matches_record(record_path: Path, history: list[float]) -> bool | None:
    """Whether a retrained run's validation history equals the finished run's record (None: no record)."""
    if not record_path.is_file():
        return None
    recorded = reporting.load_json(record_path).get("history", {}).get("val_balanced_accuracy")
    return (recorded is not None and len(recorded) == len(history)
            and bool(np.allclose(recorded, history, atol=1e-6)))


def batch_norm_side_check(run_dir: Path, *, data_dir: Path | None = None, trajectories: list[str] = (),
                          sample_size: int | None = 1500, out: Path | None = None, seed: int | None = None,
                          image_size: int | None = None, epochs: int | None = None) -> dict:
    """Both checks, with the run's profile's numeric policy and seed; writes ``out`` as JSON. The
    process's own numeric policy is put back afterwards."""
    import keras

    policy = keras.mixed_precision.global_policy()
    try:
        return _batch_norm_side_check(run_dir, data_dir=data_dir, trajectories=trajectories,
                                      sample_size=sample_size, out=out, seed=seed, image_size=image_size,
                                      epochs=epochs)
    finally:
        keras.mixed_precision.set_global_policy(policy)


def _batch_norm_side_check(run_dir: Path, *, data_dir: Path | None, trajectories: list[str],
                           sample_size: int | None, out: Path | None, seed: int | None,
                           image_size: int | None, epochs: int | None) -> dict:
    from .profiles import get_profile
    from .provenance import run_environment
    from .training import configure_accelerator

    run_dir = Path(run_dir)
    run_metrics = reporting.load_json(run_dir / "metrics.json")  # {} before notebook 06 has run
    profile = get_profile(run_metrics.get("profile", "full"))
    configure_accelerator(mixed_precision=profile["mixed_precision"], jit_compile=False,
                          cpu_bfloat16=profile["cpu_bfloat16"])
    seed = profile["seed"] if seed is None else seed
    paths, index = study.load_index(data_dir, max_images_per_split=profile["max_images_per_split"], seed=seed)
    result: dict = {"run_dir": str(run_dir), "profile": profile["profile"], "seed": seed,
                    # the scored run's own commit: its saved models are not committed
                    "run_commit": run_metrics.get("commit"),
                    "sample_size": sample_size, "saved_models": {}, "trajectories": {}}
    saved = saved_models_check(run_dir, paths, index, sample_size=sample_size, seed=seed)
    result["saved_models"] = {run: {key: (round(value, 4) if isinstance(value, float) else value)
                                    for key, value in row.items()} for run, row in saved.iterrows()}
    for name in trajectories:
        table, history = trajectory_check(name, paths, index, seed=seed, sample_size=sample_size,
                                          image_size=image_size or profile["image_size"],
                                          epochs=epochs or profile["epochs"], batch_size=profile["batch_size"])
        result["trajectories"][name] = {
            "epochs": {column: [round(float(v), 4) for v in table[column]] for column in STATISTICS},
            "run_history": [round(float(v), 4) for v in history],
            "committed_history_matches": _matches_record(run_dir / "runs" / f"{name}.json", history),
            "summary": summarise_trajectory(table, last=min(5, len(table))),
        }
    result["environment"] = run_environment()
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"Wrote {out}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marsrover.diagnostics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    batch_norm = commands.add_parser("batch-norm", help="running against recomputed batch-norm statistics")
    batch_norm.add_argument("--run-dir", type=Path, default=config.REPORTS_DIR / "full")
    batch_norm.add_argument("--data-dir", type=Path)
    batch_norm.add_argument("--trajectory", nargs="*", default=[], metavar="MODEL",
                            help="also train these models again, scoring validation every epoch")
    batch_norm.add_argument("--sample", type=int, default=1500,
                            help="fit images the statistics are recomputed on (0: all)")
    batch_norm.add_argument("--out", type=Path, default=SIDE_CHECKS_DIR / "batch_norm.json")
    args = parser.parse_args(argv)
    batch_norm_side_check(args.run_dir, data_dir=args.data_dir, trajectories=args.trajectory,
                          sample_size=args.sample or None, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
