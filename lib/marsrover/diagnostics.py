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
   With ``--forward``, each trajectory is the recipe's forward-validation run instead (the one that sets
   the refit's length, ``study.refit_epochs``): fitted on train + validation's earlier sols, scored on
   its later ones, its statistics recomputed over those fit images; its key is the run's name
   (``improved_forward``), and it is compared with the record in the run's ``selection/``.
   ``--epochs`` and ``--seed`` train for another number of epochs (the learning-rate schedule spread over
   them, as a refit's is) or at another seed; such a run has no record to repeat.

   ``--trajectory-only`` skips the saved models (check 1).

    python -m marsrover.diagnostics batch-norm [--trajectory improved quick_cnn] [--forward] [--epochs N] [--seed N]
                                               [--trajectory-only]

writes ``reports/side_checks/batch_norm.json`` (with the commit and library versions) and prints tables.
``--forward``, ``--epochs``, ``--seed`` and ``--trajectory-only`` each add to the file's name
(``batch_norm_forward_6_epochs_seed1.json`` for ``--forward --epochs 6 --seed 1``), so checks of different
kinds never overwrite one another; for another ``--run-dir``, ``--trajectory`` list or ``--sample``, give
``--out``.

``flip``: would mirroring help at inference? Every recipe trains with random horizontal flips, so a model
should score mirrored validation images about as well as the images themselves; averaging its two
predictions (test-time flip augmentation) is then a cheap candidate for a better score. The saved train-only
models of a finished run score validation three ways: as the images are, mirrored, and the average.

    python -m marsrover.diagnostics flip

writes ``reports/side_checks/flip.json``.

``ablation``: does one of notebook 05's ablations hold at other seeds? The study trains each variant at one
seed, and the range of ``improved``'s seeds says how far chance alone moves a score; a variant that stands
out of it once may be a lucky draw. This trains the variant again at each given seed, with the finished
run's profile, scores it like the study does (its best validation epoch, the mean of its last epochs, its
validation groups at the kept epoch) and places every seed's run against the range of ``improved``'s seeds
in the run, as notebook 05 does. The run's own variant record (the study's seed) joins the seeds.

    python -m marsrover.diagnostics ablation larger_images --seeds 1 2

writes ``reports/side_checks/ablation_larger_images_seeds1_2.json``.

On another machine than the run's (another CPU, so maybe another numeric policy: bfloat16 where the CPU has
it, float32 elsewhere), runs trained here are not comparable with the run's own. ``--paired`` then trains
``improved`` too, at each of the same seeds, and places the variant against those runs only; each seed's
difference (variant minus ``improved``) is recorded as well. Without it, the check says when the machines differ.

    python -m marsrover.diagnostics ablation constant_learning_rate --seeds 42 1 2 --paired

writes ``reports/side_checks/ablation_constant_learning_rate_seeds1_2_42_paired.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, reporting, study

STATISTICS = ("running", "recomputed", "recomputed_loss_weighted")


def _sample(count: int, sample_size: int | None, seed: int) -> np.ndarray:
    if sample_size is None or sample_size >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, sample_size, replace=False))


def validation_scores_by_statistics(model, val_data, fit_images: np.ndarray, loss_weights: np.ndarray) -> dict:
    """Validation balanced accuracy with the model's running statistics, then with recomputed ones (plain,
    then loss-weighted); the model's running statistics are put back afterwards."""
    from sklearn.metrics import balanced_accuracy_score

    from .evaluation import predict_surface_probability
    from .training import batch_norm_layers, recalibrate_batch_norm

    images, labels = val_data

    def score() -> float:  # the larger of the two probabilities, as argmax picks it (a tie: Rover)
        return float(balanced_accuracy_score(labels, (predict_surface_probability(model, images) > 0.5).astype(int)))

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


class SideCheckInputError(Exception):
    """Input a side check cannot use, found before anything is written: ``main`` says it in one line."""


class NothingToScore(SideCheckInputError, FileNotFoundError):
    """The run folder lacks the records or saved models a side check scores."""


