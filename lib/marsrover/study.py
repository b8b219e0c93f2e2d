"""The steps the notebooks share, so each notebook is a few calls and its narrative.

Notebook 01 calls :func:`acquire`; every later notebook calls :func:`load_index` and
:func:`split_arrays`; 05 calls :func:`train_models`; 06 calls :func:`score_study`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from . import acquisition, atomic, config, dataset, reporting
from .image_cache import cached_images
from .leakage import ORIGINAL_SPLIT, random_split


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


TRAINING_COVERAGE_FILE = reporting.TRAINING_COVERAGE_FILE
# (what a model is trained on, what it is scored on): the train-only runs, and the refits on train+val
COVERAGE_VIEWS = ((("train",), "val"), (("train",), "test"), (("train", "val"), "test"))


def training_coverage(index: pd.DataFrame, output_dir: Path | None = None) -> list[dict]:
    """For each of ``COVERAGE_VIEWS``, how much of the scored split is of a group (MSL class x instrument)
    that the training splits barely hold (:func:`evaluation.rarely_trained`); written to
    ``training_coverage.json`` in ``output_dir`` when given."""
    from .evaluation import rarely_trained

    views = [{"training": "+".join(training), "evaluated": evaluated,
              **rarely_trained(index[index["split"] == evaluated], index[index["split"].isin(training)])}
             for training, evaluated in COVERAGE_VIEWS]
    if output_dir is not None:
        atomic.write_text(Path(output_dir) / TRAINING_COVERAGE_FILE, json.dumps(views, indent=2))
    return views


def coverage_table(views: list[dict]) -> pd.DataFrame:
    """:func:`training_coverage` as a table: one row per view, the rarely trained images and their groups."""
    return pd.DataFrame([{"trained on": view["training"], "scored on": view["evaluated"], "images": view["n"],
                          f"of a group with < {view['fewer_than']} training images": view["rare"],
                          "share": None if view["share"] is None else round(view["share"], 3), "groups": len(view["groups"]),
                          "largest of them (images scored, trained on)": "; ".join(
                              f"{group['group']} ({group['n']}, {group['trained_on']})" for group in view["groups"][:4])}
                         for view in views]).set_index(["trained on", "scored on"])


def load_index(data_dir: str | Path | None = None, *, max_images_per_split: int | None = None,
               seed: int = 42) -> tuple[config.DataPaths, pd.DataFrame]:
    """The index notebook 01 built, subsampled as the profile asks."""
    paths = config.data_paths(data_dir)
    if not paths.index_csv.exists():
        option = f" --data-dir {data_dir}" if data_dir is not None else ""
        raise FileNotFoundError(f"{paths.index_csv} does not exist: run `python -m marsrover data{option}` "
                                "(or notebooks/01_acquisition.ipynb) first")
    index = dataset.subsample(dataset.read_index(paths.index_csv), max_images_per_split, seed)
    return paths, index


def split_arrays(paths: config.DataPaths, index: pd.DataFrame, split: str, size: int, *,
                 progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split at one size, from the on-disk cache.

    An index whose splits were redrawn (the random 80/20 split, forward validation) keeps each row's
    official split in ``original_split`` and the official splits' row order; such rows are copied out
    of their official split's cached array rather than decoded again into a cache file of their own.
    """
    rows = index[index["split"] == split].reset_index(drop=True)
    labels = rows["label"].to_numpy()
    official = index[ORIGINAL_SPLIT].fillna(index["split"]).to_numpy() if ORIGINAL_SPLIT in index else None
    chosen = (index["split"] == split).to_numpy()
    if official is None or (chosen.any() and (official[chosen] == split).all()
                            and chosen.sum() == (official == split).sum()):
        # An official split (or one a redrawn index left whole): its own cache file, loaded whole.
        return cached_images(rows, paths.images_root, size, paths.cache, progress=progress), labels
    cache_row = index.groupby(official, sort=False).cumcount().to_numpy()  # place in its official split's cache
    sources, source_rows = official[chosen], cache_row[chosen]
    images = np.empty((len(rows), size, size, 3), dtype=np.uint8)  # stays empty for a split with no rows
    for source in pd.unique(sources):
        official_rows = index[official == source].reset_index(drop=True)
        cached = cached_images(official_rows, paths.images_root, size, paths.cache, progress=progress, mmap=True)
        take = np.flatnonzero(sources == source)
        for start in range(0, len(take), _COPY_CHUNK):  # indexing a memory map copies: keep each copy small
            part = take[start:start + _COPY_CHUNK]
            images[part] = cached[source_rows[part]]
    return images, labels


def fit_arrays(paths: config.DataPaths, index: pd.DataFrame, fit_splits: Sequence[str], size: int, *,
               progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, instrument x label groups) of the splits a run is fitted on, in that order."""
    images, labels = split_arrays(paths, index, fit_splits[0], size, progress=progress)
    if len(fit_splits) > 1:  # one array for train+val, without keeping the parts alive beside it
        parts = [(images, labels)] + [split_arrays(paths, index, split, size, progress=progress)
                                      for split in fit_splits[1:]]
        images, labels = np.concatenate([part for part, _ in parts]), np.concatenate([part for _, part in parts])
        del parts
    return images, labels, np.concatenate([split_groups(index, split) for split in fit_splits])


def split_groups(index: pd.DataFrame, split: str) -> np.ndarray:
    """Each image's instrument x label group (e.g. ``MAHLI · Surface``), in :func:`split_arrays`' order."""
    from .evaluation import instrument_label_group

    return instrument_label_group(index[index["split"] == split]).to_numpy()


_COPY_CHUNK = 256
REFIT_SUFFIX = reporting.REFIT_SUFFIX
RANDOM_SPLIT_SUFFIX = "_random_split"
TRAIN_ONLY = "train only"  # the kind of run that competes for the headline, chosen on validation
FORWARD_SUFFIX = "_forward"
EARLY_VAL = "val_early"  # forward validation's name for the earlier validation sols, trained on
FORWARD_FIT_SPLITS = ("train", EARLY_VAL)  # what a forward-validation run is fitted on
ENSEMBLE_JOIN = "+"  # an average of runs is named by its members, e.g. "improved+seed_blog" (a file name too)
SELECTION_RUNS = reporting.SELECTION_RUNS  # records of runs that only choose a setting; never scored on test
# The bootstrap intervals resample whole sols: the official split is cut by sol, and one sol's images are
# often frames of one scene (evaluation.bootstrap_ci).
CI_CLUSTER = "sol"
REFIT_BUDGET_FILE = "refit_budget.json"  # each average's estimated refit cost, when the profile caps it


def random_split_index(index: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The seed blog's protocol: train and val pooled, then split 80/20 at random (test kept aside)."""
    pooled = index[index["split"].isin(["train", "val"])]
    return pd.concat([random_split(pooled, val_fraction=0.2, seed=seed), index[index["split"] == "test"]],
                     ignore_index=True)


def forward_validation_index(index: pd.DataFrame, held_fraction: float = 0.5) -> pd.DataFrame | None:
    """Forward validation inside the validation split, the way the refit is used: trained up to a sol,
    judged on the sols after it.

    The validation split's earliest sols, up to the one that brings them to ``1 - held_fraction`` of its
    images, are relabelled ``val_early`` (to train on, beside train); the later sols stay ``val``. Whole
    sols stay on one side. None when the validation split has too few sols to cut.
    """
    val = index[index["split"] == "val"]
    per_sol = val.groupby("sol").size().sort_index()
    if len(per_sol) < 2:
        return None
    cut = int(np.argmax(per_sol.cumsum().to_numpy() >= len(val) * (1 - held_fraction)))
    early_sols = per_sol.index[:cut + 1]
    if len(early_sols) == len(per_sol):
        return None
    forward = index.copy()
    forward[ORIGINAL_SPLIT] = forward["split"]
    forward.loc[(forward["split"] == "val") & forward["sol"].isin(early_sols), "split"] = EARLY_VAL
    return forward


def _fit_and_save(name: str, run_name: str, paths, index, output_dir, *, fit_splits, val_split, size, epochs,
                  batch_size, seed, jit_compile, weights, records: str = "runs", save_model: bool = True,
                  config_notes: dict | None = None, recompute_batch_norm: bool = False) -> dict:
    from .training import release_models, save_run, train

    print(f"\n=== {run_name}: {name} at {size}px on {'+'.join(fit_splits)} ===")
    *fit_data, fit_groups = fit_arrays(paths, index, fit_splits, size)
    val_data = split_arrays(paths, index, val_split, size) if val_split else None
    result = train(name, tuple(fit_data), val_data, image_size=size, epochs=epochs, batch_size=batch_size,
                   seed=seed, jit_compile=jit_compile, weights=weights, run_name=run_name,
                   train_groups=fit_groups, recompute_batch_norm=recompute_batch_norm)
    result.config.update({"fit_on": "+".join(fit_splits), **(config_notes or {})})
    save_run(result, output_dir, records=records, save_model=save_model)
    del result, fit_data, fit_groups, val_data
    release_models()
    return reporting.load_json(Path(output_dir) / records / f"{run_name}.json")


