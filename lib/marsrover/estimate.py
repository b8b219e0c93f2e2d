"""How long a profile's training would take on this machine, measured in a few steps before hours are spent.

``python run_all.py --profile full --estimate`` lists every training run notebook 05 would make (each model
on train, the refits, the leakage run, the ablations and seed repeats), times a few batches of each kind of
run here, at the profile's image sizes, batch sizes and numeric policy, and prints the minutes each run
would take, beside the seconds per epoch the last run of the profile recorded and the CPU it ran on: a
profile's time on one CPU says little about another (bfloat16, for one, is native on some and not others).
Only training is estimated, the bulk of notebook 05 and of the study; ``run_log.json`` gives every
notebook's time in the last run.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from . import reporting
from .profiles import BUDGET_MINUTES

BATCHES_TIMED = 4  # per timed epoch; the first epoch (tracing, compiling) is timed apart as a run's overhead


@dataclass(frozen=True)
class PlannedRun:
    """One training run of notebook 05, as the profile and the index decide it."""

    run: str
    stage: str
    model: str  # the spec trained (an ablation's variant is registered under its own name)
    image_size: int
    epochs: int
    batch_size: int
    fit_images: int
    val_images: int  # scored after every epoch; none for a refit
    recomputes_batch_norm: bool = False  # its batch-norm statistics recomputed over the fit images at the end
    weights: str | None = None  # a pretrained model's weights: "imagenet" freezes its backbone, which costs less

    @property
    def cost_key(self) -> tuple:
        return self.model, self.image_size, self.batch_size, self.weights


@dataclass(frozen=True)
class StepCost:
    """What one kind of run costs here: each training batch, each epoch's fixed part (a new input iterator,
    callbacks), each validated image, each image of a batch-norm recomputation, and its first epoch's extra."""

    seconds_per_batch: float
    seconds_per_epoch: float
    seconds_per_val_image: float
    seconds_per_batch_norm_image: float
    first_epoch_overhead: float


def training_plan(profile: dict, index: pd.DataFrame, *, imagenet_weights_cached: bool = False
                  ) -> tuple[list[PlannedRun], dict[str, list[PlannedRun]], list[str]]:
    """The runs notebook 05 makes with ``profile`` on ``index``: those it makes whatever validation says;
    for each candidate of ``best_on_val``, the runs its refit adds if it wins; and notes on what is left out.
    """
    from . import ablation, study
    from .models import get_spec

    counts = index["split"].value_counts()
    n_train, n_val = int(counts.get("train", 0)), int(counts.get("val", 0))
    notes: list[str] = []
    forward_index = study.forward_validation_index(index)

    def planned(run: str, stage: str, model: str, fit_images: int, val_images: int, *, image_size: int | None = None,
                recomputes_batch_norm: bool = False) -> PlannedRun:
        spec = get_spec(model)  # as training.train reads it: the profile's setting, else the recipe's
        return PlannedRun(run, stage, model, image_size or profile["image_size"] or spec.image_size,
                          profile["epochs"] or spec.epochs, profile["batch_size"] or spec.batch_size,
                          fit_images, val_images, recomputes_batch_norm=recomputes_batch_norm,
                          weights=profile["transfer_weights"] if spec.pretrained else None)

    def refit_runs(model: str) -> list[PlannedRun]:
        runs = []
        if study.chooses_refit_length(model) and forward_index is not None:
            runs.append(planned(model + study.FORWARD_SUFFIX, "refit length", model,
                                int(forward_index["split"].isin(study.FORWARD_FIT_SPLITS).sum()),
                                int((forward_index["split"] == "val").sum())))
        # A refit whose length forward validation chooses trains at most the recipe's epochs: the most is planned.
        runs.append(planned(model + study.REFIT_SUFFIX, "refit", model, n_train + n_val, 0,
                            recomputes_batch_norm=profile["refit_recomputes_batch_norm"]))
        return runs

    trained = []
    for model in profile["models"]:
        if get_spec(model).pretrained and profile["transfer_weights"] and not imagenet_weights_cached:
            notes.append(f"{model} is not estimated: its {profile['transfer_weights']} weights are not in Keras' "
                         "cache, and timing it would download them; the study downloads them where it can (on "
                         "Colab) and skips the model where it cannot")
            continue
        trained.append(model)
    plan = [planned(model, "train", model, n_train, n_val) for model in trained]
    named = [name for name in profile["refit"] if name != study.BEST_ON_VAL]
    refitted, _ = study.resolve_refit(named, {})  # runs are read only to find the best on validation
    refitted = [model for model in refitted if model in trained]  # as the study: no refit of a model not trained
    for model in refitted:
        plan += refit_runs(model)
    if profile["leakage_model"]:
        model = profile["leakage_model"]
        shuffled = study.random_split_index(index, profile["seed"])["split"].value_counts()
        plan.append(planned(model + study.RANDOM_SPLIT_SUFFIX, "leakage", model, int(shuffled.get("train", 0)),
                            int(shuffled.get("val", 0))))
    base_size = profile["image_size"] or get_spec(ablation.BASE_MODEL).image_size
    for name in profile["ablations"]:
        plan.append(planned(name, "ablation", ablation.variant_spec(name).name, n_train, n_val,
                            image_size=ablation.variant_image_size(name, base_size)))
    for seed in ablation.repeat_seeds(profile["seed_repeats"], profile["seed"]):
        plan.append(planned(ablation.repeat_name(seed), "seed repeat", ablation.BASE_MODEL, n_train, n_val))
    candidates = {}
    if study.BEST_ON_VAL in profile["refit"]:
        candidates = {model: [] if model in refitted else refit_runs(model) for model in trained}
        budget = profile["average_refit_budget_minutes"]
        notes.append("an average of models that wins validation refits each of its models; "
                     + (f"one competes only if notebook 05 estimates that refit at {budget:g} minutes at most"
                        if budget is not None else "any average competes"))
    return plan, candidates, notes