class UnknownAblation(SideCheckInputError, KeyError):
    """An ablation notebook 05 does not define."""

    def __str__(self) -> str:  # a KeyError would show its message in quotes
        return str(self.args[0]) if self.args else ""


class TooFewSeeds(SideCheckInputError, ValueError):
    """A paired check needs improved at two seeds or more for a range."""


class TooFewSols(SideCheckInputError, ValueError):
    """Validation has too few sols to split for forward validation."""


def _single_model_runs(run_dir: Path):
    """(run, config, saved model path) of each trained single model of ``run_dir`` judged on the official
    validation split: no average, no skipped run, no random-split run."""
    for record_path in sorted((Path(run_dir) / "runs").glob("*.json")):
        record = reporting.load_json(record_path)
        run, conf = record_path.stem, record.get("config", {})
        if "skipped" in record or "members" in conf or study.RANDOM_SPLIT_SUFFIX in run:
            continue
        yield run, conf, Path(run_dir) / "models" / f"{run}.keras"


def _require_run_records(run_dir: Path) -> None:
    """Refuse, before any image is loaded or any record written, a folder with no trained run to score."""
    if not any((Path(run_dir) / "runs").glob("*.json")):
        raise NothingToScore(f"{config.display_path(run_dir)} holds no run records (runs/*.json): "
                                "run notebook 05 there first (python run_all.py --profile <name> --only 05)")


def _not_written(out: Path | None) -> str:
    """The end of a refusal's message: which record was left as it was."""
    return f"; {config.display_path(out)} was not written" if out else ""


def _missing_model_message(model_path: Path, run_dir: Path) -> str:
    return (f"{model_path} is missing: the saved models of {run_dir} come from running notebook 05 there "
            "(they are not committed)")


def saved_models_check(run_dir: Path, paths: config.DataPaths, index: pd.DataFrame, *,
                       sample_size: int | None = None, seed: int = 42) -> pd.DataFrame:
    """One row per saved single model of ``run_dir`` that has batch normalisation (the seeds have none;
    averages are made of rows already here): validation balanced accuracy by statistics."""
    from .inference import load_model
    from .training import batch_norm_layers, instrument_balance_weights, release_models

    run_dir = Path(run_dir)
    rows, val_arrays = [], {}  # validation images by size, loaded once
    for run, conf, model_path in _single_model_runs(run_dir):
        if not model_path.is_file():
            raise NothingToScore(_missing_model_message(model_path, run_dir))
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


def flip_check(run_dir: Path, paths: config.DataPaths, index: pd.DataFrame) -> pd.DataFrame:
    """One row per saved train-only model of ``run_dir``: validation accuracy and balanced accuracy on the
    images as they are (``as_is``), mirrored left to right (``mirrored``), and averaging the two
    predictions' P(Surface) (``averaged``). A missing model file gives a row that says so, and the rest go on."""
    from .evaluation import binary_metrics, predict_surface_probability
    from .inference import load_model
    from .training import release_models

    rows, val_arrays = [], {}  # validation images by size, loaded once
    for run, conf, model_path in _single_model_runs(run_dir):
        if conf.get("fit_on", "train") != "train":
            continue  # a refit was fitted on validation
        if not model_path.is_file():
            print(_missing_model_message(model_path, Path(run_dir)), flush=True)
            rows.append({"run": run, "missing": str(model_path)})
            continue
        model, size = load_model(model_path), conf["image_size"]
        if size not in val_arrays:
            val_arrays[size] = study.split_arrays(paths, index, "val", size, progress=False)
        images, labels = val_arrays[size]
        as_is = predict_surface_probability(model, images)
        mirrored = predict_surface_probability(model, np.ascontiguousarray(images[:, :, ::-1]))
        row = {"run": run}
        for view, p_surface in (("as_is", as_is), ("mirrored", mirrored), ("averaged", (as_is + mirrored) / 2)):
            scores = binary_metrics(labels, p_surface)
            row[f"{view} accuracy"] = round(scores["accuracy"], 4)
            row[f"{view} balanced accuracy"] = round(scores["balanced_accuracy"], 4)
        rows.append(row)
        print(f"{run}: balanced accuracy " + ", ".join(f"{view} {row[f'{view} balanced accuracy']:.3f}"
                                                     for view in ("as_is", "mirrored", "averaged")), flush=True)
        del model
        release_models()
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def trajectory_check(name: str, paths: config.DataPaths, index: pd.DataFrame, *, seed: int = 42,
                     sample_size: int | None = 1500, image_size: int | None = None, epochs: int | None = None,
                     batch_size: int | None = None, forward: bool = False) -> tuple[pd.DataFrame, list[float]]:
    """Train ``name`` on train with its recipe, scoring validation after every epoch with running and
    recomputed statistics (on ``sample_size`` of the images it is fitted on). Returns the table (one row
    per epoch) and the run's own validation history, which its ``running`` column must repeat.

    ``forward``: the forward-validation run instead (``study.forward_validation_index``), fitted on train
    + validation's earlier sols and scored on its later ones."""
    import keras

    from .models import get_spec
    from .training import instrument_balance_weights, release_models, train

    size = image_size or get_spec(name).image_size
    fit_splits = ["train"]
    if forward:
        index = study.forward_validation_index(index)
        if index is None:
            raise TooFewSols("the validation split has too few sols for forward validation")
        fit_splits = study.FORWARD_FIT_SPLITS
    train_images, train_labels, groups = study.fit_arrays(paths, index, fit_splits, size, progress=False)
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