def chooses_refit_length(name: str) -> bool:
    """Whether the refit of model ``name`` trains a forward-validation run first to choose its epochs: a
    recipe that keeps its best epoch does; one that keeps its last (the seeds, ``quick_cnn``) does not."""
    from .models import get_spec

    return get_spec(name).restore_best


def refit_epochs(name: str, train_only_run: dict, paths, index, output_dir, *, size: int,
                 epochs: int | None, **common) -> tuple[int, str, dict | None]:
    """How many epochs to refit ``name`` on train+val, how that number was chosen, and the record of
    the run that chose it (None when the train-only run's own best epoch was used).

    The train-only run's best epoch measures a jump from train's early sols to validation's later ones;
    the refit instead trains on every sol up to the test split's. A recipe that keeps its last epoch (the
    seed models, as published, and ``quick_cnn``) is refitted for its own number of epochs. Otherwise a forward-validation run (see
    :func:`forward_validation_index`) trains the model on train plus the earlier validation sols and
    picks the best epoch on the later ones; its record goes to ``selection/``, not ``runs/``, so it is
    never scored on test. Without enough validation sols, the train-only run's best epoch is used.
    """
    if not chooses_refit_length(name):
        recipe_epochs = train_only_run["config"]["epochs"]
        return recipe_epochs, "recipe's own number of epochs (the recipe keeps its last epoch)", None
    forward_index = forward_validation_index(index)
    if forward_index is None:
        train_only = train_only_run["config"]
        return (train_only["best_epoch_on_val"] or train_only["epochs"],
                "best epoch of the train-only run on validation (too few validation sols to split)", None)
    held = forward_index[forward_index["split"] == "val"]
    how = (f"best epoch of forward validation: trained on train + validation sols up to "
           f"{int(forward_index.loc[forward_index['split'] == EARLY_VAL, 'sol'].max())}, "
           f"judged on validation sols {int(held['sol'].min())}-{int(held['sol'].max())}")
    forward = _fit_and_save(name, name + FORWARD_SUFFIX, paths, forward_index, output_dir,
                            fit_splits=FORWARD_FIT_SPLITS, val_split="val", size=size, epochs=epochs,
                            records=SELECTION_RUNS, save_model=False,  # it only chooses the refit's length
                            config_notes={"purpose": "refit length: " + how}, **common)
    return forward["config"]["best_epoch_on_val"] or forward["config"]["epochs"], how, forward


BEST_ON_VAL = "best_on_val"


def kept_val_balanced_accuracy(run: dict) -> float | None:
    """Validation balanced accuracy of the weights a run kept: its best epoch, or its last one."""
    history = run.get("history", {}).get("val_balanced_accuracy")
    if not history:
        return None
    best_kept = str(run.get("config", {}).get("kept_weights", "")).endswith("(best on val)")
    return max(history) if best_kept else history[-1]


def ranked_on_validation(scores: dict[str, float]) -> list[str]:
    """The runs from the highest validation score down, to 6 places; ties (common on tiny data) A-Z."""
    return sorted(scores, key=lambda run: (-round(scores[run], 6), run))


def best_on_validation(scores: dict[str, float]) -> str:
    """The run with the highest validation score; ties go to the first name A-Z (:func:`ranked_on_validation`)."""
    return ranked_on_validation(scores)[0]


def tied_with(scores: dict[str, float], name: str) -> list[str]:
    """The other runs whose score equals ``name``'s as :func:`best_on_validation` compares them (6 places), A-Z."""
    return sorted(run for run in scores if run != name and round(scores[run], 6) == round(scores[name], 6))


def tie_words(tied: Sequence[str], *, rule: str = "the first name A-Z", quote: str = "") -> str:
    """``", tied with 2 others (a, b); ties go to the first name A-Z"``, or empty without ties."""
    if not tied:
        return ""
    names = ", ".join(f"{quote}{run}{quote}" for run in tied[:3]) + (", ..." if len(tied) > 3 else "")
    return f", tied with {len(tied)} other{'s' if len(tied) > 1 else ''} ({names}); ties go to {rule}"


def average_members_of(name: str) -> list[str]:
    """The runs an average's name lists (``"a+b"`` -> ``["a", "b"]``); a single run's name -> ``[name]``."""
    return name.split(ENSEMBLE_JOIN)


def validation_scores(runs: dict[str, dict], paths: config.DataPaths, index: pd.DataFrame, output_dir: Path,
                      *, smallest: int = 2) -> dict[str, float]:
    """Validation balanced accuracy of each validated train-only run (its kept weights) and of every
    average of ``smallest`` or more of them: their P(Surface) averaged, as the average that
    :func:`save_average` would save computes it (images decoded at its largest model's size, resized inside
    for each smaller one), so that notebook 06 scores the saved average as it was chosen. (The run at 7289022
    chose with each model on its own decode: 0.9486 there, against 0.9494 for the saved average.)
    """
    from sklearn.metrics import balanced_accuracy_score

    scored = {run: kept_val_balanced_accuracy(record) for run, record in runs.items()}
    scored = {run: score for run, score in scored.items() if score is not None}
    if len(scored) < smallest:
        return scored
    sizes = {run: int(runs[run]["config"]["image_size"]) for run in scored}
    probabilities, labels = validation_probabilities(sizes, paths, index, output_dir)
    for count in range(smallest, len(sizes) + 1):
        for members in combinations(sorted(sizes), count):  # the single runs only, not averages already scored
            average = average_probability(members, sizes, probabilities)
            scored[ENSEMBLE_JOIN.join(members)] = float(balanced_accuracy_score(labels, (average >= 0.5).astype(int)))
    return scored


def validation_probabilities(sizes: dict[str, int], paths: config.DataPaths, index: pd.DataFrame,
                             output_dir: Path) -> tuple[dict[tuple[str, int], np.ndarray], np.ndarray]:
    """Each saved run's P(Surface) on validation at its own image size (``sizes``) and at every larger one among
    them (``{(run, size): probabilities}``, as an average with a larger model would feed it), and the labels."""
    arrays = {size: split_arrays(paths, index, "val", size, progress=False) for size in sorted(set(sizes.values()))}
    probabilities = probabilities_at_sizes(sizes, output_dir, lambda size: {"val": arrays[size][0]})
    return {key: by_split["val"] for key, by_split in probabilities.items()}, next(iter(arrays.values()))[1]


def probabilities_at_sizes(sizes: dict[str, int], output_dir: Path, images_at: Callable[[int], dict[str, np.ndarray]],
                           *, larger_only: bool = False) -> dict[tuple[str, int], dict[str, np.ndarray]]:
    """Each saved run's P(Surface) (``{(run, size): {split: probabilities}}``) on the images ``images_at(size)``
    gives, at every size in ``sizes`` from its own up (only those above its own if ``larger_only``): at a larger
    size it takes the images resized inside, as in an average of models that takes that size (:func:`save_average`).
    """
    from .evaluation import predict_surface_probability
    from .inference import load_model
    from .models import at_input_size
    from .training import release_models

    probabilities = {}
    for run in sorted(sizes):
        targets = sorted({size for size in sizes.values() if size > sizes[run] or (size == sizes[run] and not larger_only)})
        if not targets:
            continue
        model = load_model(Path(output_dir) / "models" / f"{run}.keras")
        for size in targets:
            sized = at_input_size(model, size)
            probabilities[run, size] = {split: predict_surface_probability(sized, images)
                                        for split, images in images_at(size).items()}
        del model
        release_models()
    return probabilities


def average_probability(members: Sequence[str], sizes: dict[str, int],
                        probabilities: dict[tuple[str, int], np.ndarray]) -> np.ndarray:
    """The P(Surface) of the average of ``members`` that :func:`save_average` would save: each member's at the
    largest member's size (:func:`validation_probabilities`), averaged."""
    size = max(sizes[member] for member in members)
    return np.mean([probabilities[member, size] for member in members], axis=0)


def estimated_refit_seconds(members: Sequence[str], runs: dict[str, dict], index: pd.DataFrame) -> float:
    """A rough cost, on this machine, of refitting ``members`` on train+val, from their train-only runs.

    Each member's training seconds are scaled by the images its refit fits on (train+val against train),
    and a recipe that chooses its refit's length (:func:`chooses_refit_length`) adds its forward-validation
    run on train plus the earlier validation sols. Rough: it ignores that the train-only run also paid for a
    validation pass every epoch, that such a refit often stops before the recipe's last epoch, and that a
    refit that recomputes its batch-norm statistics adds about one inference pass over its images. A member
    without a recorded training time makes the estimate infinite (unknown, so never within a budget).
    """
    n_train, n_val = int((index["split"] == "train").sum()), int((index["split"] == "val").sum())
    forward = None
    seconds = 0.0
    for member in members:
        spent = runs[member].get("train_seconds")
        if not spent:
            return math.inf
        seconds += spent * (n_train + n_val) / n_train
        if chooses_refit_length(member):
            forward = forward_validation_index(index) if forward is None else forward
            if forward is not None:
                seconds += spent * (n_train + int((forward["split"] == EARLY_VAL).sum())) / n_train
    return seconds


