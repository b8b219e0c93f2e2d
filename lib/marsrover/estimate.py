"""How long a profile's training would take on this machine, measured in a few steps before hours are spent.

``python run_all.py --profile full --estimate`` lists every training run notebook 05 would make (each model
on train, the refits, the leakage run, the ablations and seed repeats), times a few batches of each kind of
run here, at the profile's image sizes, batch sizes and numeric policy, and prints the minutes each run
would take, beside the seconds per epoch the last run of the profile recorded and the CPU it ran on. A
profile's time on one CPU says little about another: one with native bfloat16 (AMX) trains the large seed
models several times faster than one without. Only training is estimated, the bulk of notebook 05 and of
the study; the run log (``run_log.json``) gives every notebook's time in the last run.
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
    recomputes_batch_norm: bool = False  # one more pass over the fit images at the end

    @property
    def cost_key(self) -> tuple[str, int, int]:
        return self.model, self.image_size, self.batch_size


@dataclass(frozen=True)
class StepCost:
    """Seconds per training batch and per validated image of one kind of run, and its first epoch's extra."""

    seconds_per_batch: float
    seconds_per_val_image: float
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

    def recipe(model: str) -> tuple[int, int, int]:
        spec = get_spec(model)
        return (profile["image_size"] or spec.image_size, profile["epochs"] or spec.epochs,
                profile["batch_size"] or spec.batch_size)

    def on_train(run: str, stage: str, model: str) -> PlannedRun:
        return PlannedRun(run, stage, model, *recipe(model), fit_images=n_train, val_images=n_val)

    forward_index = study.forward_validation_index(index)

    def refit_runs(model: str) -> list[PlannedRun]:
        size, epochs, batch = recipe(model)
        runs = []
        if study.chooses_refit_length(model) and forward_index is not None:
            fit = int(forward_index["split"].isin(study.FORWARD_FIT_SPLITS).sum())
            runs.append(PlannedRun(model + study.FORWARD_SUFFIX, "refit length", model, size, epochs, batch,
                                   fit_images=fit, val_images=int((forward_index["split"] == "val").sum())))
        # A refit whose length forward validation chooses trains at most the recipe's epochs: the most is planned.
        runs.append(PlannedRun(model + study.REFIT_SUFFIX, "refit", model, size, epochs, batch,
                               fit_images=n_train + n_val, val_images=0,
                               recomputes_batch_norm=profile["refit_recomputes_batch_norm"]))
        return runs

    trained = []
    for model in profile["models"]:
        if get_spec(model).pretrained and profile["transfer_weights"] and not imagenet_weights_cached:
            notes.append(f"{model}: skipped, as the study skips it, because its {profile['transfer_weights']} "
                         "weights are not in Keras' cache (no download is tried here)")
            continue
        trained.append(model)
    plan = [on_train(model, "train", model) for model in trained]
    named = [name for name in profile["refit"] if name != study.BEST_ON_VAL]
    refitted, _ = study.resolve_refit(named, {model: {} for model in trained})
    for model in refitted:
        plan += refit_runs(model)
    if profile["leakage_model"]:
        model = profile["leakage_model"]
        shuffled = study.random_split_index(index, profile["seed"])["split"].value_counts()
        plan.append(PlannedRun(model + study.RANDOM_SPLIT_SUFFIX, "leakage", model, *recipe(model),
                               fit_images=int(shuffled.get("train", 0)), val_images=int(shuffled.get("val", 0))))
    base_size, _, _ = recipe(ablation.BASE_MODEL)
    for name in profile["ablations"]:
        spec = ablation.variant_spec(name)
        _, epochs, batch = recipe(ablation.BASE_MODEL)
        plan.append(PlannedRun(name, "ablation", spec.name, ablation.variant_image_size(name, base_size),
                               epochs, profile["batch_size"] or spec.batch_size, n_train, n_val))
    for seed in profile["seed_repeats"]:
        if seed != profile["seed"]:
            plan.append(on_train(ablation.repeat_name(seed), "seed repeat", ablation.BASE_MODEL))
    candidates = {}
    if study.BEST_ON_VAL in profile["refit"]:
        candidates = {model: [] if model in refitted else refit_runs(model) for model in trained}
        budget = profile["average_refit_budget_minutes"]
        notes.append("an average of models that wins validation refits each of its models; "
                     + (f"only one whose refit fits {budget:g} minutes competes" if budget is not None
                        else "any average competes"))
    return plan, candidates, notes