def _side_check(run_dir: Path, data_dir: Path | None, seed: int | None, out: Path | None, check) -> dict:
    """Run ``check(result, profile, paths, index, seed)`` with the finished run's profile: its numeric
    policy (the process's own is put back afterwards), seed and subsample. ``result`` starts with the run's
    directory, profile, seed and commit; the environment is added and the whole written to ``out`` as JSON."""
    import keras

    from .profiles import get_profile
    from .provenance import run_environment
    from .training import configure_accelerator

    policy = keras.mixed_precision.global_policy()
    try:
        run_dir = Path(run_dir)
        run_metrics = reporting.load_json(run_dir / "metrics.json")  # {} before notebook 06 has run
        profile = get_profile(run_metrics.get("profile", "full"))
        configure_accelerator(mixed_precision=profile["mixed_precision"], jit_compile=False,
                              cpu_bfloat16=profile["cpu_bfloat16"])
        seed = profile["seed"] if seed is None else seed
        paths, index = study.load_index(data_dir, max_images_per_split=profile["max_images_per_split"], seed=seed)
        result: dict = {"run_dir": config.display_path(run_dir), "profile": profile["profile"], "seed": seed,
                        # the scored run's own commit: its saved models are not committed
                        "run_commit": run_metrics.get("commit")}
        check(result, profile, paths, index, seed)
        result["environment"] = run_environment()
    finally:
        keras.mixed_precision.set_global_policy(policy)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"Wrote {out}")
    return result


def batch_norm_side_check(run_dir: Path, *, data_dir: Path | None = None, trajectories: list[str] = (),
                          sample_size: int | None = 1500, out: Path | None = None, seed: int | None = None,
                          image_size: int | None = None, epochs: int | None = None, forward: bool = False,
                          saved_models: bool = True) -> dict:
    """Both batch-norm checks (saved models unless ``saved_models`` is false, then ``trajectories``), with the
    run's profile; writes ``out``."""

    def check(result, profile, paths, index, seed):
        result["sample_size"] = sample_size
        if saved_models:  # about 1.5 minutes in the full profile, not needed for a trajectory alone
            saved = saved_models_check(run_dir, paths, index, sample_size=sample_size, seed=seed)
            if saved.empty and not trajectories:  # keep the record there is
                raise NothingToScore(f"no saved model of {config.display_path(run_dir)} has batch normalisation "
                                     f"to score{_not_written(out)}")
            result["saved_models"] = {run: {key: (round(value, 4) if isinstance(value, float) else value)
                                            for key, value in row.items()} for run, row in saved.iterrows()}
        result["trajectories"] = {}
        for name in trajectories:
            table, history = trajectory_check(name, paths, index, seed=seed, sample_size=sample_size,
                                              image_size=image_size or profile["image_size"],
                                              epochs=epochs or profile["epochs"], batch_size=profile["batch_size"],
                                              forward=forward)
            run, records = (name + study.FORWARD_SUFFIX, study.SELECTION_RUNS) if forward else (name, "runs")
            result["trajectories"][run] = {
                "fit_on": "+".join(study.FORWARD_FIT_SPLITS) if forward else "train", "epochs_trained": len(table),
                "epochs": {column: [round(float(v), 4) for v in table[column]] for column in STATISTICS},
                "run_history": [round(float(v), 4) for v in history],
                # trained for other epochs or at another seed than the recorded run: nothing to compare with
                "committed_history_matches": (None if epochs or seed != profile["seed"] else
                                              _matches_record(Path(run_dir) / records / f"{run}.json", history)),
                "summary": summarise_trajectory(table, last=min(5, len(table))),
            }

    if saved_models:
        _require_run_records(run_dir)
    return _side_check(run_dir, data_dir, seed, out, check)


