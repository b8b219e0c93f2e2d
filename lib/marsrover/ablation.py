"""Ablations of the improved recipe: change one choice at a time, train on train, judge on validation.

Each :class:`Ablation` names the choice it questions and the spec fields it changes. A variant is
trained exactly like ``improved`` (same seed, epochs and images; a variant of the image size decodes them at
its own size) and scored by its best validation
balanced accuracy, the study's selection metric, so the test split plays no part in the design.

Seed repeats train ``improved`` itself again at other seeds. The range of their scores is a rough
yardstick of chance: a variant inside it is no evidence either way. Outside it is only a hint, because
even a run of the same recipe lands outside the range of n runs 2 times in n + 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .models import ModelSpec

BASE_MODEL = "improved"
# improved's recipe made plain: the seed's flip only, plain cross-entropy, a constant learning rate (the ablation
# plain_recipe, and the model quick_cnn, which keeps its last epoch instead of its best)
PLAIN_RECIPE = {"augmentation": "flip", "instrument_balance": False, "schedule": "constant"}


@dataclass(frozen=True)
class Ablation:
    name: str
    question: str  # the design choice this variant undoes
    changes: dict  # ModelSpec fields (body_options merged into the base's)


ABLATIONS: dict[str, Ablation] = {
    ablation.name: ablation
    for ablation in (
        Ablation("geometric_augmentation", "photometric augmentation only, or also rotation/zoom/shift/vertical flip?",
                 {"augmentation": "strong"}),
        Ablation("flip_only", "photometric augmentation, or the seed's horizontal flip only?",
                 {"augmentation": "flip"}),
        Ablation("no_batch_norm", "batch normalisation after each convolution, or none?",
                 {"body_options": {"norm": "none"}}),
        Ablation("flatten_dense_head", "global average pooling, or flatten + dense 128 as the seeds do?",
                 {"body_options": {"head": "flatten_dense"}}),
        Ablation("group_norm", "batch normalisation, or group normalisation (no running statistics)?",
                 {"body_options": {"norm": "group"}}),
        Ablation("per_image_scaling", "pixels / 255, or each image standardised (exposure-invariant)?",
                 {"input_scaling": "per_image"}),
        Ablation("unweighted_loss", "a loss balanced over instrument x label groups, or plain cross-entropy?",
                 {"instrument_balance": False}),
        Ablation("label_weighting", "a loss balanced over instrument x label groups, or over the labels only "
                 "(the usual class weighting; train's instrument then still predicts its label)?",
                 {"class_weighting": True, "instrument_balance": False}),
        Ablation("constant_learning_rate", "cosine decay, or a constant learning rate?", {"schedule": "constant"}),
        Ablation("weight_averaging", "the raw weights, or an exponential moving average of them (momentum 0.99)?",
                 {"ema_momentum": 0.99}),
        Ablation("closeup_zoom", "photometric augmentation, or also zooming in by up to 50% (MAHLI-like close-ups)?",
                 {"augmentation": "closeup"}),
        Ablation("full_resolution_stem", "a stride-2 stem, or a first convolution at full resolution (4x the cost)?",
                 {"body_options": {"stem_strides": 1}}),
        # A profile that sets its own image size (smoke) keeps these ratios to it: 0.75x and 1.5x the side.
        Ablation("smaller_images", "improved's image size, or 0.75 times its side (96 px for its 128; about half "
                 "the pixels and the cost)?", {"image_size": 96}),
        Ablation("larger_images", "improved's image size, or 1.5 times its side (192 px for its 128; 2.25 times "
                 "the pixels and about 2.25 times the cost)?", {"image_size": 192}),
        # Several choices at once.
        Ablation("plain_recipe", "this recipe, or the same network with the seed's flip only, plain cross-entropy "
                 "and a constant learning rate?", PLAIN_RECIPE),
    )
}


# Every choice of improved's recipe (models.MODEL_SPECS, notebook 04), and the ablations that question it. A choice
# that no ablation of a run questioned is a reason, not evidence: the model card names those.
DESIGN_CHOICES: dict[str, tuple[str, ...]] = {
    "the photometric augmentation": ("flip_only", "geometric_augmentation", "closeup_zoom"),
    "batch normalisation": ("no_batch_norm", "group_norm"),
    "global average pooling": ("flatten_dense_head",),
    "a stride-2 stem": ("full_resolution_stem",),
    "four blocks of 32 to 256 filters": (),
    "dropout of 0.3 before the head": (),
    "pixels / 255": ("per_image_scaling",),
    "the loss balanced over instrument x label groups": ("unweighted_loss", "label_weighting"),
    "the cosine learning-rate decay": ("constant_learning_rate",),
    "Adam at a learning rate of 0.001 in batches of 32": (),
    "the raw weights rather than a moving average of them": ("weight_averaging",),
    "128 px images": ("smaller_images", "larger_images"),
    "15 epochs with the best validation epoch kept": (),
}


def unquestioned_choices(ablations: Sequence[str]) -> list[str]:
    """The choices of :data:`DESIGN_CHOICES` that none of ``ablations`` questions."""
    return [choice for choice, questioned_by in DESIGN_CHOICES.items() if not set(questioned_by) & set(ablations)]


REPEAT_PREFIX = "repeat_seed_"  # a seed repeat's record is ablations/repeat_seed_<seed>.json


def repeat_name(seed: int) -> str:
    return f"{REPEAT_PREFIX}{seed}"


def repeat_seeds(seed_repeats: Sequence[int], seed: int, *, repeat_own_seed: bool = False) -> list[int]:
    """The seeds ``improved`` is trained again at: each of ``seed_repeats`` once, and not ``seed``, where the
    study's own run stands, unless ``repeat_own_seed``."""
    return [repeat for repeat in dict.fromkeys(seed_repeats) if repeat != seed or repeat_own_seed]