def time_steps(run: PlannedRun, *, seed: int, jit_compile: bool = False, batches: int = BATCHES_TIMED
               ) -> StepCost:
    """Train ``run``'s model here as the study would, for two epochs of ``batches`` random batches, validating
    every epoch and ending with a batch-norm recomputation; the second epoch gives the steady costs, the first
    its extra (tracing). Random pixels cost what real ones do."""
    import keras

    from .evaluation import EVAL_BATCH_SIZE
    from .training import release_models, train

    class EpochClock(keras.callbacks.Callback):
        """The times within each epoch: its start, each batch's end, its validation's start and end, its end."""

        def __init__(self):
            super().__init__()
            self.epochs: list[dict] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append({"begin": time.perf_counter(), "batch_ends": []})

        # A CPU step returns when it is done; on a GPU steps are queued, so batch ends (and the estimate) are rough.
        def on_train_batch_end(self, batch, logs=None):
            self.epochs[-1]["batch_ends"].append(time.perf_counter())

        def on_test_begin(self, logs=None):  # fit's validation calls the same callbacks
            self.epochs[-1]["test_begin"] = time.perf_counter()

        def on_test_end(self, logs=None):
            self.epochs[-1]["test_end"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs[-1]["end"] = time.perf_counter()

    rng = np.random.default_rng(seed)
    n, n_val = run.batch_size * batches, EVAL_BATCH_SIZE * 2
    images = rng.integers(0, 256, (n + n_val, run.image_size, run.image_size, 3), dtype=np.uint8)
    labels = np.arange(n + n_val) % 2
    groups = np.array([f"group {label}" for label in labels[:n]])
    clock = EpochClock()
    result = train(run.model, (images[:n], labels[:n]), (images[n:], labels[n:]), image_size=run.image_size,
                   epochs=2, batch_size=run.batch_size, seed=seed, jit_compile=jit_compile, weights=run.weights,
                   verbose=0, train_groups=groups, extra_callbacks=[clock], recompute_batch_norm=True)
    release_models()
    first, steady = clock.epochs
    validation = steady["test_end"] - steady["test_begin"]
    ends = steady["batch_ends"]
    per_batch = (ends[-1] - ends[0]) / (len(ends) - 1)
    epoch = steady["end"] - steady["begin"]
    return StepCost(seconds_per_batch=per_batch, seconds_per_epoch=max(0.0, epoch - validation - per_batch * batches),
                    seconds_per_val_image=validation / n_val,
                    seconds_per_batch_norm_image=result.config.get("batch_norm_seconds", 0.0) / n,
                    first_epoch_overhead=max(0.0, (first["end"] - first["begin"]) - epoch))


def run_seconds(run: PlannedRun, cost: StepCost) -> float:
    """``run``'s training time at ``cost``: every epoch's batches, fixed part and validation, its first epoch's
    extra, and the recomputation of its batch-norm statistics where it makes one."""
    epoch = math.ceil(run.fit_images / run.batch_size) * cost.seconds_per_batch + cost.seconds_per_epoch
    epoch += run.val_images * cost.seconds_per_val_image
    recompute = run.fit_images * cost.seconds_per_batch_norm_image if run.recomputes_batch_norm else 0.0
    return run.epochs * epoch + cost.first_epoch_overhead + recompute


def average_refit_seconds(candidates: dict[str, list[PlannedRun]], seconds: dict[str, float], index: pd.DataFrame,
                          budget_minutes: float | None) -> list[float]:
    """What refitting each average of two or more candidates adds (its models' refits, here), for the averages
    that would compete: notebook 05 lets one compete only if :func:`study.estimated_refit_seconds`, from its
    models' train-only times (``seconds``, estimated here), fits ``budget_minutes`` (None: every one)."""
    from .study import estimated_refit_seconds

    added = {model: sum(seconds[run.run] for run in runs) for model, runs in candidates.items()}
    costs = []
    for count in range(2, len(candidates) + 1):
        for members in combinations(sorted(candidates), count):
            not_anyway = [model for model in members if candidates[model]]  # an empty list: refitted anyway
            train_only = {model: {"train_seconds": seconds[model]} for model in not_anyway}
            if budget_minutes is None or estimated_refit_seconds(not_anyway, train_only, index) <= budget_minutes * 60:
                costs.append(sum(added[model] for model in members))
    return costs


def recorded_seconds_per_epoch(output_dir: Path) -> dict[str, tuple[float, str]]:
    """Seconds per epoch of each run in an earlier run's records under ``output_dir``, and the CPU it ran on."""
    from .provenance import cpu_label, recorded_cpu

    recorded = {}
    for folder in ("runs", reporting.SELECTION_RUNS, "ablations"):
        for path in sorted((Path(output_dir) / folder).glob("*.json")):
            record = reporting.load_json(path)
            epochs = (record.get("config") or {}).get("epochs")
            if record.get("train_seconds") and epochs:
                recorded[path.stem] = (record["train_seconds"] / epochs, cpu_label(recorded_cpu(record)))
    return recorded


def estimate(profile: dict, index: pd.DataFrame, *, recorded_dir: Path | None = None,
             imagenet_weights_cached: bool = False, jit_compile: bool = False, timer=time_steps) -> dict:
    """Every planned run's estimated minutes on this machine (one timing per kind of run), the range the
    refit of ``best_on_val`` adds, and the total against the profile's budget."""
    from .provenance import cpu_description, cpu_label

    plan, candidates, notes = training_plan(profile, index, imagenet_weights_cached=imagenet_weights_cached)
    every_run = plan + [run for runs in candidates.values() for run in runs]
    costs: dict[tuple, StepCost] = {}
    for run in every_run:
        if run.cost_key not in costs:
            print(f"Timing {run.model} at {run.image_size} px, batch {run.batch_size}", flush=True)
            with contextlib.redirect_stdout(io.StringIO()):  # each run's own lines (seeds fixed) are not the estimate's
                costs[run.cost_key] = timer(run, seed=profile["seed"], jit_compile=jit_compile)
    seconds = {run.run: run_seconds(run, costs[run.cost_key]) for run in every_run}
    recorded = recorded_seconds_per_epoch(recorded_dir) if recorded_dir else {}

    def row(run: PlannedRun, stage: str) -> dict:
        then = recorded.get(run.run)
        return {"run": run.run, "stage": stage, "image size": run.image_size, "epochs": run.epochs,
                "fit images": run.fit_images, "validation images": run.val_images,
                "seconds per epoch here": round(seconds[run.run] / run.epochs, 1),  # as the records count them
                "seconds per epoch, last run": None if then is None else round(then[0], 1),
                "last run's CPU": None if then is None else then[1], "minutes here": round(seconds[run.run] / 60, 1)}

    rows = [row(run, run.stage) for run in plan]
    rows += [row(run, f"if {model} wins validation") for model, runs in candidates.items() for run in runs]
    refits = [sum(seconds[run.run] for run in runs) for runs in candidates.values()]
    refits += average_refit_seconds(candidates, seconds, index, profile["average_refit_budget_minutes"])
    return {"profile": profile["profile"], "cpu": cpu_label(cpu_description()), "rows": rows,
            "planned_minutes": round(sum(seconds[run.run] for run in plan) / 60, 1),
            "refit_minutes": {"least": round(min(refits, default=0.0) / 60, 1),
                              "most": round(max(refits, default=0.0) / 60, 1)},
            "budget_minutes": BUDGET_MINUTES.get(profile["profile"]), "notes": notes}


def summary(result: dict) -> str:
    """The estimate in a few sentences."""
    least = result["planned_minutes"] + result["refit_minutes"]["least"]
    most = result["planned_minutes"] + result["refit_minutes"]["most"]
    text = (f"Training in the `{result['profile']}` profile on this machine ({result['cpu'] or 'CPU unnamed'}): "
            f"about {least:.0f} to {most:.0f} minutes ({result['planned_minutes']:.0f} for the runs made whatever "
            f"validation says, and {result['refit_minutes']['least']:.0f} to {result['refit_minutes']['most']:.0f} "
            "for the refit of what it picks). The other notebooks' time is not included.")
    budget = result["budget_minutes"]
    if budget is not None:
        if least > budget:
            verdict = f"Training alone is over the profile's budget of {budget:g} minutes for the whole study."
        elif most > budget:
            verdict = (f"Training alone may go over the profile's budget of {budget:g} minutes for the whole study, "
                       "depending on what validation picks.")
        else:
            verdict = (f"Training fits the profile's budget of {budget:g} minutes for the whole study, with "
                       f"{budget - most:.0f} minutes left for the other notebooks.")
        text += " " + verdict
    return " ".join([text, *(f"Note: {note}." for note in result["notes"])])


def print_estimate(profile_name: str, data_dir: Path | None = None, output_dir: Path | None = None) -> dict:
    """``run_all.py --estimate``: the estimate for ``profile_name``, printed as a table and a summary."""
    from .console import start_keras_quietly

    start_keras_quietly()  # before anything else imports Keras
    from . import config, study
    from .models import imagenet_weights_cached
    from .profiles import get_profile
    from .training import configure_accelerator

    profile = get_profile(profile_name)
    settings = configure_accelerator(mixed_precision=profile["mixed_precision"], jit_compile=profile["jit_compile"],
                                     cpu_bfloat16=profile["cpu_bfloat16"])
    _, index = study.load_index(data_dir, max_images_per_split=profile["max_images_per_split"], seed=profile["seed"])
    result = estimate(profile, index, recorded_dir=Path(output_dir or config.REPORTS_DIR / profile_name),
                      imagenet_weights_cached=imagenet_weights_cached(), jit_compile=settings["jit_compile"])
    with pd.option_context("display.width", 250, "display.max_columns", None, "display.max_rows", None):
        print(pd.DataFrame(result["rows"]).set_index("run").to_string())
    print(summary(result))
    return result