def flip_side_check(run_dir: Path, *, data_dir: Path | None = None, out: Path | None = None) -> dict:
    """:func:`flip_check` on the saved train-only models of ``run_dir``, with its profile; writes ``out``."""

    def check(result, profile, paths, index, seed):
        table = flip_check(run_dir, paths, index)
        if table.empty or ("missing" in table and table["missing"].notna().all()):  # keep the record there is
            missing = f" ({', '.join(table.index)} missing)" if len(table) else ""
            raise NothingToScore(f"no saved train-only model of {config.display_path(run_dir)} to score{missing}"
                                 f"{_not_written(out)}")
        result["models"] = {run: {key: value for key, value in row.items() if not pd.isna(value)}
                            for run, row in table.iterrows()}

    _require_run_records(run_dir)
    return _side_check(run_dir, data_dir, None, out, check)


def _seed_run(record: dict, trained_here: bool) -> dict:
    """One seed's run of a variant in an ablation check: its two views, time, curve, groups and provenance."""
    from . import ablation
    from .provenance import recorded_cpu

    environment = record.get("environment", {})
    return {"best": ablation.VIEWS["best"](record["history"]), "settled": ablation.VIEWS["settled"](record["history"]),
            "train_seconds": record["train_seconds"], "trained_here": trained_here,
            # runs of other commits or CPUs can sit side by side here: each says where it came from
            "commit": environment.get("commit"), "cpu": recorded_cpu(record).get("model_name"),
            "numeric_policy": record.get("config", {}).get("numeric_policy"),
            "val_balanced_accuracy": [round(value, 4) for value in record["history"]["val_balanced_accuracy"]],
            **({"val_groups": record["val_groups"]} if "val_groups" in record else {})}