def time_steps(run: PlannedRun, *, seed: int, jit_compile: bool = False, batches: int = BATCHES_TIMED
               ) -> StepCost:
    """Train ``run``'s model here for two epochs of ``batches`` random batches, validating every epoch; the
    second epoch gives the steady cost, the first its extra (tracing). Random pixels cost what real ones do."""
    import keras

    from .evaluation import EVAL_BATCH_SIZE
    from .training import release_models, train

    class EpochClock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs, self.validations = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_started = time.perf_counter()

        def on_test_begin(self, logs=None):
            self.validation_started = time.perf_counter()

        def on_test_end(self, logs=None):
            self.validations.append(time.perf_counter() - self.validation_started)

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self.epoch_started)

    rng = np.random.default_rng(seed)
    n, n_val = run.batch_size * batches, EVAL_BATCH_SIZE * 2
    images = rng.integers(0, 256, (n + n_val, run.image_size, run.image_size, 3), dtype=np.uint8)
    labels = np.arange(n + n_val) % 2
    groups = np.array([f"group {label}" for label in labels[:n]])
    clock = EpochClock()
    train(run.model, (images[:n], labels[:n]), (images[n:], labels[n:]), image_size=run.image_size, epochs=2,
          batch_size=run.batch_size, seed=seed, jit_compile=jit_compile, weights=None, verbose=0, train_groups=groups,
          extra_callbacks=[clock])
    release_models()
    steady = clock.epochs[1] - clock.validations[1]
    return StepCost(seconds_per_batch=steady / batches, seconds_per_val_image=clock.validations[1] / n_val,
                    first_epoch_overhead=max(0.0, clock.epochs[0] - clock.epochs[1]))


def run_seconds(run: PlannedRun, cost: StepCost) -> float:
    """``run``'s training time at ``cost``: every epoch's batches and validation, its first epoch's extra, and
    a batch-norm pass over its images where it recomputes their statistics."""
    epoch = math.ceil(run.fit_images / run.batch_size) * cost.seconds_per_batch
    epoch += run.val_images * cost.seconds_per_val_image
    extra = run.fit_images * cost.seconds_per_val_image if run.recomputes_batch_norm else 0.0
    return run.epochs * epoch + cost.first_epoch_overhead + extra


def averages_refit_minutes(refit_minutes: dict[str, float], budget_minutes: float | None) -> list[float]:
    """What refitting each average of two or more candidates adds (the sum of its models' refits), for those
    that compete under ``budget_minutes`` (None: every one)."""
    sums = [sum(refit_minutes[model] for model in members)
            for count in range(2, len(refit_minutes) + 1) for members in combinations(sorted(refit_minutes), count)]
    return [minutes for minutes in sums if budget_minutes is None or minutes <= budget_minutes]


def recorded_seconds_per_epoch(output_dir: Path) -> dict[str, tuple[float, str]]:
    """Seconds per epoch of each run in an earlier run's records under ``output_dir``, and the CPU it ran on."""
    from .provenance import cpu_label, recorded_cpu

    recorded = {}
    for folder in ("runs", reporting.SELECTION_RUNS, "ablations"):
        for path in sorted((Path(output_dir) / folder).glob("*.json")):
            record = reporting.load_json(path)
            epochs = (record.get("config") or {}).get("epochs")
            if record.get("train_seconds") and epochs:
                cpu = recorded_cpu(record)
                recorded[path.stem] = (record["train_seconds"] / epochs, cpu_label(cpu) if cpu else "")
    return recorded