def is_repeat(name: str) -> bool:
    return name.startswith(REPEAT_PREFIX)


def row_label(name: str, record: dict) -> str:
    """How a record is named in the ablation table and its figure: ``improved, seed 2`` for a repeat."""
    return f"{BASE_MODEL}, seed {record['config']['seeds']['seed']}" if is_repeat(name) else name


def variant_name(ablation: str) -> str:
    return f"{BASE_MODEL}-{ablation}"


def variant_spec(ablation: str) -> ModelSpec:
    """The improved spec with this ablation's changes, registered so ``train`` can build it by name."""
    from .models import MODEL_SPECS, get_spec  # here, so the report's writer can read records without Keras

    if ablation not in ABLATIONS:
        raise KeyError(f"unknown ablation {ablation!r}; choose from {sorted(ABLATIONS)}")
    base = get_spec(BASE_MODEL)
    spec = improved_with(ABLATIONS[ablation].changes, name=variant_name(ablation),
                         description=ABLATIONS[ablation].question)
    unchanged = [key for key in ABLATIONS[ablation].changes if getattr(base, key) == getattr(spec, key)]
    if unchanged:
        raise ValueError(f"ablation {ablation!r} changes nothing in {unchanged}: the base already has it")
    MODEL_SPECS.setdefault(spec.name, spec)
    return spec


def improved_with(changes: dict, *, name: str, description: str) -> ModelSpec:
    """``improved``'s spec with ``changes`` to its fields (``body_options`` merged into its own), not registered."""
    from .models import get_spec

    base = get_spec(BASE_MODEL)
    changes = dict(changes)
    if "body_options" in changes:
        changes["body_options"] = {**base.body_options, **changes["body_options"]}
    return replace(base, name=name, description=description, **changes)


def variant_image_size(ablation: str, image_size: int) -> int:
    """The side a variant trains at when ``improved`` trains at ``image_size``: the same, or, for a variant of
    the image size, its ratio to ``improved``'s own size applied to ``image_size``."""
    from .models import get_spec

    if ablation not in ABLATIONS or "image_size" not in ABLATIONS[ablation].changes:
        return image_size
    return int(image_size * ABLATIONS[ablation].changes["image_size"] / get_spec(BASE_MODEL).image_size + 0.5)


# improved's network halves the side five times (a stride-2 stem, four poolings): below this, nothing is left to pool
SMALLEST_IMAGE_SIZE = 32


def clear_records(output_dir: Path) -> Path:
    """Empty ``<output_dir>/ablations`` (created if missing), so no record of an earlier run is read as this one's."""
    folder = Path(output_dir) / "ablations"
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        stale.unlink()
    return folder