def ablation_side_check(run_dir: Path, name: str, seeds: list[int], *, data_dir: Path | None = None,
                        out: Path | None = None, paired: bool = False) -> dict:
    """Ablation ``name`` trained again at each of ``seeds`` with the profile of ``run_dir``, on train, judged
    on validation; with the run's own record of it (the study's seed, unless retrained: retraining it checks
    that the record repeats, ``committed_history_matches``), every seed's run is placed against the range of
    ``improved``'s seeds in ``run_dir`` (:func:`marsrover.ablation.seed_evidence`); writes ``out``.

    ``paired``: ``improved`` is trained here too, at each of ``seeds``, and the variant's runs (only those
    trained here) are placed against those instead, with each seed's difference (``paired_differences``):
    the comparison for a machine other than the run's."""
    import tempfile

    from . import ablation
    from .provenance import cpu_description, recorded_cpu

    seeds = list(dict.fromkeys(seeds))  # a seed named twice is one run
    if name not in ablation.ABLATIONS:  # before any image is loaded
        raise UnknownAblation(f"unknown ablation {name!r}; choose from {sorted(ablation.ABLATIONS)}")
    if paired and len(seeds) < 2:  # one pair has no range of improved's seeds to place it against
        raise TooFewSeeds(f"--paired needs at least two seeds (given {seeds}): improved's runs at them are "
                          "the range the variant is placed against")
    run_dir = Path(run_dir)
    base_path = run_dir / "runs" / f"{ablation.BASE_MODEL}.json"
    base_run = reporting.load_json(base_path)
    if "history" not in base_run:
        raise NothingToScore(f"{config.display_path(base_path)} holds no trained run: the seeds of "
                                f"{ablation.BASE_MODEL} to compare with come from running notebook 05 there")
    committed = ablation.load_records(run_dir)
    repeats = {key: record for key, record in committed.items() if ablation.is_repeat(key)}
    if not repeats:  # the runs are still worth having, but nothing will place them
        print(f"{config.display_path(run_dir)} has no seed repeat of {ablation.BASE_MODEL}: the runs will not be "
              "placed against its seeds (the profile's seed_repeats train them)", flush=True)
    own = committed.get(name)  # the study's own run of the variant
    study_seed = own["config"]["seeds"]["seed"] if own else None
    here, there = cpu_description(), recorded_cpu(base_run)
    machines_differ = bool(there) and (here.get("model_name"), here.get("flags")) != (there.get("model_name"),
                                                                                       there.get("flags"))
    if machines_differ and not paired:
        print(f"{ablation.BASE_MODEL}'s runs in {config.display_path(run_dir)} were trained on "
              f"{there.get('model_name', 'another CPU')}, and this machine is {here.get('model_name', 'another')}: "
              "runs trained here may differ in numeric policy and last bits, so placing them against those seeds "
              f"mixes machines; --paired trains {ablation.BASE_MODEL} here at the same seeds", flush=True)

    def check(result, profile, paths, index, seed):
        result.update(ablation=name, question=ablation.ABLATIONS[name].question, paired=paired,
                      machines_differ=machines_differ)
        # paired: only runs trained here take part; the run's own (another machine, maybe) would mix machines
        records = {study_seed: own} if own and study_seed not in seeds and not paired else {}
        bases = {}  # paired: improved trained here, by seed
        for run_seed in seeds:
            with tempfile.TemporaryDirectory() as scratch:  # run_ablations empties its folder first
                trained = study.run_ablations([name], paths, index, Path(scratch), image_size=profile["image_size"],
                                              epochs=profile["epochs"], batch_size=profile["batch_size"],
                                              seed=run_seed, seed_repeats=[run_seed] if paired else (),
                                              repeat_own_seed=paired)
            records[run_seed] = record = trained[name]
            if paired:
                bases[run_seed] = trained[ablation.repeat_name(run_seed)]
            if run_seed == study_seed and not machines_differ:  # another machine's last bits need not repeat
                result["committed_history_matches"] = bool(np.allclose(
                    own["history"]["val_balanced_accuracy"], record["history"]["val_balanced_accuracy"], atol=1e-6))
        records = dict(sorted(records.items()))
        runs = {run_seed: _seed_run(record, run_seed in seeds) for run_seed, record in records.items()}
        result["runs"] = {str(run_seed): run for run_seed, run in runs.items()}
        base, base_repeats = base_run, repeats
        if paired:  # the first seed's run stands where the study's run would; the others are its repeats
            first, *others = seeds
            base = bases[first]
            base_repeats = {ablation.repeat_name(run_seed): bases[run_seed] for run_seed in others}
            result["paired_differences"] = [
                {"seed": run_seed, **{view: runs[run_seed][view] - ablation.VIEWS[view](bases[run_seed]["history"])
                                      for view in ablation.VIEWS}} for run_seed in sorted(bases)]
        # each seed's run of the variant, placed like a variant of notebook 05
        evidence = ablation.seed_evidence(base, {**base_repeats, **{f"{name} at seed {run_seed}": record
                                                                    for run_seed, record in records.items()}})
        improved_runs = [base, *base_repeats.values()] if evidence else [base]
        result["improved_seeds"] = [{**scores, "trained_here": paired, "train_seconds": run["train_seconds"],
                                     "cpu": recorded_cpu(run).get("model_name")}
                                    for scores, run in zip(evidence["seeds"] if evidence else [
                                        {"seed": base["config"]["seeds"]["seed"],
                                         **{view: ablation.VIEWS[view](base["history"]) for view in ablation.VIEWS}}],
                                        improved_runs, strict=True)]
        result["improved_ranges"] = evidence["ranges"] if evidence else None
        result["placed"] = [{"seed": run_seed, **placed} for run_seed, placed in
                            zip(records, evidence["variants"], strict=True)] if evidence else []
        result["means"] = {
            name: {view: float(np.mean([run[view] for run in runs.values()])) for view in ablation.VIEWS},
            ablation.BASE_MODEL: {view: float(np.mean([run[view] for run in result["improved_seeds"]]))
                                  for view in ablation.VIEWS}}
        for run_seed, run in result["runs"].items():
            print(f"{name} at seed {run_seed}: best {run['best']:.3f}, mean of the last "
                  f"{ablation.SETTLED_EPOCHS} epochs {run['settled']:.3f}, {run['train_seconds']:.0f} s", flush=True)
        if evidence:
            print(f"{ablation.BASE_MODEL}'s seeds{' (trained here)' if paired else ''}: best "
                  f"{evidence['ranges']['best'][0]:.3f} to {evidence['ranges']['best'][1]:.3f}, last "
                  f"{ablation.SETTLED_EPOCHS} {evidence['ranges']['settled'][0]:.3f} to "
                  f"{evidence['ranges']['settled'][1]:.3f}", flush=True)
        for difference in result.get("paired_differences", []):
            print(f"seed {difference['seed']}: {name} minus {ablation.BASE_MODEL}: best {difference['best']:+.3f}, "
                  f"last {ablation.SETTLED_EPOCHS} {difference['settled']:+.3f}", flush=True)

    return _side_check(run_dir, data_dir, None, out, check)