def within_refit_budget(scores: dict[str, float], runs: dict[str, dict], index: pd.DataFrame,
                        budget_minutes: float | None, *, record_to: Path | None = None,
                        refitted_anyway: Sequence[str] = ()) -> dict[str, float]:
    """The candidates of ``scores`` that may win the selection: every single run, and each average whose
    refit (:func:`estimated_refit_seconds`) fits ``budget_minutes`` (None: every average). Models in
    ``refitted_anyway`` (named in the profile's ``refit``) cost an average nothing: they are refitted whatever wins.

    A single run always competes, as the protocol reports the best model refitted; the averages are the
    study's own addition, and refitting all their models can add most of an hour to the profile. The
    averages left out are printed with their estimates, best on validation first. The budget only filters
    the candidates for ``"best_on_val"``: an average named in ``refit`` is built whatever it costs.
    ``record_to`` (a JSON path) keeps every average's estimate, as this machine's speed decides them.
    """
    if budget_minutes is None:
        return dict(scores)
    kept, left_out, estimates = {}, {}, {}
    for name, score in scores.items():
        members = average_members_of(name)
        if len(members) == 1:
            kept[name] = score
            continue
        minutes = estimated_refit_seconds([m for m in members if m not in refitted_anyway], runs, index) / 60
        if minutes <= budget_minutes:
            kept[name] = score
        else:
            left_out[name] = (score, minutes)
        estimates[name] = {"val_balanced_accuracy": round(float(score), 4), "competes": minutes <= budget_minutes,
                           "estimated_refit_minutes": None if math.isinf(minutes) else round(minutes, 1)}
    if record_to is not None:
        anyway = {"refitted_anyway": sorted(refitted_anyway)} if refitted_anyway else {}
        atomic.write_text(Path(record_to), json.dumps({"budget_minutes": budget_minutes, **anyway,
                                                       "averages": estimates}, indent=2) + "\n")
    if left_out:
        print(f"Averages left out of the selection: refitting their models would take longer than the "
              f"{budget_minutes:g}-minute budget (estimated from their train-only runs on this machine); "
              "the best of the rest on validation is chosen below:")
        for name, (score, minutes) in sorted(left_out.items(), key=lambda item: (-item[1][0], item[0])):
            cost = "unknown (a model has no training time)" if math.isinf(minutes) else f"about {minutes:.0f} min"
            print(f"  {name}: validation balanced accuracy {score:.3f}, refit {cost}")
    return kept


def resolve_refit(refit: list[str] | tuple[str, ...], runs: dict[str, dict],
                  scores: dict[str, float] | None = None) -> tuple[list[str], list[str]]:
    """The models to refit, and the averages to build from them.

    ``"best_on_val"`` in ``refit`` stands for the winner on validation among ``scores`` (default: each
    run's kept validation balanced accuracy). A name of an average (``"a+b"``), named or the winner,
    stands for each of its models, and the average is built (:func:`save_average`).
    """
    names, averages = [], []
    for name in refit:
        if name == BEST_ON_VAL:
            scored = scores if scores is not None else {
                run: score for run, record in runs.items() if (score := kept_val_balanced_accuracy(record)) is not None}
            if not scored:
                print("No refit of the best model: no run was validated")
                continue
            name = best_on_validation(scored)
            print(f"Best on validation: {name} (balanced accuracy {scored[name]:.3f}{tie_words(tied_with(scored, name))}); "
                  f"{'each of its models is' if ENSEMBLE_JOIN in name else 'it is'} refitted on train+val")
        members = average_members_of(name)
        if len(members) > 1:
            if len(set(members)) != len(members):
                raise ValueError(f"average {name!r} names a model twice")
            name = ENSEMBLE_JOIN.join(sorted(members))  # one name per average, as validation_scores spells it
            members = average_members_of(name)
            if name not in averages:
                averages.append(name)
        names.extend(member for member in members if member not in names)
    return names, averages