def estimate(profile: dict, index: pd.DataFrame, *, recorded_dir: Path | None = None,
             imagenet_weights_cached: bool = False, jit_compile: bool = False, timer=time_steps) -> dict:
    """Every planned run's estimated minutes on this machine (one timing per kind of run), the range the
    refit of ``best_on_val`` adds, and the total against the profile's budget."""
    plan, candidates, notes = training_plan(profile, index, imagenet_weights_cached=imagenet_weights_cached)
    every_run = plan + [run for runs in candidates.values() for run in runs]
    costs: dict[tuple, StepCost] = {}
    for run in every_run:
        if run.cost_key not in costs:
            print(f"Timing {run.model} at {run.image_size} px, batch {run.batch_size}", flush=True)
            with contextlib.redirect_stdout(io.StringIO()):  # each run's own lines (seeds fixed) are not the estimate's
                costs[run.cost_key] = timer(run, seed=profile["seed"], jit_compile=jit_compile)
    recorded = recorded_seconds_per_epoch(recorded_dir) if recorded_dir else {}

    def row(run: PlannedRun, stage: str) -> dict:
        seconds = run_seconds(run, costs[run.cost_key])
        then = recorded.get(run.run)
        return {"run": run.run, "stage": stage, "image size": run.image_size, "epochs": run.epochs,
                "fit images": run.fit_images, "validation images": run.val_images,
                "seconds per epoch here": round((seconds - costs[run.cost_key].first_epoch_overhead) / run.epochs, 1),
                "seconds per epoch, last run": None if then is None else round(then[0], 1),
                "last run's CPU": None if then is None else then[1], "minutes here": round(seconds / 60, 1)}

    rows = [row(run, run.stage) for run in plan]
    refit_minutes = {model: sum(run_seconds(run, costs[run.cost_key]) for run in runs) / 60
                     for model, runs in candidates.items()}
    rows += [row(run, f"if {model} wins validation") for model, runs in candidates.items() for run in runs]
    planned = sum(r["minutes here"] for r in rows if not r["stage"].startswith("if "))
    most = max([*refit_minutes.values(), *averages_refit_minutes(refit_minutes,
                                                                profile["average_refit_budget_minutes"])], default=0.0)
    from .provenance import cpu_description, cpu_label

    return {"profile": profile["profile"], "cpu": cpu_label(cpu_description()), "rows": rows,
            "planned_minutes": round(planned, 1), "refit_minutes": {"least": round(min(refit_minutes.values(),
                                                                                         default=0.0), 1),
                                                                    "most": round(most, 1)},
            "budget_minutes": BUDGET_MINUTES.get(profile["profile"]), "notes": notes}


def summary(result: dict) -> str:
    """The estimate in a few sentences."""
    least = result["planned_minutes"] + result["refit_minutes"]["least"]
    most = result["planned_minutes"] + result["refit_minutes"]["most"]
    text = (f"Training in the `{result['profile']}` profile on this machine ({result['cpu'] or 'CPU unnamed'}): "
            f"about {least:.0f} to {most:.0f} minutes ({result['planned_minutes']:.0f} for the runs made whatever "
            f"validation says, and {result['refit_minutes']['least']:.0f} to {result['refit_minutes']['most']:.0f} "
            "for the refit of what it picks). Notebooks other than 05 are not included.")
    budget = result["budget_minutes"]
    if budget is not None:
        verdict = ("inside" if most <= budget else "over" if least > budget else "inside or over, depending on "
                   "what validation picks, with")
        text += f" That is {verdict} the profile's budget of {budget:g} minutes."
    return " ".join([text, *(f"Note: {note}." for note in result["notes"])])


def print_estimate(profile_name: str, data_dir: Path | None = None, output_dir: Path | None = None) -> dict:
    """``run_all.py --estimate``: the estimate for ``profile_name``, printed as a table and a summary."""
    from .console import start_tensorflow_quietly

    start_tensorflow_quietly()  # before anything imports Keras
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
    with pd.option_context("display.width", 200, "display.max_columns", None, "display.max_rows", None):
        print(pd.DataFrame(result["rows"]).set_index("run").to_string())
    print(summary(result))
    return result