def side_check_table(path: Path, *, saved_models: bool = False) -> pd.DataFrame:
    """A side check's JSON as a table (empty when the file is missing).

    ``flip``: one row per model, validation balanced accuracy as the images are, mirrored and averaged.
    ``batch-norm``: one row per trajectory and statistics: the best epoch's score, its epoch, the lowest epoch,
    the mean of the last epochs and the last (when it trained trajectories; its saved models' scores otherwise,
    or with ``saved_models``: one row per saved model, its kept weights scored with each kind of statistics).
    ``ablation``: one row per seed of the variant, its best epoch and the mean of its last epochs placed against
    the range of ``improved``'s seeds, then ``improved``'s seeds themselves.
    """
    from .ablation import SETTLED_EPOCHS

    result = reporting.load_json(path)
    if saved_models:
        return pd.DataFrame.from_dict(result.get("saved_models") or {}, orient="index").rename_axis("run")
    if "ablation" in result:
        placed = {row["seed"]: row for row in result.get("placed", [])}
        settled = f"mean of last {SETTLED_EPOCHS} epochs"
        places = {"best against improved's seeds": "best_against_seeds",
                  f"last {SETTLED_EPOCHS} against improved's seeds": "settled_against_seeds", "reading": "reading"}
        # paired: each seed's difference from improved at the same seed, on the variant's rows
        differences = {row["seed"]: row for row in result.get("paired_differences", [])}
        rows = [{"run": result["ablation"], "seed": int(seed), "best val balanced accuracy": run["best"],
                 settled: run["settled"], "seconds": run["train_seconds"], "trained by this check": run["trained_here"],
                 **{column: placed.get(int(seed), {}).get(key, "") for column, key in places.items()},
                 **({"best minus improved's": differences[int(seed)]["best"],
                     f"last {SETTLED_EPOCHS} minus improved's": differences[int(seed)]["settled"]}
                    if int(seed) in differences else {})}
                for seed, run in result["runs"].items()]
        rows += [{"run": "improved", "seed": run["seed"], "best val balanced accuracy": run["best"],
                  settled: run["settled"], "seconds": run.get("train_seconds") if run.get("trained_here") else None,
                  "trained by this check": run.get("trained_here", False),
                  **dict.fromkeys(places, "")}  # improved's own seeds are the yardstick, not placed against it
                 for run in result["improved_seeds"]]
        return pd.DataFrame(rows).set_index(["run", "seed"])
    if result.get("trajectories"):
        return pd.DataFrame([{"trajectory": run, "statistics": statistics, **summary,
                              "lowest": min(trajectory["epochs"][statistics]) if "epochs" in trajectory else None}
                             for run, trajectory in result["trajectories"].items()
                             for statistics, summary in trajectory["summary"].items()]).set_index(
                                 ["trajectory", "statistics"])
    if "saved_models" in result:
        return pd.DataFrame.from_dict(result["saved_models"], orient="index").rename_axis("run")
    if "models" in result:
        columns = [f"{view} balanced accuracy" for view in ("as_is", "mirrored", "averaged")]
        return pd.DataFrame.from_dict(result["models"], orient="index").rename_axis("run").reindex(columns=columns)
    return pd.DataFrame()