def run_ablations(names: list[str], train_data: tuple[np.ndarray, np.ndarray],
                  val_data: tuple[np.ndarray, np.ndarray], output_dir: Path, *, image_size: int | None = None,
                  epochs: int | None = None, batch_size: int | None = None, seed: int = 42,
                  jit_compile: bool = False, train_groups: np.ndarray | None = None,
                  seed_repeats: Sequence[int] = (),
                  data_at: Callable[[int], tuple[tuple, tuple]] | None = None,
                  val_groups: np.ndarray | None = None, repeat_own_seed: bool = False) -> dict[str, dict]:
    """Train each variant on ``train_data`` and write ``ablations/<variant>.json`` (history, config, time);
    then ``improved`` itself at each seed of ``seed_repeats`` (``ablations/repeat_seed_<seed>.json``), but
    not at ``seed``, where the study's own run of ``improved`` stands, unless ``repeat_own_seed`` (a check
    with no such run, on another machine).

    ``train_data`` and ``val_data`` hold images at ``image_size``; a variant of the image size trains on
    ``data_at(size)``, the same images decoded at its own size (:func:`variant_image_size`).
    ``train_groups`` (each training image's instrument x label group) is needed by the improved recipe's
    instrument-balanced loss. Given ``val_groups``, each validation image's group in ``val_data``'s order (as
    ``train_groups`` for training), a record also keeps, under the same key, the validation accuracy per group
    at the epoch the run kept (:func:`group_accuracies`).
    """
    from .evaluation import predict_surface_probability
    from .provenance import run_environment
    from .training import release_models, train

    repeats = repeat_seeds(seed_repeats, seed, repeat_own_seed=repeat_own_seed)
    if len(repeats) != len(seed_repeats):  # safe to go on: the study's own run is that seed already
        print(f"Seed repeats {list(seed_repeats)}: the study's seed {seed} and seeds named twice are trained once; "
              f"repeating {repeats}")
    if val_groups is not None and len(val_groups) != len(val_data[1]):
        raise ValueError(f"val_groups names {len(val_groups)} images; the validation split has {len(val_data[1])}")
    folder = clear_records(output_dir)
    size = image_size or train_data[0].shape[1]
    sizes = {ablation: variant_image_size(ablation, size) for ablation in names}
    # Refused before any training, not after the variants ahead of them.
    if data_at is None and any(other != size for other in sizes.values()):
        raise ValueError(f"variants of the image size ({sorted(set(sizes.values()) - {size})} px) need data_at")
    if too_small := {name: other for name, other in sizes.items() if other < SMALLEST_IMAGE_SIZE}:
        raise ValueError(f"images too small for improved's network (at least {SMALLEST_IMAGE_SIZE} px): "
                         + ", ".join(f"{name} at {other} px" for name, other in too_small.items()))
    runs = [(ablation, variant_spec(ablation).name, seed, ABLATIONS[ablation].question, ABLATIONS[ablation].changes)
            for ablation in names]
    runs += [(repeat_name(repeat), BASE_MODEL, repeat,
              f"the same recipe at seed {repeat}: how far does the seed alone move the score?", {})
             for repeat in repeats]
    records = {}
    for name, model, run_seed, question, changes in runs:
        print(f"\n=== ablation {name}: {question} ===")
        run_size = sizes.get(name, size)
        fit_data, check_data = (train_data, val_data) if run_size == size else data_at(run_size)
        if "image_size" in changes:  # the size trained at, in a profile that sets its own too
            changes = {**changes, "image_size": run_size}
        result = train(model, fit_data, check_data, image_size=run_size, epochs=epochs,
                       batch_size=batch_size, seed=run_seed, jit_compile=jit_compile, weights=None, verbose=0,
                       train_groups=train_groups)
        record = {"ablation": name, "question": question, "changes": changes, "config": result.config,
                  "history": result.history, "train_seconds": round(result.seconds, 2),
                  "environment": run_environment()}
        if val_groups is not None:  # the kept epoch's weights, the ones its best score came from
            record["val_groups"] = group_accuracies(predict_surface_probability(result.model, check_data[0]),
                                                    check_data[1], val_groups)
        del fit_data, check_data
        (folder / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
        records[name] = record
        del result
        release_models()
    return records


def group_accuracies(p_surface: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> list[dict]:
    """Accuracy per group (e.g. ``MAHLI · Surface``) of predictions ``p_surface >= 0.5``, as records sorted by
    group (:func:`marsrover.evaluation.group_records`); a diverged run's groups have no score (NaN)."""
    from .evaluation import group_records

    return group_records(pd.DataFrame({"group": np.asarray(groups, dtype=object), "label": np.asarray(labels),
                                       "p_surface": np.asarray(p_surface, dtype=float)}), "group")


def _best(history: dict) -> tuple[float, int | None]:
    """The best validation balanced accuracy and its epoch; NaN epochs (a diverged run) are skipped."""
    scores = np.asarray(history["val_balanced_accuracy"], dtype=float)
    if np.isnan(scores).all():
        return float("nan"), None
    return float(np.nanmax(scores)), int(np.nanargmax(scores)) + 1


SETTLED_EPOCHS = 5  # the best epoch can be a lucky spike; the mean of the last epochs is where a run settles


def _settled(history: dict) -> float:
    """The mean validation balanced accuracy of the last epochs (NaN if any of them diverged)."""
    return float(np.mean(np.asarray(history["val_balanced_accuracy"], dtype=float)[-SETTLED_EPOCHS:]))


# Two views of a run's validation curve, each placed against the same view of improved's seeds.
VIEWS = {"best": lambda history: _best(history)[0], "settled": _settled}


def _row(question: str, history: dict, seconds, base_score: float | None = None) -> dict:
    scores = history["val_balanced_accuracy"]
    best, epoch = _best(history)
    return {"question": question, "best val balanced accuracy": best, "at epoch": epoch,
            f"mean of last {SETTLED_EPOCHS} epochs": _settled(history),
            "last-epoch val balanced accuracy": scores[-1],
            "change vs improved": 0.0 if base_score is None else best - base_score, "seconds": seconds}


def seed_range(base_run: dict, records: dict[str, dict], view: str = "best") -> tuple[float, float] | None:
    """The lowest and highest score of ``improved`` over its seeds (the study's run and its seed repeats),
    on ``view`` (``best``: the best epoch; ``settled``: the mean of the last epochs); None without a repeat."""
    repeats = [record for name, record in records.items() if is_repeat(name)]
    if not repeats:
        return None
    return spread([VIEWS[view](run["history"]) for run in [base_run, *repeats]])


def spread(scores) -> tuple[float, float]:
    """The lowest and highest of ``scores``, NaNs (diverged runs) left out; NaN ends when all are NaN."""
    scores = np.asarray(scores, dtype=float)
    if np.isnan(scores).all():  # every run diverged: a range with no ends
        return float("nan"), float("nan")
    return float(np.nanmin(scores)), float(np.nanmax(scores))


# Where a variant's score lies against the range of improved's seeds on the same view.
BELOW, WITHIN, ABOVE, NO_SCORE = "below every seed", "within the seeds", "above every seed", "n/a (no score)"
PLACE_WORDS = {BELOW: "below", WITHIN: "within", ABOVE: "above", NO_SCORE: "n/a"}  # in a sentence or a cell


def _against(score: float, spread: tuple[float, float]) -> str:
    low, high = spread
    if np.isnan([score, low, high]).any():  # a diverged variant, or no seed with a score
        return NO_SCORE
    return BELOW if score < low else ABOVE if score > high else WITHIN


HELPS, HURTS, NO_EVIDENCE, MIXED = ("a hint that the choice helps", "a hint that the choice hurts",
                                    "no evidence either way", "mixed: the two views disagree")


def reading(first: str, second: str) -> str:
    """What a variant's placements on two views (its best epoch and where it settled, or its mean and worst
    validation group) say about the choice it undoes: a hint only when both agree (a variant below every
    seed scored worse without the choice)."""
    if NO_SCORE in (first, second):
        return NO_SCORE
    if first != second:
        return MIXED
    return {BELOW: HELPS, ABOVE: HURTS, WITHIN: NO_EVIDENCE}[first]


def ablation_table(base_run: dict, records: dict[str, dict]) -> pd.DataFrame:
    """The improved run, its seed repeats and each variant: best validation balanced accuracy, its epoch,
    where the run settled (mean of its last epochs), the change of the best against improved, and the time.

    With seed repeats, two columns place each variant's best and its settled score against the range of
    improved's seeds on the same view, and a third reads them together (a rough yardstick: see the
    module's docstring).
    """
    base_score, _ = _best(base_run["history"])
    rows = {f"{BASE_MODEL} (as chosen)": _row("", base_run["history"], base_run.get("train_seconds"))}
    for name, record in sorted(records.items(), key=lambda item: not is_repeat(item[0])):  # repeats first
        rows[row_label(name, record)] = _row(record["question"], record["history"], record["train_seconds"],
                                             base_score)
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")
    evidence = seed_evidence(base_run, records)
    if evidence:
        columns = ["best against the seeds", f"last {SETTLED_EPOCHS} against the seeds", "reading"]
        table[columns] = ""
        for variant in evidence["variants"]:
            table.loc[variant["variant"], columns] = [variant["best_against_seeds"], variant["settled_against_seeds"],
                                                      variant["reading"]]
    return table


def load_records(output_dir: Path) -> dict[str, dict]:
    """The ablation and seed-repeat records notebook 05 wrote under ``<output_dir>/ablations``; {} without."""
    folder = Path(output_dir) / "ablations"
    return {path.stem: json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))}


