"""A recipe sweep for a GPU machine: ``improved``'s family at several recipes and seeds, on any Keras backend.

The study's runs answer "what does this recipe reach on a 2-core CPU"; the sweep asks what more compute
would buy (more epochs, larger images, a wider network) and how much of a recipe's score is its seed.
It runs where TensorFlow is absent (Keras on JAX on a GPU machine): NumPy arrays in, no tf.data, several
runs side by side in worker processes. As in the study, each run trains on train and keeps the epoch with
the best validation balanced accuracy; the recipe is chosen on validation only, by its mean over seeds,
and only that recipe is refitted on train+val, at every seed, for the median of its seeds' best epochs (the
sweep's own rule: the study sets a refit's length by forward validation), ending, as the study's refits do,
with batch normalisation's statistics recomputed over its images. Test scores are recorded for every run, for
reading, never for choosing. The variants all train 40 epochs: read them against ``improved_40_epochs``.

Its figures are side evidence, not the study's: another backend and device, and no determinism.
``python -m marsrover.sweep --out DIR`` writes ``DIR/sweep.json`` after every finished run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score

from . import atomic, config, dataset
from .ablation import improved_with
from .evaluation import instrument_label_group
from .image_cache import cached_images
from .loss_weights import balanced_class_weights, instrument_balance_weights


@dataclass(frozen=True)
class SweepRecipe:
    name: str
    question: str
    changes: dict  # ModelSpec fields changed from improved's (body_options merged into its own)


SWEEP_RECIPES: dict[str, SweepRecipe] = {
    recipe.name: recipe
    for recipe in (  # in the order they run: a sweep cut short by its deadline keeps the first ones
        SweepRecipe("improved", "the study's recipe as it stands (the reference)", {}),
        SweepRecipe("improved_40_epochs", "does a longer cosine schedule settle higher?", {"epochs": 40}),
        SweepRecipe("larger_images_40_epochs", "192 px instead of 128, 40 epochs",
                    {"epochs": 40, "image_size": 192}),
        SweepRecipe("wider_40_epochs", "twice the filters in every layer, 40 epochs",
                    {"epochs": 40, "body_options": {"widths": (64, 128, 256, 512)}}),
        SweepRecipe("closeup_zoom_40_epochs", "zooming in by up to 50% (MAHLI-like close-ups), 40 epochs",
                    {"epochs": 40, "augmentation": "closeup"}),
        SweepRecipe("full_resolution_stem_40_epochs", "a first convolution at full resolution, 40 epochs",
                    {"epochs": 40, "body_options": {"stem_strides": 1}}),
    )
}
SWEEP_SEEDS = (42, 1, 2, 3, 4)  # 42 is the study's seed; 1 and 2 its seed repeats
LAST_EPOCHS = 5  # "settled": the mean validation score of the last epochs, beside the best one


def recipe_spec(recipe: SweepRecipe):
    """``improved``'s spec with the recipe's changes, registered so ``build_model`` finds it by name."""
    from .models import MODEL_SPECS

    spec = improved_with(recipe.changes, name=f"sweep-{recipe.name}", description=recipe.question)
    MODEL_SPECS[spec.name] = spec
    return spec


def split_data(index: pd.DataFrame, paths: config.DataPaths, split: str, size: int) -> dict[str, np.ndarray]:
    """One split's images (uint8), labels and instrument x label groups, in the index's order."""
    rows = index[index["split"] == split].reset_index(drop=True)
    return {"images": cached_images(rows, paths.images_root, size, paths.cache, progress=False),
            "labels": rows["label"].to_numpy(),
            "groups": instrument_label_group(rows).to_numpy()}


def _scores(labels: np.ndarray, p_surface: np.ndarray) -> dict[str, float]:
    predicted = (p_surface >= 0.5).astype(int)  # the study's threshold (evaluation.binary_metrics)
    return {"accuracy": float(accuracy_score(labels, predicted)),
            "balanced_accuracy": float(balanced_accuracy_score(labels, predicted))}


def _rounded(scores: dict[str, float]) -> dict[str, float]:
    return {metric: round(value, 4) for metric, value in scores.items()}


def fit_run(recipe_name: str, seed: int, *, refit_epochs: int | None = None, data_dir: str | None = None,
            batch_size: int | None = None) -> dict:
    """Train one recipe at one seed and score it (a worker process's job).

    Without ``refit_epochs``: fit on train, validate every epoch, keep the best epoch's predictions.
    With it: fit on train+val for exactly that many epochs, then, as the study's refits do, recompute batch
    normalisation's statistics over the fit images weighted by instrument x label group, and score test.
    """
    from .console import start_keras_quietly

    start_keras_quietly()  # each run is a fresh process: without this, each prints the backend's start-up lines
    import keras

    from .batch_norm import batch_norm_layers, recalibrate_batch_norm
    from .models import build_model, recipe_learning_rate

    started = time.perf_counter()
    spec = recipe_spec(SWEEP_RECIPES[recipe_name])
    paths = config.data_paths(data_dir)
    index = dataset.read_index(paths.index_csv)
    splits = {split: split_data(index, paths, split, spec.image_size) for split in config.SPLITS}
    fit_splits = ["train", "val"] if refit_epochs else ["train"]
    x = np.concatenate([splits[s]["images"] for s in fit_splits]).astype("float32")
    y = np.concatenate([splits[s]["labels"] for s in fit_splits])
    groups = np.concatenate([splits[s]["groups"] for s in fit_splits])
    epochs = refit_epochs or spec.epochs
    batch_size = batch_size or spec.batch_size
    if spec.ema_momentum is not None:
        raise ValueError(f"{recipe_name}: the sweep does not average weights (ema_momentum)")

    keras.utils.set_random_seed(seed)
    model = build_model(spec.name, spec.image_size, seed=seed, weights=None)
    steps_per_epoch = int(np.ceil(len(y) / batch_size))
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=recipe_learning_rate(spec, epochs, steps_per_epoch)),
                  loss=keras.losses.SparseCategoricalCrossentropy())
    judged = {s: splits[s] for s in (["test"] if refit_epochs else ["val", "test"])}
    judged_x = {s: part["images"].astype("float32") for s, part in judged.items()}
    history: dict[str, list] = {f"{s}_{metric}": [] for s in judged for metric in ("accuracy", "balanced_accuracy")}
    kept: dict[str, np.ndarray] = {}
    best = {"epoch": 0, "score": -1.0}

    class ScoreEachEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            p = {s: self.model.predict(judged_x[s], batch_size=256, verbose=0)[:, 1] for s in judged}
            for s, part in judged.items():
                for metric, value in _scores(part["labels"], p[s]).items():
                    history[f"{s}_{metric}"].append(round(value, 4))
            score = _scores(judged["val"]["labels"], p["val"])["balanced_accuracy"] if "val" in judged else epoch
            if score > best["score"]:  # the study's rule: the first best epoch on validation (unrounded)
                best.update(epoch=epoch + 1, score=score)
                kept.update(p)

    fit = model.fit(x, y, sample_weight=instrument_balance_weights(groups) if spec.instrument_balance else None,
                    class_weight=balanced_class_weights(y) if spec.class_weighting else None,
                    batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[ScoreEachEpoch()])
    statistics = "running (Keras' moving average)"
    if refit_epochs and batch_norm_layers(model):
        recalibrate_batch_norm(model, x, instrument_balance_weights(groups))
        statistics = "recomputed over the fit images, weighted by instrument x label group"
        kept["test"] = model.predict(judged_x["test"], batch_size=256, verbose=0)[:, 1]
    run = {"recipe": recipe_name, "seed": seed, "fit_on": "+".join(fit_splits), "epochs": epochs,
           "image_size": spec.image_size, "batch_size": batch_size, "augmentation": spec.augmentation,
           "body_options": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.body_options.items()},
           "kept_epoch": best["epoch"], "batch_norm_statistics": statistics, "train_loss": [round(float(v), 4) for v in fit.history["loss"]],
           "history": history, "seconds": round(time.perf_counter() - started, 1)}
    for s, part in judged.items():
        run[s] = _rounded(_scores(part["labels"], kept[s]))
        run[f"{s}_p_surface"] = [round(float(v), 4) for v in kept[s]]
    if "val" in judged:
        run["val_settled_balanced_accuracy"] = round(float(np.mean(history["val_balanced_accuracy"][-LAST_EPOCHS:])), 4)
    return run


def summarise(runs: list[dict], labels: dict[str, np.ndarray], seeds: tuple[int, ...]) -> dict:
    """Per recipe: validation over seeds (the selection), test per seed and of the seeds' average."""
    summary = {}
    for fit_on in ("train", "train+val"):
        for recipe in SWEEP_RECIPES:
            mine = [run for run in runs if run["recipe"] == recipe and run["fit_on"] == fit_on]
            if not mine:
                continue
            entry = {"seeds": [run["seed"] for run in mine], "complete": len(mine) == len(seeds),
                     "test_per_seed": [run["test"] for run in mine],
                     "test_of_average": _rounded(_scores(labels["test"], np.mean([run["test_p_surface"] for run in mine], 0)))}
            if fit_on == "train":
                best = [run["val"]["balanced_accuracy"] for run in mine]
                settled = [run["val_settled_balanced_accuracy"] for run in mine]
                entry.update({
                    "val_best_balanced_accuracy": {"mean": round(float(np.mean(best)), 4),
                                                   "min": min(best), "max": max(best)},
                    "val_settled_balanced_accuracy_mean": round(float(np.mean(settled)), 4),
                    "kept_epochs": [run["kept_epoch"] for run in mine],
                    "val_of_average": _rounded(_scores(labels["val"], np.mean([run["val_p_surface"] for run in mine], 0))),
                })
            summary[f"{recipe} ({fit_on})"] = entry
    return summary


def chosen_recipe(runs: list[dict], seeds: tuple[int, ...]) -> str | None:
    """The recipe with the best mean (over seeds) best-epoch validation balanced accuracy, among complete ones."""
    means = {}
    for recipe in SWEEP_RECIPES:
        scores = [run["val"]["balanced_accuracy"] for run in runs if run["recipe"] == recipe and run["fit_on"] == "train"]
        if len(scores) == len(seeds):
            means[recipe] = np.mean(scores)
    return max(means, key=means.get) if means else None


def _earlier_calls(document: dict) -> list[dict]:
    """The ``resumed_from`` chain of a sweep document, oldest call first."""
    calls, earlier = [], document.get("resumed_from")
    while earlier:
        calls.insert(0, earlier)
        earlier = earlier.get("resumed_from")
    return calls


def summary_table(path: Path) -> pd.DataFrame:
    """A ``sweep.json`` as a table: one row per recipe and what it was fitted on, validation first (the
    selection: the best epoch's balanced accuracy, mean and range over seeds, and where the runs settled),
    then test, per seed as a range and for the average of the seeds' P(Surface). Empty when the file is missing
    or holds no finished run."""
    from .reporting import load_json  # here: reporting imports jinja2, which a run of the sweep need not have

    document = load_json(path)
    if not document:
        return pd.DataFrame()
    rows = []
    for key, entry in document["summary"].items():
        recipe, fit_on = key.rsplit(" (", 1)
        fit_on = fit_on.rstrip(")")
        trained = next(run["epochs"] for run in document["runs"] if run["recipe"] == recipe and run["fit_on"] == fit_on)
        row = {"recipe": recipe, "fit on": fit_on, "chosen": recipe == document.get("chosen"),
               "seeds": len(entry["seeds"]), "epochs trained": trained}
        best = entry.get("val_best_balanced_accuracy")
        if best:
            kept = sorted(zip(entry["seeds"], entry["kept_epochs"]))
            row.update({"best epoch (seed: epoch)": ", ".join(f"{seed}: {epoch}" for seed, epoch in kept),
                        "val best BA, mean": best["mean"], "val best BA, range": f"{best['min']:.3f}–{best['max']:.3f}",
                        f"val BA, mean of last {LAST_EPOCHS} epochs": entry["val_settled_balanced_accuracy_mean"],
                        "val BA of the seeds' average": entry["val_of_average"]["balanced_accuracy"]})
        for metric, short in (("accuracy", "acc"), ("balanced_accuracy", "BA")):
            per_seed = [run[metric] for run in entry["test_per_seed"]]
            row[f"test {short}, range over seeds"] = f"{min(per_seed):.3f}–{max(per_seed):.3f}"
            row[f"test {short} of the seeds' average"] = entry["test_of_average"][metric]
        rows.append(row)
    return pd.DataFrame(rows).set_index(["recipe", "fit on"]) if rows else pd.DataFrame()


RANKING_RESAMPLES = 9999  # pairings drawn for the permutation p-value (every one, when there are fewer)


def _rank_correlation(first: np.ndarray, second: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's correlation along ``axis`` (what permutation_test asks of a vectorised statistic): of ranks,
    Spearman's."""
    from scipy.stats import pearsonr

    return pearsonr(first, second, axis=axis).statistic


def validation_against_test(path: Path) -> pd.DataFrame:
    """Does validation rank the sweep's runs on train as the test split does?

    The study chooses on validation, so it trusts that a run better on validation is better on test. The
    sweep's runs on train (several recipes of ``improved``'s family, several seeds) put that to a test: one
    row per pair of a validation score at the kept epoch (balanced accuracy is the selection metric) and a
    test score, with Spearman's rank correlation over the runs and a two-sided permutation p-value (runs'
    pairings shuffled; exact for few runs). The p-value takes the runs as independent draws; they share
    recipes and images, so read it as a rough guide. Read only, never used to choose. A correlation is
    undefined (None) when every run has the same score. Empty when the file is missing or has under 3 runs.
    """
    from scipy.stats import permutation_test, rankdata

    from .reporting import load_json  # here: reporting imports jinja2, which a run of the sweep need not have

    runs = [run for run in load_json(path).get("runs", []) if run["fit_on"] == "train"]
    if len(runs) < 3:
        return pd.DataFrame()
    rows = []
    for on_val in ("balanced_accuracy", "accuracy"):
        for on_test in ("accuracy", "balanced_accuracy"):
            ranks = [rankdata([run[split][metric] for run in runs]) for split, metric in (("val", on_val),
                                                                                         ("test", on_test))]
            rho = p_value = None
            if all(np.ptp(rank) > 0 for rank in ranks):
                result = permutation_test(ranks, _rank_correlation, permutation_type="pairings", vectorized=True,
                                          n_resamples=RANKING_RESAMPLES, alternative="two-sided", rng=0)
                rho, p_value = round(float(result.statistic), 2), round(float(result.pvalue), 3)
            rows.append({"validation": on_val.replace("_", " "), "test": on_test.replace("_", " "),
                         "runs": len(runs), "Spearman rho": rho, "p-value": p_value})
    return pd.DataFrame(rows).set_index(["validation", "test"])


def summary_caption(path: Path) -> str:
    """Where a ``sweep.json`` ran (backend, devices and the code's commit of every call, resumed ones first), what
    was chosen and refitted, and which requested runs have no result in it; or that it is missing."""
    from .reporting import load_json  # here: reporting imports jinja2, which a run of the sweep need not have

    document = load_json(path)
    if not document:
        return f"`{config.display_path(path)}`: not found (the sweep has not been run here)."
    calls = [call["environment"] for call in _earlier_calls(document)] + [document["environment"]]
    where = "; then ".join(f"Keras {env['versions']['keras']} on {env['keras_backend']}, devices {env['devices']}, "
                           f"code at {env['commit'][:7]}" for env in calls)
    trained = {(run["recipe"], run["seed"]) for run in document["runs"] if run["fit_on"] == "train"}
    missing = {recipe: sum((recipe, seed) not in trained for seed in document["seeds"]) for recipe in document["recipes"]}
    no_result = "; ".join(f"`{recipe}` at {count} of {len(document['seeds'])} seeds" for recipe, count in missing.items()
                          if count) or "none"
    chosen = document.get("chosen")
    refits = [run for run in document["runs"] if run["fit_on"] == "train+val"]
    if chosen is None:
        outcome = "Nothing was chosen: no recipe ran at every seed."
    elif refits:
        outcome = (f"Chosen on validation: `{chosen}`, refitted on train+val for {document.get('refit_epochs')} "
                   f"epochs at {len(refits)} of {len(document['seeds'])} seeds.")
    else:
        outcome = f"Chosen on validation: `{chosen}`, not refitted ({'; '.join(document['left_out'][-1:]) or 'no refit ran'})."
    return (f"`{config.display_path(path)}`: the GPU recipe sweep ({where}). {outcome} Runs on train with no result: "
            f"{no_result}. Another backend and device than the study's, and not deterministic: side evidence.")


def _environment(commit: str) -> dict:
    import keras

    versions = {}
    for package in ("keras", "jax", "jaxlib", "tensorflow", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:  # through Keras, so the sweep imports no backend of its own
        devices = [str(device) for device in keras.distribution.list_devices()]
    except Exception as error:  # a backend without Keras' distribution support
        devices = f"not listed ({type(error).__name__})"
    return {"commit": commit, "keras_backend": keras.backend.backend(), "devices": devices,
            "versions": versions, "machine": platform.platform(), "cpu_count": os.cpu_count()}


def run_sweep(out_dir: Path, *, recipes: list[str], seeds: tuple[int, ...], workers: int, deadline_s: float,
              commit: str, stop_s: float | None = None, data_dir: str | None = None,
              batch_size: int | None = None, resume: Path | None = None) -> dict:
    """Every recipe at every seed on train, then the chosen recipe refitted on train+val, while time lasts.

    A run on train not started before ``deadline_s`` (seconds from now) is left out, and the document says
    so; the refits start only if they should end before ``stop_s`` (by default the deadline), judged from
    the chosen recipe's slowest run on train. ``resume`` names an earlier ``sweep.json`` (a device call
    cut short): its runs on train of these recipes and seeds that trained as this call would are kept, not
    run again; the document records which were kept and dropped, and the earlier call's environment.
    """
    started = time.perf_counter()
    unknown = sorted(set(recipes) - set(SWEEP_RECIPES))
    if unknown:
        raise KeyError(f"unknown recipes {unknown}; choose from {list(SWEEP_RECIPES)}")
    paths = config.data_paths(data_dir)
    index = dataset.read_index(paths.index_csv)
    for size in sorted({recipe_spec(SWEEP_RECIPES[r]).image_size for r in recipes}):
        for split in config.SPLITS:  # decoded once here, so the workers only load the cache files
            split_data(index, paths, split, size)
    labels = {split: index.loc[index["split"] == split, "label"].to_numpy() for split in config.SPLITS}
    document = {"about": __doc__.strip().splitlines()[0], "environment": _environment(commit),
                "seeds": list(seeds), "recipes": {r: SWEEP_RECIPES[r].question for r in recipes},
                "selection": chosen_recipe.__doc__, "runs": [], "left_out": [], "chosen": None,
                "arguments": {"workers": workers, "deadline_s": None if deadline_s == float("inf") else deadline_s,
                              "stop_s": stop_s, "batch_size": batch_size,
                              "resume": None if resume is None else Path(resume).name}}
    if resume is not None:
        document["runs"], document["resumed_from"] = _resumed_runs(Path(resume), recipes, seeds, batch_size)
    done = {(run["recipe"], run["seed"]) for run in document["runs"]}
    out_path = Path(out_dir) / "sweep.json"

    def save():
        document["seconds"] = round(time.perf_counter() - started, 1)
        document["summary"] = summarise(document["runs"], labels, seeds)
        atomic.write_text(out_path, json.dumps(document, indent=1) + "\n")

    def run_jobs(jobs):
        # A fresh process per run: nothing a finished run left in memory (models, compiled steps) piles up.
        context = get_context("spawn")  # each run starts its own backend (JAX on the GPU), not a fork of ours
        with ProcessPoolExecutor(max_workers=workers, mp_context=context, max_tasks_per_child=1) as pool:
            futures = {}
            for recipe, seed, refit_epochs in jobs:
                deadline = started + (deadline_s if refit_epochs is None else float("inf"))  # refits: checked before
                if time.perf_counter() > deadline:  # no process is started just to say so
                    document["left_out"].append(_not_started(recipe, seed, refit_epochs))
                    continue
                futures[pool.submit(_job, recipe, seed, refit_epochs, deadline, data_dir, batch_size)] = (
                    recipe, seed, refit_epochs)
            _collect(futures)

    def _collect(futures):
        for future in as_completed(futures):
            recipe, seed, refit_epochs = futures[future]
            try:
                run = future.result()
            except Exception as error:  # a failed run (or a killed worker) must not lose the others
                document["left_out"].append(f"{recipe}, seed {seed}{' refit' if refit_epochs else ''}: "
                                            f"{type(error).__name__}: {error}")
            else:
                if isinstance(run, str):
                    document["left_out"].append(run)
                else:
                    document["runs"].append(run)
                    print(f"{time.perf_counter() - started:6.0f}s {run['recipe']} seed {run['seed']} "
                          f"({run['fit_on']}): kept epoch {run['kept_epoch']}, "
                          f"val {run.get('val')}, test {run['test']}, {run['seconds']}s", flush=True)
            save()

    run_jobs([(recipe, seed, None) for recipe in recipes for seed in seeds if (recipe, seed) not in done])
    chosen = document["chosen"] = chosen_recipe(document["runs"], seeds)
    if chosen:
        mine = [run for run in document["runs"] if run["recipe"] == chosen]
        refit_epochs = document["refit_epochs"] = int(np.median([run["kept_epoch"] for run in mine]) + 0.5)
        save()
        more_images = (len(labels["train"]) + len(labels["val"])) / len(labels["train"])
        rounds = -(-len(seeds) // workers)  # the refits run `workers` at a time
        needed = max(run["seconds"] for run in mine) * refit_epochs / mine[0]["epochs"] * more_images * 1.2 * rounds
        if time.perf_counter() - started + needed < (deadline_s if stop_s is None else stop_s):
            run_jobs([(chosen, seed, refit_epochs) for seed in seeds])
        else:
            document["left_out"].append(f"{chosen} refit on train+val: about {needed:.0f}s needed, past the stop")
    save()
    return document


def _resumed_runs(path: Path, recipes: list[str], seeds: tuple[int, ...], batch_size: int | None):
    """An earlier call's runs on train that this call can use, and the record of where they came from.

    A run is kept when its recipe and seed are asked for and it trained as this call would (epochs, image size,
    batch size); the others, and the earlier refits (the choice may change), are dropped and listed.
    """
    earlier = json.loads(path.read_text())
    kept, dropped = [], []
    for run in earlier["runs"]:
        spec = recipe_spec(SWEEP_RECIPES[run["recipe"]]) if run["recipe"] in SWEEP_RECIPES else None
        expected = None if spec is None else (spec.epochs, spec.image_size, batch_size or spec.batch_size)
        reason = ("a refit (refits follow this call's choice)" if run["fit_on"] != "train" else
                  "recipe or seed not asked for" if run["recipe"] not in recipes or run["seed"] not in seeds else
                  "trained otherwise (epochs, image size or batch size)"
                  if (run["epochs"], run["image_size"], run["batch_size"]) != expected else None)
        if reason:
            dropped.append(f"{run['recipe']}, seed {run['seed']} ({run['fit_on']}): {reason}")
        else:
            kept.append(run)
    record = {"file": path.name, "runs_kept": len(kept), "runs_dropped": dropped,
              "environment": earlier["environment"], "arguments": earlier.get("arguments"),
              "seconds": earlier.get("seconds"), "left_out": earlier.get("left_out", []),
              "resumed_from": earlier.get("resumed_from")}
    return kept, record


def _not_started(recipe: str, seed: int, refit_epochs: int | None) -> str:
    return f"{recipe}, seed {seed}{' refit' if refit_epochs else ''}: not started before the deadline"


def _job(recipe: str, seed: int, refit_epochs: int | None, deadline: float, data_dir, batch_size):
    if time.perf_counter() > deadline:
        return _not_started(recipe, seed, refit_epochs)
    return fit_run(recipe, seed, refit_epochs=refit_epochs, data_dir=data_dir, batch_size=batch_size)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m marsrover.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for sweep.json")
    parser.add_argument("--recipes", nargs="+", default=list(SWEEP_RECIPES), choices=list(SWEEP_RECIPES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SWEEP_SEEDS))
    parser.add_argument("--workers", type=int, default=1, help="runs side by side (processes)")
    parser.add_argument("--deadline", type=float, default=float("inf"),
                        help="seconds after which no run on train starts")
    parser.add_argument("--stop", type=float, default=None,
                        help="seconds by which the refits should end (default: the deadline)")
    parser.add_argument("--commit", default=None, help="the code's commit, where the checkout has no .git")
    parser.add_argument("--data-dir", default=None, help="the data folder (default: the project's data/)")
    parser.add_argument("--batch-size", type=int, default=None, help="instead of each recipe's own")
    parser.add_argument("--resume", type=Path, default=None,
                        help="an earlier sweep.json whose runs on train are kept, not run again")
    args = parser.parse_args(argv)
    # JAX takes 75% of the GPU's memory in each process by default: the runs side by side would not fit.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    args.out.mkdir(parents=True, exist_ok=True)
    commit = args.commit
    if commit is None:
        from .provenance import code_commit

        commit = code_commit()
    run_sweep(args.out, recipes=args.recipes, seeds=tuple(args.seeds), workers=args.workers,
              deadline_s=args.deadline, stop_s=args.stop, commit=commit, data_dir=args.data_dir, batch_size=args.batch_size,
              resume=args.resume)


if __name__ == "__main__":
    main()