def batch_norm_forward_table(seeds=(None, 1, 2), epochs=(None, 6)) -> pd.DataFrame:
    """The forward-run trajectories of ``batch-norm --trajectory improved --forward`` at each seed (None: the
    study's) and length (None: the recipe's), one table: each file's rows (see :func:`side_check_table`) under
    its seed and epochs, with the run it used and the commit that wrote it. Missing files are left out."""
    tables = {}
    for seed in seeds:
        for length in epochs:
            path = config.SIDE_CHECKS_DIR / batch_norm_file_name(forward=True, epochs=length, seed=seed)
            result = reporting.load_json(path)
            if not result.get("trajectories"):
                continue
            table = side_check_table(path).assign(run=result.get("run_commit") or "not recorded",
                                                  written_at=result.get("environment", {}).get("commit"))
            tables[(result.get("seed", seed), length or "recipe's")] = table
    if not tables:
        return pd.DataFrame()
    return pd.concat(tables, names=["seed", "epochs"])


def side_check_caption(path: Path) -> str:
    """Which side check a JSON holds, the run it used (by its commit) and the code that wrote it; or that it is
    missing."""
    path = Path(path)
    result = reporting.load_json(path)
    if not result:
        return f"`{config.display_path(path)}`: not found (this side check has not been run here)."
    kind = (f"`{result['ablation']}` at more seeds" + (", paired with `improved` trained at the same seeds on "
                                                        f"{_machine_words(result)}" if result.get("paired") else "")
            if "ablation" in result else
            "batch-norm statistics" if "trajectories" in result else
            "test-time flipping" if "models" in result else "a side check")
    run_commit = result.get("run_commit") or "not recorded"
    mixed = (f" Its runs were trained on {_machine_words(result)}, another machine than the run's, and placed "
             "against the run's seeds: the placement mixes machines (`--paired` would not)."
             if result.get("machines_differ") and not result.get("paired") else "")
    return (f"`{config.display_path(path)}`: {kind}, on the `{result.get('profile')}` run at commit {run_commit}, "
            f"written by code at {result.get('environment', {}).get('commit')}; validation only.{mixed}")


def _machine_words(result: dict) -> str:
    """The machine and numeric policy a side check trained on: ``AMD EPYC (float32)``."""
    cpu, policies = reporting.side_check_machine(result)
    return (cpu or "a CPU not recorded") + (f" ({', '.join(policies)})" if policies else "")


def ablation_file_name(name: str, seeds: list[int], *, paired: bool = False) -> str:
    """The default JSON of an ablation check: ``ablation_<name>_seeds<s1>_<s2>[_paired].json``, seeds in order."""
    return f"ablation_{name}_seeds{'_'.join(str(seed) for seed in sorted(set(seeds)))}{'_paired' if paired else ''}.json"