def seed_evidence(base_run: dict, records: dict[str, dict]) -> dict | None:
    """What the seed repeats say about the design: ``improved``'s scores at each seed on both views (the
    study's run first; NaN where a run diverged), their ranges, and each variant's scores placed against
    them and read together; None without a repeat, since then nothing says how far chance moves a score."""
    ranges = {view: seed_range(base_run, records, view) for view in VIEWS}
    if ranges["best"] is None:
        return None
    runs = [base_run, *(record for name, record in records.items() if is_repeat(name))]
    variants = []
    for name, record in records.items():
        if is_repeat(name):
            continue
        scores = {view: VIEWS[view](record["history"]) for view in VIEWS}
        places = {view: _against(scores[view], ranges[view]) for view in VIEWS}
        variants.append({"variant": name, "question": record["question"], **scores,
                         **{f"{view}_against_seeds": place for view, place in places.items()},
                         "reading": reading(places["best"], places["settled"])})
    return {"seeds": [{"seed": run["config"]["seeds"]["seed"],
                       **{view: VIEWS[view](run["history"]) for view in VIEWS}} for run in runs],
            "ranges": {view: list(spread) for view, spread in ranges.items()},
            "settled_epochs": SETTLED_EPOCHS, "variants": variants}


GROUP_VIEWS = {"mean": "mean of the groups", "worst": "worst group"}
WORST_GROUP_NAME = "worst group's name"
SELECTION_COLUMN = "best val balanced accuracy"  # the selection metric, beside the groups