def save_average(members: list[str], run_name: str, output_dir: Path, runs: dict[str, dict]) -> dict:
    """Build the average of saved runs ``members`` (:func:`models.build_average`) and save it as run ``run_name``."""
    from .inference import load_model
    from .models import build_average
    from .provenance import run_environment
    from .training import release_models

    output_dir = Path(output_dir)
    model = build_average([load_model(output_dir / "models" / f"{member}.keras") for member in members], run_name)
    model.save(output_dir / "models" / f"{run_name}.keras")
    record = {"config": {"model": "average", "run": run_name, "members": members,
                         "image_size": int(model.input_shape[1]),
                         "fit_on": runs[members[0]]["config"].get("fit_on"),
                         "kept_weights": "each member's own", "batch_norm_statistics": "each member's own"},
              "train_seconds": round(sum(runs[member].get("train_seconds") or 0 for member in members), 2),
              "environment": run_environment()}
    (output_dir / "runs" / f"{run_name}.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"Saved {run_name}: the average of {', '.join(members)} at {record['config']['image_size']} px")
    del model
    release_models()
    return record


def train_models(model_names: list[str], paths: config.DataPaths, index: pd.DataFrame, output_dir: Path, *,
                 image_size: int | None, epochs: int | None, batch_size: int | None, seed: int,
                 jit_compile: bool = False, refit: list[str] = (), leakage_model: str | None = None,
                 transfer_weights: str | None = "imagenet",
                 average_refit_budget_minutes: float | None = None,
                 refit_recomputes_batch_norm: bool = False) -> dict[str, dict]:
    """Every training run of the study, saved under ``models/`` and ``runs/``.

    1. Each model on the train split, watching the validation split (selection happens there only).
    2. Each model in ``refit`` again on train+val, for the number of epochs chosen on val by forward
       validation, or its recipe's own for a recipe that keeps its last epoch (:func:`refit_epochs`);
       ``"best_on_val"`` in ``refit`` stands for the model that step 1 found best on validation, or, when an average of step 1's models scores best there
       (:func:`validation_scores`), for each of its models; that average and the average of their
       refits are then saved as runs of their own (:func:`save_average`). An average competes only if
       refitting those of its models that ``refit`` does not name anyway fits ``average_refit_budget_minutes``
       (:func:`within_refit_budget`). With
       ``refit_recomputes_batch_norm``, a refit ends by recomputing its batch-norm statistics over the
       images it was fitted on, weighted by instrument x label group (it has no validation split to tell
       stale running statistics; ``training.train``).
    3. ``leakage_model`` on the seed blog's random 80/20 split of train+val, to measure how much a
       random split flatters the validation score.
    A pretrained model whose weights cannot be loaded is recorded as skipped, with the reason.
    """
    from .models import PretrainedWeightsUnavailable, get_spec

    output_dir = Path(output_dir)
    for stale in [*(output_dir / "runs").glob("*.json"), *(output_dir / SELECTION_RUNS).glob("*.json"),
                  *(output_dir / "models").glob("*.keras")]:
        # this notebook defines the runs that 06 scores and the report times: none left from an earlier setup
        # (a forward run of a model this run does not refit would add its minutes to this run's)
        stale.unlink()
    (output_dir / REFIT_BUDGET_FILE).unlink(missing_ok=True)  # nor an earlier budget's estimates
    runs: dict[str, dict] = {}
    common = {"batch_size": batch_size, "seed": seed, "jit_compile": jit_compile, "weights": transfer_weights}
    for name in model_names:
        size = image_size or get_spec(name).image_size
        try:
            runs[name] = _fit_and_save(name, name, paths, index, output_dir, fit_splits=["train"], val_split="val",
                                       size=size, epochs=epochs, **common)
        except PretrainedWeightsUnavailable as error:
            print(f"Skipping {name}: {error}")
            runs[name] = {"skipped": str(error), "config": {"model": name, "run": name}}
            (output_dir / "runs").mkdir(parents=True, exist_ok=True)
            (output_dir / "runs" / f"{name}.json").write_text(json.dumps(runs[name], indent=2))
    scores = validation_scores(runs, paths, index, output_dir) if BEST_ON_VAL in refit else None
    if scores is not None:
        named, _ = resolve_refit([name for name in refit if name != BEST_ON_VAL], runs)  # refitted whatever wins
        scores = within_refit_budget(scores, runs, index, average_refit_budget_minutes,
                                     record_to=output_dir / REFIT_BUDGET_FILE, refitted_anyway=named)
    to_refit, averages = resolve_refit(refit, runs, scores)
    for name in to_refit:
        if "skipped" in runs.get(name, {"skipped": True}):
            print(f"No refit of {name}: it was not trained above")
            continue
        size = runs[name]["config"]["image_size"]
        chosen_epochs, how, forward = refit_epochs(name, runs[name], paths, index, output_dir, size=size,
                                                   epochs=epochs, **common)
        if forward:
            runs[name + FORWARD_SUFFIX] = forward
        print(f"Refit of {name}: {chosen_epochs} epochs, the {how}")
        runs[name + REFIT_SUFFIX] = _fit_and_save(
            name, name + REFIT_SUFFIX, paths, index, output_dir, fit_splits=["train", "val"], val_split=None,
            size=size, epochs=chosen_epochs, config_notes={"epochs_chosen_by": how},
            recompute_batch_norm=refit_recomputes_batch_norm, **common)
    for average in averages:  # save it, and the average of its members' refits
        members = average_members_of(average)
        if any("skipped" in runs.get(member, {"skipped": True}) for member in members):
            print(f"No average {average}: not all of its models were trained")
            continue
        runs[average] = save_average(members, average, output_dir, runs)
        if all(member + REFIT_SUFFIX in runs for member in members):
            runs[average + REFIT_SUFFIX] = save_average([member + REFIT_SUFFIX for member in members],
                                                        average + REFIT_SUFFIX, output_dir, runs)
    if leakage_model:
        size = image_size or get_spec(leakage_model).image_size
        runs[leakage_model + RANDOM_SPLIT_SUFFIX] = _fit_and_save(
            leakage_model, leakage_model + RANDOM_SPLIT_SUFFIX, paths, random_split_index(index, seed), output_dir,
            fit_splits=["train"], val_split="val", size=size, epochs=epochs, **common)
    return runs


def run_ablations(ablations: list[str], paths: config.DataPaths, index: pd.DataFrame, output_dir: Path, *,
                  image_size: int | None, epochs: int | None, batch_size: int | None, seed: int,
                  jit_compile: bool = False, seed_repeats: Sequence[int] = (),
                  repeat_own_seed: bool = False) -> dict[str, dict]:
    """Each ablation of the improved recipe, and the recipe itself at each seed of ``seed_repeats`` (and at
    ``seed`` too with ``repeat_own_seed``), trained on train and scored on val (``ablations/*.json``)."""
    from .ablation import BASE_MODEL, clear_records, run_ablations as run
    from .models import get_spec

    if not ablations and not seed_repeats:
        clear_records(output_dir)  # an earlier run's records would be read as this one's
        return {}
    size = image_size or get_spec(BASE_MODEL).image_size
    def data_at(other_size: int):  # for the variants of the image size
        return split_arrays(paths, index, "train", other_size), split_arrays(paths, index, "val", other_size)

    return run(ablations, *data_at(size), output_dir, image_size=size, epochs=epochs, batch_size=batch_size,
               seed=seed, jit_compile=jit_compile, train_groups=split_groups(index, "train"),
               seed_repeats=seed_repeats, data_at=data_at, val_groups=split_groups(index, "val"),
               repeat_own_seed=repeat_own_seed)


SEED_CLAIM = {"description": "seed blog (random 80/20 split)", "val": {"accuracy": 0.98}, "test": {"accuracy": 0.97}}
# The study's brief (issue 3): "about 95% test accuracy and 93% balanced accuracy" for a quick CNN; quick_cnn reads it.
QUICK_CNN_CLAIM = {"description": "the study's brief: a quick batch-norm + global-pooling CNN, fitted on train at 128 px",
                   "test": {"accuracy": 0.95, "balanced_accuracy": 0.93}}


@dataclass
class StudyScores:
    """Everything notebook 06 reports: ``metrics`` (as written to metrics.json) and per-run predictions."""

    metrics: dict
    predictions: dict[str, dict[str, pd.DataFrame]]  # run -> split -> index rows with p_surface, predicted
    temperatures: dict[str, float]
    error_groups: dict[str, pd.DataFrame]  # run -> test errors per MSL class and instrument (errors_against_training)
    ensemble_predictions: dict[str, dict[str, pd.DataFrame]] = field(default_factory=dict)  # as predictions

    @property
    def headline(self) -> str:
        return self.metrics["headline"]

    def test_predictions(self, run: str) -> pd.DataFrame:
        return self.predictions[run]["test"]


def _run_kind(run: str) -> str:
    if run.endswith(REFIT_SUFFIX):
        return "refit on train+val"
    if run.endswith(RANDOM_SPLIT_SUFFIX):
        return "random 80/20 split (leakage study)"
    return TRAIN_ONLY


def training_rows(run_index: pd.DataFrame, run: str) -> pd.DataFrame:
    """The rows of ``run_index`` (the index run ``run`` was trained with) that it was fitted on."""
    return run_index[run_index["split"].isin(["train", "val"] if run.endswith(REFIT_SUFFIX) else ["train"])]


ERROR_GROUPS_KEPT = 3  # the groups with most test errors, per run, in metrics.json


def largest_error_groups(table: pd.DataFrame, kept: int = ERROR_GROUPS_KEPT) -> list[dict]:
    """The ``kept`` groups of an errors-against-training table with most errors, as JSON-ready records.

    Groups without errors are left out (a perfect run lists none); shares and accuracies keep 4 decimals.
    """
    rows = table[table["errors"] > 0].head(kept).reset_index()
    return [{key: round(float(value), 4) if isinstance(value, float) else
             int(value) if isinstance(value, np.integer) else value for key, value in row.items()}
            for row in rows.to_dict(orient="records")]


def error_groups_across_runs(error_groups: dict[str, pd.DataFrame], run: str, index: pd.DataFrame,
                             kept: int = 5) -> pd.DataFrame:
    """The ``kept`` groups where ``run`` errs most: images per split of ``index``, every run's accuracy.

    If other runs score well on a group from the same training images, the recipe, not only missing
    data, is behind ``run``'s errors there; the validation count says whether validation could have
    shown it.
    """
    from .evaluation import group_names

    groups = error_groups[run][error_groups[run]["errors"] > 0].head(kept).index
    counts = pd.crosstab(group_names(index), index["split"])
    table = counts.reindex(index=groups, columns=list(config.SPLITS), fill_value=0).astype(int)
    table = table.rename(columns=lambda split: f"{split} images")
    for name, errors in error_groups.items():
        table[f"{name} accuracy"] = errors["accuracy"].reindex(groups)
    return table




def training_coverage_table(metrics: dict) -> pd.DataFrame:
    """Each run's accuracy on the images of groups its own training data barely held, and on the rest: on
    validation (train-only runs, for which it is unseen) and on test."""
    rows = {}
    for run, splits in metrics["models"].items():
        row = {"trained on": splits.get("kind")}
        for split in ("val", "test"):
            if coverage := splits[split].get("by_training_coverage"):
                row |= {f"{split}: rarely trained images": coverage["rare"]["n"],
                        f"{split}: accuracy on them": coverage["rare"]["accuracy"],
                        f"{split}: accuracy on the others": coverage["rest"]["accuracy"]}
        if len(row) > 1:
            rows[run] = row
    return pd.DataFrame.from_dict(rows, orient="index").round(3)


def score_ensembles(runs: list[str], predictions: dict[str, dict[str, pd.DataFrame]], sizes: dict[str, int],
                    resized: dict[tuple[str, int], dict[str, np.ndarray]], *, bootstrap_samples: int = 1000,
                    seed: int = 42, skip: set[str] = frozenset()) -> tuple[dict, dict]:
    """Every average of two or more of ``runs`` (P(Surface) averaged), scored on val and test like a run.

    Returns the scores (name -> members, val, test; names join the members with "+") and the
    averaged predictions (name -> split -> rows). Only train-only runs make sense here: validation
    must be unseen by every member for its score to choose between the averages and the single runs.
    Names in ``skip`` (averages the study saved and scored as runs) are left out. An average computes as
    selection (:func:`validation_scores`) and a saved average do: a member smaller than the largest
    (``sizes``) takes the largest one's decode resized, its P(Surface) from ``resized``
    (:func:`probabilities_at_sizes`); a member at that size, its own ``predictions``.
    """
    from .evaluation import average_predictions, binary_metrics

    def at_size(member: str, size: int, split: str) -> pd.DataFrame:
        rows = predictions[member][split]
        return rows if sizes[member] == size else rows.assign(p_surface=resized[member, size][split])

    scores, averaged = {}, {}
    for count in range(2, len(runs) + 1):
        for members in combinations(sorted(runs), count):
            name = ENSEMBLE_JOIN.join(members)
            if name in skip:
                continue
            size = max(sizes[member] for member in members)
            averaged[name], scores[name] = {}, {"members": list(members), "kind": "average of train-only runs",
                                                "image_size": size}
            for split in ("val", "test"):
                rows = average_predictions([at_size(member, size, split) for member in members])
                averaged[name][split] = rows
                scores[name][split] = binary_metrics(rows["label"].to_numpy(), rows["p_surface"].to_numpy(),
                                                     n_boot=bootstrap_samples, seed=seed,
                                                     clusters=rows[CI_CLUSTER].to_numpy(), cluster_unit=CI_CLUSTER)
    return scores, averaged


def _loss_weighting(output_dir: Path, run: str) -> str:
    """How run ``run``'s training loss was weighted, in words: its model's recipe (``ModelSpec.loss_weighting``)."""
    from .models import get_spec

    return get_spec(reporting.load_json(Path(output_dir) / "runs" / f"{run}.json")["config"]["model"]).loss_weighting


def score_study(paths: config.DataPaths, index: pd.DataFrame, output_dir: Path, *, profile: str, seed: int,
                bootstrap_samples: int = 1000) -> StudyScores:
    """Score every saved run on val and test, fit temperatures on val, choose the headline, save metrics.

    The headline is chosen on validation only: the train-only model with the best validation balanced
    accuracy (an average of runs that notebook 05 saved competes like any); if that model was refitted on
    train+val (for the epochs validation chose, or its recipe's own; an average, as the average of its members'
    refits), the refit is the headline, since it has seen sols closer to the test split. The test split only reports.
    """
    from .calibration import apply_temperature, expected_calibration_error, fit_temperature
    from .evaluation import (accuracy_by_training_coverage, at_confidence, binary_metrics, errors_against_training,
                             majority_baseline, predict_surface_probability)
    from .inference import load_model
    from .provenance import run_environment

    output_dir = Path(output_dir)
    random_index = None
    runs = sorted((output_dir / "runs").glob("*.json"))
    if not runs:
        raise FileNotFoundError(f"no training runs in {output_dir / 'runs'}: run notebook 05 first")
    scores, predictions, temperatures, error_groups, skipped = {}, {}, {}, {}, {}
    arrays: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for run_path in runs:
        record = reporting.load_json(run_path)
        run = run_path.stem
        if "skipped" in record:
            skipped[run] = record["skipped"]
            continue
        model = load_model(output_dir / "models" / f"{run}.keras")
        size = int(model.input_shape[1])
        run_index = index
        if run.endswith(RANDOM_SPLIT_SUFFIX):
            random_index = random_index if random_index is not None else random_split_index(index, seed)
            run_index = random_index
        scores[run], predictions[run] = {"kind": _run_kind(run), "image_size": size,
                                         "epochs": record["config"].get("epochs"),
                                         **{key: record["config"][key] for key in
                                            ("epochs_chosen_by", "batch_norm_statistics", "numeric_policy")
                                            if key in record["config"]},
                                         **{key: record["config"][key] for key in ("group_weights", "class_weight")
                                            if record["config"].get(key)},  # how its loss was weighted
                                         "train_seconds": record.get("train_seconds")}, {}
        if record["config"].get("members"):  # an average of runs (save_average)
            scores[run]["members"] = record["config"]["members"]
            scores[run]["member_loss_weighting"] = {member: _loss_weighting(output_dir, member)
                                                    for member in record["config"]["members"]}
        for split in ("val", "test"):
            key = (run_index is random_index, split, size)
            if key not in arrays:  # runs of one size share their images: load each array once
                arrays[key] = split_arrays(paths, run_index, split, size, progress=False)
            images, labels = arrays[key]
            probabilities = predict_surface_probability(model, images)
            rows = run_index[run_index["split"] == split].reset_index(drop=True).copy()
            split_scores = binary_metrics(labels, probabilities, n_boot=bootstrap_samples, seed=seed,
                                          clusters=rows[CI_CLUSTER].to_numpy(), cluster_unit=CI_CLUSTER)
            split_scores["ece"] = expected_calibration_error(labels, probabilities)
            split_scores["at_confidence"] = at_confidence(labels, probabilities, 0.9)
            scores[run][split] = split_scores
            rows["p_surface"] = probabilities
            rows["predicted"] = (probabilities >= 0.5).astype(int)
            predictions[run][split] = rows
            split_scores["by_instrument_and_label"] = instrument_label_groups(rows)
        training = training_rows(run_index, run)
        error_groups[run] = errors_against_training(predictions[run]["test"], training)
        scores[run]["test"]["largest_error_groups"] = largest_error_groups(error_groups[run])
        scores[run]["test"]["by_training_coverage"] = accuracy_by_training_coverage(error_groups[run])
        if scores[run]["kind"] == TRAIN_ONLY:
            # Validation's own rarely trained groups: could validation have seen a weakness the test split shows?
            scores[run]["val"]["by_training_coverage"] = accuracy_by_training_coverage(
                errors_against_training(predictions[run]["val"], training))
            # Temperature scaling is fitted on validation, so only for runs that did not train on it.
            temperature = fit_temperature(predictions[run]["val"]["label"], predictions[run]["val"]["p_surface"])
            temperatures[run] = temperature
            test = predictions[run]["test"]
            scaled = apply_temperature(test["p_surface"].to_numpy(), temperature)
            scores[run]["test"]["temperature"] = temperature
            scores[run]["test"]["ece_after_temperature"] = expected_calibration_error(test["label"], scaled)
        if scores[run]["kind"] == "refit on train+val":
            scores[run]["val"]["note"] = "the validation split was part of this run's training data"
        if scores[run]["kind"].startswith("random"):
            scores[run]["val"]["note"] = "validation = the random 20% of train+val, as in the seed blog"
    candidates = [run for run in scores if scores[run]["kind"] == TRAIN_ONLY]
    best = best_on_validation({run: scores[run]["val"]["balanced_accuracy"] for run in candidates})
    headline = best + REFIT_SUFFIX if best + REFIT_SUFFIX in scores else best
    baselines = {reporting.MAJORITY: {split: majority_baseline(index.loc[index["split"] == split, "label"])
                                      for split in ("val", "test")}}
    # Every other average of the single train-only runs, scored from their predictions (no model saved), a
    # smaller model's at the largest member's size as selection scored it and a saved average computes it.
    singles = [run for run in candidates if "members" not in scores[run]]
    sizes = {run: scores[run]["image_size"] for run in singles}
    resized = probabilities_at_sizes(sizes, output_dir, lambda size: {split: arrays[False, split, size][0]
                                                                      for split in ("val", "test")},
                                     larger_only=True)
    ensembles, ensemble_predictions = score_ensembles(singles, predictions, sizes, resized,
                                                      bootstrap_samples=bootstrap_samples, seed=seed, skip=set(scores))
    metrics = {
        "headline": headline, "best_on_val": best,
        "selection": "best validation balanced accuracy among train-only runs (an average of runs saved by "
                     "notebook 05 is one, if its refit fit the profile's budget); its train+val refit if any",
        "profile": profile, "models": scores, "skipped": skipped, "baselines": baselines,
        "ensembles": ensembles, "seed_claim": SEED_CLAIM, "quick_cnn_claim": QUICK_CNN_CLAIM, **run_environment(),
    }
    if differences := differences_on_test(predictions, baselines[reporting.MAJORITY]["test"], scores,
                                          bootstrap_samples=bootstrap_samples, seed=seed):
        metrics["test_differences"] = differences
    if (output_dir / REFIT_BUDGET_FILE).is_file():  # which averages could compete, by this machine's speed
        metrics["refit_budget"] = reporting.load_json(output_dir / REFIT_BUDGET_FILE)
    reporting.save_metrics(output_dir, metrics)
    write_test_predictions(output_dir / reporting.PREDICTIONS_DIR, predictions)
    return StudyScores(metrics, predictions, temperatures, error_groups, ensemble_predictions)


def differences_on_test(predictions: dict[str, dict[str, pd.DataFrame]], majority: dict, scores: dict, *,
                        model: str = "improved", bootstrap_samples: int = 1000, seed: int = 42) -> dict:
    """``model``'s test accuracy minus the majority answer's and each seed model's train-only run's, each with a
    paired bootstrap interval resampling whole sols (``CI_CLUSTER``): how firm the targets text's comparisons
    are. Empty when ``model`` was not scored or no bootstrap is asked for."""
    from sklearn.metrics import accuracy_score

    from .evaluation import paired_difference

    if model not in predictions or bootstrap_samples <= 0:
        return {}
    rows = predictions[model]["test"]
    labels, clusters = rows["label"].to_numpy(dtype=int), rows[CI_CLUSTER].to_numpy()
    answer = config.CLASS_NAMES.index(majority["answer"])
    others = {reporting.MAJORITY: np.full(len(rows), answer)}
    for run in reporting.seed_runs(scores):
        if not np.array_equal(predictions[run]["test"]["id"].to_numpy(), rows["id"].to_numpy()):
            raise ValueError(f"{run} and {model} were scored on different test images")
        others[run] = predictions[run]["test"]["predicted"].to_numpy(dtype=int)
    return {"model": model, "metric": "accuracy", "split": "test", "unit": CI_CLUSTER, "n_boot": int(bootstrap_samples),
            "majority_answer": majority["answer"],
            "against": {other: paired_difference(labels, rows["predicted"].to_numpy(dtype=int), predicted, accuracy_score,
                                                 n_boot=bootstrap_samples, seed=seed, clusters=clusters)
                        for other, predicted in others.items()}}


def write_test_predictions(predictions_dir: Path, predictions: dict[str, dict[str, pd.DataFrame]]) -> list[Path]:
    """Write ``<run>_test.csv`` for every scored run; remove those of runs this study no longer has."""
    predictions_dir = Path(predictions_dir)
    predictions_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for run, splits in predictions.items():
        written.append(atomic.write_csv(splits["test"], predictions_dir / f"{run}_test.csv"))
    for stale in set(predictions_dir.glob("*_test.csv")) - set(written):
        stale.unlink()
    return written


# What export_headline names a file: <run>-<12-digit commit>[-dirty].keras.
EXPORT_NAME = re.compile(r".+-[0-9a-f]{12}(-dirty)?\.keras")


def export_headline(output_dir: Path, metrics: dict, models_dir: Path = config.MODELS_DIR) -> Path:
    """Copy the headline model to ``models/<run>-<commit>.keras`` so `marsrover predict` finds it.

    The commit is the one the model was trained at (its run record), which can be older than the
    commit that scored it when notebook 06 is rerun alone. Earlier exports (of any of the study's runs,
    or any file named like an export) are removed, so `predict` never picks up a former headline; other
    files in ``models_dir`` stay.
    """
    import shutil

    run = metrics["headline"]
    record_path = Path(output_dir) / "runs" / f"{run}.json"
    record = reporting.load_json(record_path) if record_path.exists() else {}
    commit = record.get("environment", {}).get("commit") or metrics["commit"]
    target = Path(models_dir) / f"{run}-{commit}.keras"
    target.parent.mkdir(parents=True, exist_ok=True)
    for study_run in {run, *metrics.get("models", {})}:  # one headline file: an earlier headline is another run
        for old in Path(models_dir).glob(f"{study_run}-*.keras"):
            old.unlink()
    for old in Path(models_dir).glob("*.keras"):  # a former headline of a run this study no longer has
        if EXPORT_NAME.fullmatch(old.name):
            old.unlink()
    shutil.copy2(Path(output_dir) / "models" / f"{run}.keras", target)
    print(f"Headline model exported to {config.display_path(target)} ({target.stat().st_size / 2**20:.1f} MiB)")
    return target


def runs_table(runs: dict[str, dict]) -> pd.DataFrame:
    """One row per training run: what it was fitted on, for how long, and what validation said.

    ``val BA of kept weights`` is the score that picks the model to refit. A run that keeps its best
    epoch is judged by the maximum of a noisy curve, an optimistic number; the mean of the last
    epochs shows where each run settled.
    """
    from .ablation import SETTLED_EPOCHS

    rows = []
    for run_name, run in runs.items():
        config_ = run.get("config", {})
        val_balanced = run.get("history", {}).get("val_balanced_accuracy")
        rows.append({
            "run": run_name, "model": config_.get("model"), "fit on": config_.get("fit_on"),
            "image size": config_.get("image_size"), "epochs": config_.get("epochs"),
            "kept weights": config_.get("kept_weights"),
            "batch-norm statistics": config_.get("batch_norm_statistics"), "train images": config_.get("train_images"),
            "seconds": run.get("train_seconds"), "seconds per epoch": run.get("seconds_per_epoch"),
            "val BA of kept weights": kept_val_balanced_accuracy(run),
            "best val BA": max(val_balanced) if val_balanced else None,
            f"val BA, mean of last {SETTLED_EPOCHS} epochs":
                float(np.mean(val_balanced[-SETTLED_EPOCHS:])) if val_balanced else None,
            "skipped": run.get("skipped", "")[:120],
        })
    return pd.DataFrame(rows).set_index("run")


def metrics_table(metrics: dict, split: str = "test") -> pd.DataFrame:
    """One row per run and baseline on ``split``: the headline metrics with 95% bootstrap intervals."""
    rows = []
    for kind, group in (("run", metrics["models"]), ("baseline", metrics.get("baselines", {}))):
        for name, splits in group.items():
            values = splits[split]
            ci = values.get("ci95", {})
            rows.append({
                "name": name, "trained": splits.get("kind", kind), "n": values["n"],
                "accuracy": values["accuracy"], "accuracy 95% CI": _interval(ci.get("accuracy")),
                "balanced accuracy": values["balanced_accuracy"],
                "balanced accuracy 95% CI": _interval(ci.get("balanced_accuracy")),
                "macro F1": values["macro_f1"], "ROC-AUC": values.get("roc_auc"), "PR-AUC": values.get("pr_auc"),
                "Brier": values.get("brier"), "ECE": values.get("ece"),
            })
    return pd.DataFrame(rows).set_index("name")


def _interval(pair) -> str:
    return f"{pair[0]:.3f}–{pair[1]:.3f}" if pair else ""


def interval_table(predictions: pd.DataFrame, *, bootstrap_samples: int, seed: int) -> pd.DataFrame:
    """One split's 95% bootstrap intervals of accuracy and balanced accuracy, resampling single images, whole
    observation sequences (:func:`marsrover.dataset.observation_sequences`) and whole sols (the study's
    intervals, ``CI_CLUSTER``): how much the intervals widen once images of one scene stop counting as
    independent."""
    from .dataset import observation_sequences
    from .evaluation import binary_metrics

    rows = []
    for unit, clusters in (("image", None), ("observation sequence", observation_sequences(predictions["id"])),
                           (CI_CLUSTER, predictions[CI_CLUSTER])):
        scores = binary_metrics(predictions["label"].to_numpy(dtype=int), predictions["p_surface"].to_numpy(),
                                n_boot=bootstrap_samples, seed=seed,
                                clusters=None if clusters is None else clusters.to_numpy(), cluster_unit=unit)
        row = {"resampled": unit + (" (the study's)" if unit == CI_CLUSTER else ""), "units": scores["ci95_clusters"]}
        for key, name in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy")):
            low, high = scores["ci95"][key]
            known = low is not None and high is not None
            row[f"{name} 95% CI"] = _interval((low, high) if known else None)
            row[f"{name} CI width"] = high - low if known else None
        rows.append(row)
    return pd.DataFrame(rows).set_index("resampled")


TARGETS = reporting.TARGETS


def targets_table(metrics: dict, model: str = "improved", targets: dict[str, float] = TARGETS) -> pd.DataFrame:
    """The improved model's runs (and each average that includes one) against the study's
    test targets: reached or not, and by how much."""
    rows = []
    for run in reporting.runs_built_on(metrics, model):
        splits = metrics["models"][run]
        row = {"run": run, "trained": splits["kind"]}
        for key, target in targets.items():
            value = splits["test"][key]
            row[f"test {key.replace('_', ' ')}"] = value
            row[f"target {key.replace('_', ' ')}"] = target
            row[f"{key.replace('_', ' ')} reached"] = bool(value >= target)
        rows.append(row)
    return pd.DataFrame(rows).set_index("run") if rows else pd.DataFrame()


def per_class_table(metrics: dict, split: str = "test") -> pd.DataFrame:
    """Precision, recall and F1 of each label for every run."""
    rows = []
    for run, splits in metrics["models"].items():
        for label in ("Rover", "Surface"):
            rows.append({"run": run, "label": label, **{key: splits[split][key][label]
                                                         for key in ("precision", "recall", "f1")}})
    return pd.DataFrame(rows).set_index(["run", "label"])


def comparison_table(metrics: dict) -> pd.DataFrame:
    """The claims (the seed blog's; the study brief's quick CNN) beside every run as scored here."""
    rows = [{"": f"{row}, {trained_on}", "val accuracy": claim.get("val", {}).get("accuracy"),
             "test accuracy": claim["test"]["accuracy"], "test balanced accuracy": claim["test"].get("balanced_accuracy")}
            for key, row, trained_on, _ in reporting.CLAIM_ROWS if (claim := metrics.get(key))]
    for run, splits in metrics["models"].items():
        rows.append({"": f"{run} ({splits['kind']})", "val accuracy": splits["val"]["accuracy"],
                     "test accuracy": splits["test"]["accuracy"],
                     "test balanced accuracy": splits["test"]["balanced_accuracy"]})
    majority = metrics["baselines"][reporting.MAJORITY]
    rows.append({"": f"always '{majority['test']['answer']}' (test majority)", "val accuracy": None,
                 "test accuracy": majority["test"]["accuracy"], "test balanced accuracy": 0.5})
    return pd.DataFrame(rows).set_index("")


def breakdown_table(scores: StudyScores, by: str) -> pd.DataFrame:
    """Test accuracy of every run per group of ``by`` (e.g. msl_name, instrument, sol_range)."""
    from .evaluation import breakdown, sol_ranges

    def with_sol_range(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(sol_range=sol_ranges(frame["sol"]))

    accuracy = {run: breakdown(with_sol_range(scores.test_predictions(run)), by)["accuracy"]
                for run in scores.predictions}
    counts = breakdown(with_sol_range(scores.test_predictions(scores.headline)), by)[["n", "n_rover", "n_surface"]]
    return counts.join(pd.DataFrame(accuracy)).sort_values("n", ascending=False)


def _with_instrument_label_group(predictions: pd.DataFrame) -> pd.DataFrame:
    from .evaluation import instrument_label_group

    return predictions.assign(group=instrument_label_group(predictions))


def _by_instrument_and_label(predictions: pd.DataFrame) -> pd.DataFrame:
    from .evaluation import breakdown

    return breakdown(_with_instrument_label_group(predictions), "group")


def instrument_label_groups(predictions: pd.DataFrame) -> list[dict]:
    """Accuracy per instrument x label group (e.g. ``MAHLI · Surface``), as records for ``metrics.json``.

    The split's shift lives in these groups, so the model card shows them for the run validation chose
    and for the headline on test.
    """
    from .evaluation import group_records

    return group_records(_with_instrument_label_group(predictions), "group")


def validation_groups_table(scores: StudyScores) -> pd.DataFrame:
    """Validation accuracy of each train-only run per instrument x label group, and their mean.

    Balanced accuracy averages the two labels; a run can win it on one group (MAHLI Surface) while
    losing every Rover group, which the test split (75% Rover) punishes. This shows that trade on
    validation, the split choices are made on. Refits trained on validation and are left out.
    """
    runs = [run for run, splits in scores.metrics["models"].items() if splits["kind"] == TRAIN_ONLY]
    if not runs:
        return pd.DataFrame()
    per_group = {run: _by_instrument_and_label(scores.predictions[run]["val"]) for run in runs}
    table = per_group[runs[0]][["n"]].join(pd.DataFrame({run: per_group[run]["accuracy"] for run in runs}))
    summary = pd.DataFrame({run: [table[run].mean(), table[run].min(),
                                  scores.metrics["models"][run]["val"]["balanced_accuracy"]] for run in runs},
                           index=["mean of the groups", "worst group", "balanced accuracy (selection metric)"])
    table = pd.concat([table, summary])
    table["n"] = table["n"].astype("Int64")  # the summary rows have no count
    return table


def threshold_table(scores: StudyScores, run: str) -> pd.DataFrame:
    """Would a decision threshold other than 0.5, chosen on validation, help ``run`` (a train-only run)?

    Three rows: chosen on all of validation and scored there (an optimistic bound: chosen and judged on the
    same images), then chosen on the earlier half of validation's sols and scored on the later half, and the
    other way round (the halves of forward validation, :func:`forward_validation_index`). Each with the
    balanced accuracy at the chosen threshold and at 0.5 on the images scored. The test split plays no part.
    """
    from .evaluation import balanced_accuracy_at, best_threshold

    if run not in scores.predictions:
        print(f"No {run} run in this study: no threshold to check.")
        return pd.DataFrame()
    val = scores.predictions[run]["val"]
    halves = forward_validation_index(val)
    plans = [("all of validation", "all of validation", val, val)]
    if halves is not None:
        early, later = val[(halves["split"] == EARLY_VAL).to_numpy()], val[(halves["split"] == "val").to_numpy()]
        plans += [("earlier sols", "later sols", early, later), ("later sols", "earlier sols", later, early)]
    rows = []
    for chosen_on, scored_on, fit, judged in plans:
        # a half with one label only (a tiny profile) has no threshold to choose
        threshold = best_threshold(fit["label"], fit["p_surface"]) if fit["label"].nunique() == 2 else float("nan")
        rows.append({"chosen on": chosen_on, "scored on": scored_on, "images scored": len(judged),
                     "threshold": threshold,
                     "balanced accuracy at the threshold": balanced_accuracy_at(judged["label"], judged["p_surface"],
                                                                                threshold),
                     "balanced accuracy at 0.5": balanced_accuracy_at(judged["label"], judged["p_surface"])})
    return pd.DataFrame(rows)


def ablation_groups_table(scores: StudyScores, output_dir: Path) -> pd.DataFrame:
    """Notebook 05's ablations read by validation group (:func:`marsrover.ablation.groups_table`): the study's
    ``improved`` run, its seed repeats and each variant. Empty, with the reason printed, without an ``improved``
    run or without records that keep their groups."""
    from . import ablation

    records = ablation.load_records(output_dir)
    if ablation.BASE_MODEL not in scores.metrics["models"]:
        print(f"No {ablation.BASE_MODEL} run in this study: nothing to read the ablations against.")
        return pd.DataFrame()
    if not any(record.get("val_groups") for record in records.values()):
        print(f"No ablation record in {config.display_path(Path(output_dir) / 'ablations')} keeps its validation groups "
              "(records written before they were kept, or no ablation run): rerun notebook 05.")
        return pd.DataFrame()
    base = scores.metrics["models"][ablation.BASE_MODEL]["val"]  # scored per group by score_study already
    return ablation.groups_table(base["by_instrument_and_label"], base["balanced_accuracy"], records)


def ensembles_table(scores: StudyScores) -> pd.DataFrame:
    """Each train-only run and each average of them: validation first (the ranking), then test.

    Sorted by validation balanced accuracy, the study's selection metric, ties as :func:`best_on_validation`
    breaks them; the validation groups' mean and worst accuracy (see :func:`validation_groups_table`) stand
    beside it.
    """
    candidates = {run: (scores.metrics["models"][run], scores.predictions[run])
                  for run, splits in scores.metrics["models"].items() if splits["kind"] == TRAIN_ONLY}
    candidates.update({name: (record, scores.ensemble_predictions[name])
                       for name, record in scores.metrics.get("ensembles", {}).items()})
    rows = []
    for name, (record, predictions) in candidates.items():
        groups = _by_instrument_and_label(predictions["val"])["accuracy"]
        val, test = record["val"], record["test"]
        rows.append({"candidate": name, "models averaged": len(record.get("members", [name])),
                     "val balanced accuracy": val["balanced_accuracy"], "val mean of the groups": groups.mean(),
                     "val worst group": groups.min(), "test accuracy": test["accuracy"],
                     "test accuracy 95% CI": _interval(test.get("ci95", {}).get("accuracy")),
                     "test balanced accuracy": test["balanced_accuracy"],
                     "test balanced accuracy 95% CI": _interval(test.get("ci95", {}).get("balanced_accuracy"))})
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows).set_index("candidate")
    return table.loc[ranked_on_validation(table["val balanced accuracy"].to_dict())]


def ensemble_findings(scores: StudyScores) -> str:
    """What :func:`ensembles_table` shows, in words and counts (Markdown), so the notebook's text follows
    the run: how many averages beat each of their models on validation and on test, which candidate
    validation put first, and what the study's rule then made the headline."""
    table = ensembles_table(scores)
    if table.empty:
        return "No train-only runs to compare."
    metrics = scores.metrics
    members = {name: record["members"] for name, record in {**metrics["models"], **metrics.get("ensembles", {})}.items()
               if record.get("members") and name in table.index}

    def above_members(name: str, column: str) -> bool:
        return all(table.loc[name, column] > table.loc[member, column] for member in members[name])

    on_val = sum(above_members(name, "val balanced accuracy") for name in members)
    on_test = sum(above_members(name, "test accuracy") and above_members(name, "test balanced accuracy")
                  for name in members)
    winner = table.index[0]
    top = table.loc[winner, "val balanced accuracy"]
    tie = tie_words(tied_with(table["val balanced accuracy"].to_dict(), winner), quote="`")
    lines = [f"Of the {len(members)} averages, {on_val} scored a higher validation balanced accuracy than each of "
             f"their models, and {on_test} a higher test accuracy and test balanced accuracy than each of their "
             "models (the test columns came after the choice)."]
    if winner in members:
        best_member = max(members[winner], key=lambda member: table.loc[member, "val balanced accuracy"])
        lines.append(f"Validation put the average `{winner}` first ({top:.3f}{tie}{'; ' if tie else ', '}"
                     f"against {table.loc[best_member, 'val balanced accuracy']:.3f} for `{best_member}` alone); on "
                     f"test its balanced accuracy is {table.loc[winner, 'test balanced accuracy']:.3f}, against "
                     f"{table.loc[best_member, 'test balanced accuracy']:.3f} for `{best_member}`.")
    else:
        lines.append(f"Validation put a single model first, `{winner}` ({top:.3f}{tie})"
                     + ("." if tie else ", above every average."))
    headline = metrics.get("headline")
    kind = metrics.get("models", {}).get(headline, {}).get("kind", "")
    lines.append(f"By the study's rule the headline is `{headline}` ({kind}).")
    return " ".join(lines)


def leakage_counts(paths: config.DataPaths, index: pd.DataFrame, *, seed: int, max_distance: int,
                   progress: bool = True) -> pd.DataFrame:
    """Near-duplicates shared between training and evaluation images under each protocol."""
    from .leakage import count_shared, perceptual_hashes

    hashed = index.assign(phash=perceptual_hashes(index, paths.images_root, progress=progress))
    random_index = random_split_index(hashed, seed)
    rows = []
    for protocol, frame, split_b in (("official (by sol)", hashed, "val"), ("official (by sol)", hashed, "test"),
                                     ("random 80/20 (seed blog)", random_index, "val")):
        counts = count_shared(frame, "train", split_b, max_distance=max_distance)
        rows.append({"protocol": protocol, "train vs": split_b, "images": counts["n_b"],
                     "identical file in train": counts["exact"],
                     f"perceptual twin in train (≤{max_distance} bits)": counts["perceptual"],
                     "share with a twin": round(counts["perceptual_share"], 3),
                     "same observation sequence in train": counts["sequence"],
                     "share with a sequence in train": round(counts["sequence_share"], 3)})
    return pd.DataFrame(rows).set_index(["protocol", "train vs"])


def models_to_explain(model, run: str, metrics: dict) -> list[tuple[object, str]]:
    """What Grad-CAM explains for run ``run``: its model, or, for an average (which has no feature map of its
    own), each of its models, named as the study's runs that ``metrics.json`` lists as its members (a refit's
    model carries its recipe's name, ``seed_blog`` for ``seed_blog_refit``); the models' own names where the
    records do not match them."""
    from .models import average_members

    members = average_members(model)
    if not members:
        return [(model, run)]
    recorded = metrics.get("models", {}).get(run, {}).get("members") or []

    def run_of(member) -> str:  # the recorded member that is this model's run, by name; else the model's name
        matches = [name for name in recorded if name in (member.name, member.name + REFIT_SUFFIX)]
        return matches[0] if len(matches) == 1 else member.name

    return [(member, run_of(member)) for member in members]


def pick_examples(predictions: pd.DataFrame, count: int, seed: int, *,
                  one_per: pd.Series | None = None) -> pd.DataFrame:
    """A mix of right and wrong test predictions per true label, for the example figure.

    Given ``one_per`` (a key per row, such as :func:`marsrover.dataset.observation_sequences`), no two
    examples share a key, so a focus stack or a stereo pair shows up once at most.
    """
    from .evaluation import one_of_each

    def unused(rows: pd.DataFrame, chosen: list[pd.DataFrame]) -> pd.DataFrame:
        if one_per is None:
            return rows
        taken = set(one_per.loc[pd.concat(chosen).index]) if chosen else set()
        return one_of_each(rows[~one_per.loc[rows.index].isin(taken).to_numpy()], one_per, seed)

    wrong = unused(predictions[predictions["predicted"] != predictions["label"]], [])
    n_wrong = min(len(wrong), count // 4)
    picked = [wrong.sample(n=n_wrong, random_state=seed)] if n_wrong else []
    right = unused(predictions[predictions["predicted"] == predictions["label"]], picked)
    for label, rows in right.groupby("label"):
        take = min(len(rows), (count - n_wrong) // 2)
        picked.append(rows.sample(n=take, random_state=seed))
    chosen = pd.concat(picked) if picked else predictions.head(0)
    remaining = unused(predictions.drop(chosen.index), picked)
    if len(chosen) < count and len(remaining):
        chosen = pd.concat([chosen, remaining.sample(n=min(len(remaining), count - len(chosen)), random_state=seed)])
    return chosen.sample(frac=1, random_state=seed)


def user_labelled_scores(run: str, output_dir: Path, labels_csv: str | Path | None = None,
                         data_dir: str | Path | None = None) -> pd.DataFrame | None:
    """Scores of model ``run`` on images labelled by hand with the labeler, or None when there are none."""
    from .evaluation import binary_metrics
    from .inference import classify_files, load_model
    from .labeler import LabelStore, labels_as_index

    csv_path = Path(labels_csv) if labels_csv else config.data_paths(data_dir).labels / "labels.csv"
    if not csv_path.exists():
        return None
    store = LabelStore(csv_path)
    labelled = labels_as_index(store)
    if labelled.empty:
        return None
    files = [store.resolve(path) for path in labelled["path"]]
    predictions = classify_files(load_model(Path(output_dir) / "models" / f"{run}.keras"), files, progress=False)
    readable = predictions["error"].fillna("") == ""
    scores = binary_metrics(labelled.loc[readable.to_numpy(), "label"], predictions.loc[readable, "p_surface"])
    return pd.DataFrame({f"{run} on {csv_path.name}": {key: scores[key] for key in
                                                       ("n", "accuracy", "balanced_accuracy", "macro_f1", "roc_auc")}}).T


def sample_new_images(paths: config.DataPaths, index: pd.DataFrame, folder: Path, *, count: int,
                      seed: int) -> pd.DataFrame:
    """A stand-in for freshly fetched images: ``count`` test-split images copied into ``folder``.

    Used where no raw images were fetched (CI, offline machines); it writes the same ``metadata.csv``
    that ``marsrover fetch-raw`` writes, so notebook 07 runs the same code either way. ``folder`` is the
    sample's own: files an earlier sample left there (another ``count`` or ``seed``) are removed, else
    they would be classified too, without metadata.
    """
    import shutil

    from .rawfeeds import METADATA_COLUMNS, METADATA_NAME

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    test = index[index["split"] == "test"]
    chosen = test.sample(n=min(count, len(test)), random_state=seed)
    keep = {Path(path).name for path in chosen["path"]} | {METADATA_NAME}
    for stale in folder.iterdir():
        if stale.is_file() and stale.name not in keep:
            stale.unlink()
    rows = []
    for row in chosen.itertuples():
        target = folder / Path(row.path).name
        if not target.exists():
            shutil.copy2(paths.images_root / row.path, target)
        rows.append({"image_id": row.id, "sol": row.sol, "instrument": row.instrument, "date_taken": "",
                     "url": f"archive:{row.path}", "local_path": target.name})  # relative, as fetch-raw writes
    metadata = pd.DataFrame(rows, columns=METADATA_COLUMNS)
    metadata.to_csv(folder / METADATA_NAME, index=False)
    return metadata


def new_images_model(output_dir: Path, model_path: str | Path | None = None,
                     models_dir: Path = config.MODELS_DIR) -> Path:
    """The model notebook 07 classifies with: ``model_path`` when given, else the headline of the report in
    ``output_dir`` (its ``metrics.json``): the study's own file, or, in a fresh clone, where study files are
    not committed, its export under ``models/`` (the newest); else the model `marsrover predict` would use."""
    from .inference import find_default_model

    if model_path:
        return Path(model_path)
    metrics_path = Path(output_dir) / reporting.METRICS_FILE
    if metrics_path.exists():
        headline = reporting.load_json(metrics_path)["headline"]
        own = Path(output_dir) / "models" / f"{headline}.keras"
        exports = sorted(Path(models_dir).glob(f"{headline}-*.keras"), key=lambda path: path.stat().st_mtime)
        if own.is_file() or not exports:
            return own  # when neither exists, loading it says which file is missing
        print(f"{config.display_path(own)} is not here (study models are not committed): using the export "
              f"{config.display_path(exports[-1])}")
        return exports[-1]
    fallback = find_default_model()
    print(f"No study in {config.display_path(output_dir)} (no {reporting.METRICS_FILE}): using {config.display_path(fallback)}")
    return fallback


def classify_new_images(model_path: Path, folder: Path, *, low: float = 0.2, high: float = 0.8) -> pd.DataFrame:
    """Every image under ``folder`` classified, joined with its ``metadata.csv`` row when there is one."""
    from .inference import classify_files, discover_images, load_model
    from .rawfeeds import read_metadata
    from .sorting import folder_for

    predictions = classify_files(load_model(model_path), discover_images([folder]), progress=False,
                                 model_name=config.display_path(model_path))  # the file, not the Keras name
    predictions["sorted_into"] = [folder_for(p, low, high) if p == p else "" for p in predictions["p_surface"]]
    metadata = read_metadata(folder)
    # fetch-raw records names relative to the folder; an absolute path is kept as it is
    metadata["path"] = [str((Path(folder) / p).resolve()) for p in metadata["local_path"]]
    predictions["path"] = [str(Path(p).resolve()) for p in predictions["path"]]
    table = predictions.merge(metadata.drop(columns="local_path"), on="path", how="left")
    table["instrument"] = table["instrument"].fillna("").replace("", "unknown")
    return table