def batch_norm_file_name(*, forward: bool = False, epochs: int | None = None, seed: int | None = None,
                         trajectory_only: bool = False) -> str:
    """The default JSON of a batch-norm check, named after the options that change what it holds, so checks of
    different kinds never overwrite one another's files: ``batch_norm[_forward][_<N>_epochs][_seed<N>]
    [_trajectory_only].json``. Other options (``--run-dir``, ``--trajectory``, ``--sample``) take ``--out``."""
    return ("batch_norm" + ("_forward" if forward else "") + (f"_{epochs}_epochs" if epochs else "")
            + (f"_seed{seed}" if seed is not None else "") + ("_trajectory_only" if trajectory_only else "") + ".json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marsrover.diagnostics", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    batch_norm = commands.add_parser("batch-norm", help="running against recomputed batch-norm statistics")
    flip = commands.add_parser("flip", help="validation scores of mirrored images and of test-time flipping")
    ablation_ = commands.add_parser("ablation", help="one of notebook 05's ablations trained again at other seeds")
    for command in (batch_norm, flip, ablation_):
        command.add_argument("--run-dir", type=Path, default=config.REPORTS_DIR / "full")
        command.add_argument("--data-dir", type=Path)
    batch_norm.add_argument("--trajectory", nargs="*", default=[], metavar="MODEL",
                            help="also train these models again, scoring validation every epoch")
    batch_norm.add_argument("--forward", action="store_true",
                            help="train each --trajectory model's forward-validation run instead")
    batch_norm.add_argument("--epochs", type=int,
                            help="train each --trajectory run for this many epochs (its schedule too), not its recipe's")
    batch_norm.add_argument("--seed", type=int, help="the seed of the image sample the statistics are recomputed "
                            "on and of the --trajectory runs (default: the run's)")
    batch_norm.add_argument("--trajectory-only", action="store_true",
                            help="skip scoring the run's saved models; only train the --trajectory runs")
    batch_norm.add_argument("--sample", type=int, default=1500,
                            help="fit images the statistics are recomputed on (0: all)")
    batch_norm.add_argument("--out", type=Path, help="the JSON to write (default: reports/side_checks/"
                            "batch_norm[_forward][_<N>_epochs][_seed<N>][_trajectory_only].json)")
    flip.add_argument("--out", type=Path, default=config.SIDE_CHECKS_DIR / "flip.json")
    ablation_.add_argument("name", help="the ablation, as notebook 05 names it (e.g. larger_images)")
    ablation_.add_argument("--seeds", type=int, nargs="+", required=True, help="the seeds to train it at")
    ablation_.add_argument("--paired", action="store_true", help="also train improved at each seed here, and "
                           "place the variant against those runs (for a machine other than the run's)")
    ablation_.add_argument("--out", type=Path, help="the JSON to write (default: reports/side_checks/"
                           "ablation_<name>_seeds<s1>_<s2>[_paired].json)")
    args = parser.parse_args(argv)
    from .console import start_keras_quietly

    start_keras_quietly()
    try:
        return _run_command(args, parser)
    except SideCheckInputError as error:  # bad input, said in one line; anything else keeps its traceback
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1


def _run_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.command == "ablation":
        ablation_side_check(args.run_dir, args.name, args.seeds, data_dir=args.data_dir, paired=args.paired,
                            out=args.out or config.SIDE_CHECKS_DIR / ablation_file_name(args.name, args.seeds,
                                                                                 paired=args.paired))
        return 0
    if args.command == "flip":
        flip_side_check(args.run_dir, data_dir=args.data_dir, out=args.out)
        return 0
    if not args.trajectory:  # these only shape trajectories, yet name the output: they would mislabel it
        # (--seed also draws the image sample that the saved models are scored on, so it stands alone)
        for given, option in ((args.trajectory_only, "--trajectory-only"), (args.forward, "--forward"),
                              (args.epochs is not None, "--epochs")):
            if given:
                parser.error(f"{option} needs --trajectory MODEL: it only changes the --trajectory runs")
    if args.out is None:
        args.out = config.SIDE_CHECKS_DIR / batch_norm_file_name(forward=args.forward, epochs=args.epochs, seed=args.seed,
                                                          trajectory_only=args.trajectory_only)
    batch_norm_side_check(args.run_dir, data_dir=args.data_dir, trajectories=args.trajectory,
                          sample_size=args.sample or None, out=args.out, forward=args.forward, epochs=args.epochs,
                          seed=args.seed, saved_models=not args.trajectory_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