def _group_summary(groups: list[dict], best_score: float) -> dict:
    """One row of :func:`groups_table`: each group's accuracy, their mean and the worst of them (NaN, with no
    name, when a group has no score), and the run's selection metric."""
    accuracies = {row["group"]: row["accuracy"] for row in groups}
    scored = not np.isnan(list(accuracies.values())).any()
    worst = min(accuracies, key=accuracies.get) if scored else None
    return {**accuracies, GROUP_VIEWS["mean"]: float(np.mean(list(accuracies.values()))),
            GROUP_VIEWS["worst"]: accuracies[worst] if scored else float("nan"),
            WORST_GROUP_NAME: worst or "n/a (no score)", SELECTION_COLUMN: best_score}


def groups_table(base_groups: list[dict], base_score: float, records: dict[str, dict]) -> pd.DataFrame:
    """One row per run: ``improved`` (``base_groups`` and ``base_score``, the study's run), its seed repeats and
    each variant, with the validation accuracy per instrument x label group at the epoch each kept, the mean
    and the worst of the groups, and the best validation balanced accuracy (the selection metric).

    Balanced accuracy hides trades between groups (a run can gain on MAHLI Surface and lose on every Rover
    group); this shows them. Records without ``val_groups`` (written before they were kept) are left out.
    With repeats, the variants' mean and worst group are placed against the range of improved's seeds on
    the same view and read together, as :func:`ablation_table` does with the best epoch and the last ones.
    """
    base_label = f"{BASE_MODEL} (as chosen)"
    rows, seed_rows = {base_label: _group_summary(base_groups, base_score)}, [base_label]
    kept = {name: record for name, record in records.items() if record.get("val_groups")}
    for name, record in sorted(kept.items(), key=lambda item: not is_repeat(item[0])):  # repeats first
        rows[row_label(name, record)] = _group_summary(record["val_groups"], _best(record["history"])[0])
        if is_repeat(name):
            seed_rows.append(row_label(name, record))
    table = pd.DataFrame.from_dict(rows, orient="index").rename_axis("variant")
    if len(seed_rows) > 1:
        columns = [f"{view} against the seeds" for view in GROUP_VIEWS.values()]
        table[columns + ["reading"]] = ""
        ranges = {view: spread(table.loc[seed_rows, view]) for view in GROUP_VIEWS.values()}
        for label in table.index.difference(seed_rows, sort=False):
            places = [_against(table.loc[label, view], ranges[view]) for view in GROUP_VIEWS.values()]
            table.loc[label, columns + ["reading"]] = [*places, reading(*places)]
    return table
