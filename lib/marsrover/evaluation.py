"""Scoring: batched prediction, the metrics every model is reported with, and error analysis.

All metrics come from scikit-learn. ``p_surface`` is always P(Surface) (label 1); an image is
predicted Surface when ``p_surface >= threshold`` (0.5 unless told). Functions that return dicts
return plain Python numbers and lists, so the result can go straight into ``metrics.json``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn import metrics

from .config import CLASS_NAMES

# Scoring and validation batches: 64 images keep activation memory small (256 at 224 px cost 1.3 GiB more).
EVAL_BATCH_SIZE = 64


def predict_surface_probability(model, images: np.ndarray, *, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """P(Surface) for each image, in batches (never one ``predict`` call per image).

    Batches are gathered from the uint8 array as they are needed: a float32 copy of a whole split at
    256 px, and a batch of 256 through the seed models' wide early layers, each cost gigabytes.
    """
    from .training import make_dataset

    if len(images) <= batch_size:  # one batch (the predict command's path): no pipeline to build
        # predict_on_batch, as predict's own tf.data pipeline logs a spurious C++ error
        # ("NodeDef mentions attribute use_unbounded_threadpool") under op determinism, in TF 2.21
        probabilities = model.predict_on_batch(images.astype("float32"))
        return np.asarray(probabilities, dtype="float64")[:, 1]
    batches = make_dataset(images, np.zeros(len(images), dtype="int32"), batch_size=batch_size, shuffle=False)
    probabilities = model.predict(batches.map(lambda x, _: x), verbose=0)
    return np.asarray(probabilities, dtype="float64")[:, 1]


def _optional_float(value) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _balanced_accuracy_or_nan(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Balanced accuracy, NaN unless both classes are present (it is undefined otherwise)."""
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(metrics.balanced_accuracy_score(y_true, y_pred))


def binary_metrics(y_true: np.ndarray, p_surface: np.ndarray, *, threshold: float = 0.5,
                   n_boot: int = 0, seed: int = 0, clusters: np.ndarray | None = None,
                   cluster_unit: str = "cluster") -> dict[str, object]:
    """The scores of one split.

    Accuracy, balanced accuracy, macro F1, ROC-AUC, confusion matrix (rows true, columns
    predicted, Rover first), n and the share of Surface images; per class (keyed by class name)
    ``precision``, ``recall`` and ``f1``; ``pr_auc`` (average precision of Surface) and ``brier``.
    ``roc_auc`` and ``pr_auc`` are None when the split holds one class only. With ``n_boot > 0``,
    ``ci95`` holds percentile-bootstrap 95% intervals of accuracy and balanced accuracy
    (:func:`bootstrap_ci`), resampling images, or, given ``clusters`` (each image's cluster, e.g. its
    sol), whole clusters; ``ci95_unit`` names what was resampled (``cluster_unit``, or ``image``) and
    ``ci95_clusters`` how many there were.
    """
    y_true = np.asarray(y_true).astype(int)
    p_surface = np.asarray(p_surface, dtype="float64")
    y_pred = (p_surface >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    precision, recall, f1, _ = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=[0, 1], zero_division=0)
    with warnings.catch_warnings():
        # One class only: balanced accuracy is the recall of that class; scikit-learn warns.
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        balanced_accuracy = float(metrics.balanced_accuracy_score(y_true, y_pred))
    scores = {
        "n": int(len(y_true)),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced_accuracy,
        "macro_f1": float(metrics.f1_score(y_true, y_pred, average="macro", labels=[0, 1], zero_division=0)),
        "roc_auc": float(metrics.roc_auc_score(y_true, p_surface)) if both_classes else None,
        "surface_share": float(y_true.mean()) if len(y_true) else None,
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=[0, 1]).tolist(),
        "threshold": float(threshold),
        "precision": {name: float(value) for name, value in zip(CLASS_NAMES, precision)},
        "recall": {name: float(value) for name, value in zip(CLASS_NAMES, recall)},
        "f1": {name: float(value) for name, value in zip(CLASS_NAMES, f1)},
        "pr_auc": float(metrics.average_precision_score(y_true, p_surface)) if both_classes else None,
        "brier": float(metrics.brier_score_loss(y_true, p_surface, labels=[0, 1])) if len(y_true) else None,
    }
    if n_boot > 0:
        scores["ci95"] = {}
        for key, metric in (("accuracy", metrics.accuracy_score),
                            ("balanced_accuracy", _balanced_accuracy_or_nan)):
            low, high = bootstrap_ci(y_true, y_pred, metric, n_boot=n_boot, seed=seed, clusters=clusters)
            scores["ci95"][key] = [_optional_float(low), _optional_float(high)]
        scores["n_boot"] = int(n_boot)
        scores["ci95_unit"] = "image" if clusters is None else cluster_unit
        scores["ci95_clusters"] = int(len(y_true) if clusters is None else pd.unique(np.asarray(clusters)).size)
    return scores


def paired_difference(y_true: np.ndarray, predicted_a: np.ndarray, predicted_b: np.ndarray,
                      metric: Callable[[np.ndarray, np.ndarray], float], *, n_boot: int = 1000, seed: int = 0,
                      clusters: np.ndarray | None = None) -> dict[str, object]:
    """``metric`` of ``predicted_a`` minus that of ``predicted_b`` on the same images, with a percentile-bootstrap
    95% interval of the difference: each resample scores both on the same images (or ``clusters``), so what the
    two share, such as a hard sol, cancels out. An interval that holds 0 does not rule out chance."""
    y_true = np.asarray(y_true)
    both = np.stack([np.asarray(predicted_a), np.asarray(predicted_b)], axis=1)

    def difference(truth: np.ndarray, pair: np.ndarray) -> float:
        return metric(truth, pair[:, 0]) - metric(truth, pair[:, 1])

    low, high = bootstrap_ci(y_true, both, difference, n_boot=n_boot, seed=seed, clusters=clusters)
    return {"difference": _optional_float(difference(y_true, both)), "ci95": [_optional_float(low), _optional_float(high)]}


def majority_baseline(y_eval: np.ndarray) -> dict[str, object]:
    """Scores of always answering the evaluated split's most common label (a reference row)."""
    majority = int(np.bincount(np.asarray(y_eval).astype(int), minlength=2).argmax())
    scores = binary_metrics(y_eval, np.full(len(y_eval), float(majority)))
    scores["answer"] = CLASS_NAMES[majority]
    return scores


def bootstrap_ci(y_true: np.ndarray, y_pred_or_p: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
                 *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                 clusters: np.ndarray | None = None) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of ``metric(y_true, y_pred_or_p)``.

    Images are resampled with replacement ``n_boot`` times (``numpy.random.default_rng(seed)``,
    so the interval is the same for the same seed). Given ``clusters`` (one key per image), whole
    clusters are resampled instead, as many as there are, each bringing all its images: a cluster
    bootstrap, for images that are not independent draws. The study's images come in sols (the official split
    is cut by sol), and one sol's images are often frames of one scene, so resampling images would give
    intervals too narrow for another set of sols like these (it says nothing of a shift to later sols).
    Resamples where the metric is undefined (it raises ``ValueError``, returns None or a non-finite value)
    are skipped; (nan, nan) when none is left, or when there are fewer than two images or clusters to
    resample (every resample would be the split itself). With few clusters the interval is too narrow.
    """
    y_true = np.asarray(y_true)
    values_in = np.asarray(y_pred_or_p)
    if len(y_true) != len(values_in):
        raise ValueError(f"y_true has {len(y_true)} entries, y_pred_or_p {len(values_in)}")
    if clusters is not None and len(clusters) != len(y_true):
        raise ValueError(f"clusters has {len(clusters)} entries, y_true {len(y_true)}")
    if len(y_true) == 0:
        return float("nan"), float("nan")
    if clusters is None:
        members = np.arange(len(y_true))[:, None]
    else:
        codes, _ = pd.factorize(np.asarray(clusters), sort=True)
        order = np.argsort(codes, kind="stable")
        members = np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)
    if len(members) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    estimates = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single-class resamples make scikit-learn warn
        for _ in range(n_boot):
            drawn = rng.integers(0, len(members), len(members))
            chosen = drawn if clusters is None else np.concatenate([members[i] for i in drawn])
            try:
                value = metric(y_true[chosen], values_in[chosen])
            except ValueError:
                continue
            if value is not None and np.isfinite(value):
                estimates.append(float(value))
    if not estimates:
        return float("nan"), float("nan")
    low, high = np.percentile(estimates, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(low), float(high)


def curves(y_true: np.ndarray, p_surface: np.ndarray) -> dict[str, object]:
    """ROC (``fpr``, ``tpr``, ``roc_thresholds``) and precision-recall (``precision``, ``recall``,
    ``pr_thresholds``) curves of Surface as numpy arrays, with ``roc_auc`` and ``pr_auc``
    (None when only one class is present)."""
    y_true = np.asarray(y_true).astype(int)
    p_surface = np.asarray(p_surface, dtype="float64")
    both_classes = len(np.unique(y_true)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one class only: scikit-learn warns and returns nan
        fpr, tpr, roc_thresholds = metrics.roc_curve(y_true, p_surface, pos_label=1)
        precision, recall, pr_thresholds = metrics.precision_recall_curve(y_true, p_surface, pos_label=1)
    return {
        "fpr": fpr, "tpr": tpr, "roc_thresholds": roc_thresholds,
        "precision": precision, "recall": recall, "pr_thresholds": pr_thresholds,
        "roc_auc": float(metrics.roc_auc_score(y_true, p_surface)) if both_classes else None,
        "pr_auc": float(metrics.average_precision_score(y_true, p_surface)) if both_classes else None,
        "surface_share": float(y_true.mean()) if len(y_true) else None,
    }


def _predicted(predictions: pd.DataFrame, threshold: float = 0.5) -> pd.Series:
    if "predicted" in predictions:
        return predictions["predicted"].astype(int)
    return (predictions["p_surface"] >= threshold).astype(int)


def breakdown(predictions: pd.DataFrame, by: str) -> pd.DataFrame:
    """Scores per group of column ``by`` (e.g. ``msl_name``, ``instrument``, ``sol_range``).

    ``predictions`` needs ``label``, ``predicted`` (or ``p_surface``) and ``by``. One row per group
    (index named ``by``, groups in sorted order): ``n``, ``n_rover``, ``n_surface``, ``accuracy``,
    ``predicted_surface_share``, ``errors``, ``false_surface`` (Rover predicted Surface),
    ``false_rover`` (Surface predicted Rover) and ``mean_p_surface`` (when ``p_surface`` is given).
    """
    frame = pd.DataFrame({
        "group": predictions[by].to_numpy(),
        "label": predictions["label"].astype(int).to_numpy(),
        "predicted": _predicted(predictions).to_numpy(),
    })
    frame["correct"] = frame["label"] == frame["predicted"]
    frame["false_surface"] = (frame["label"] == 0) & (frame["predicted"] == 1)
    frame["false_rover"] = (frame["label"] == 1) & (frame["predicted"] == 0)
    if "p_surface" in predictions:
        frame["p_surface"] = predictions["p_surface"].astype(float).to_numpy()
    grouped = frame.groupby("group", sort=True)
    table = pd.DataFrame({
        "n": grouped.size(),
        "n_rover": grouped["label"].apply(lambda s: int((s == 0).sum())),
        "n_surface": grouped["label"].sum(),
        "accuracy": grouped["correct"].mean(),
        "predicted_surface_share": grouped["predicted"].mean(),
        "errors": grouped["correct"].apply(lambda s: int((~s).sum())),
        "false_surface": grouped["false_surface"].sum(),
        "false_rover": grouped["false_rover"].sum(),
    })
    if "p_surface" in frame:
        table["mean_p_surface"] = grouped["p_surface"].mean()
    for column in ("n", "n_rover", "n_surface", "errors", "false_surface", "false_rover"):
        table[column] = table[column].astype(int)
    table.index.name = by
    return table


THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)


def balanced_accuracy_at(y_true, p_surface, threshold: float = 0.5) -> float:
    """Balanced accuracy of predicting Surface when ``p_surface >= threshold`` (NaN without both labels, or for a
    NaN threshold: none was chosen)."""
    if np.isnan(threshold):
        return float("nan")
    return _balanced_accuracy_or_nan(np.asarray(y_true), (np.asarray(p_surface) >= threshold).astype(int))


def best_threshold(y_true, p_surface, grid: np.ndarray = THRESHOLD_GRID) -> float:
    """The threshold on P(Surface) of ``grid`` with the highest balanced accuracy; ties go to the one nearest
    0.5, the threshold every model here is scored at."""
    scores = np.array([balanced_accuracy_at(y_true, p_surface, threshold) for threshold in grid])
    if np.isnan(scores).all():
        raise ValueError("a threshold cannot be chosen without both labels among the images")
    best = np.flatnonzero(scores == np.nanmax(scores))
    return float(grid[best[np.argmin(np.abs(grid[best] - 0.5))]])


def group_records(predictions: pd.DataFrame, by: str) -> list[dict]:
    """:func:`breakdown` as JSON-ready records, one per group in sorted order: ``group``, ``n``, ``accuracy``,
    ``errors``. A group with a non-finite ``p_surface`` (a diverged model) has no score: NaN accuracy, no errors
    counted."""
    table = breakdown(predictions, by)
    unscored = set()
    if "p_surface" in predictions:
        finite = np.isfinite(predictions["p_surface"].astype(float).to_numpy())
        unscored = set(predictions.loc[~finite, by])
    return [{"group": str(group), "n": int(row["n"]),
             **({"accuracy": float("nan"), "errors": None} if group in unscored else
                {"accuracy": float(row["accuracy"]), "errors": int(row["errors"])})}
            for group, row in table.iterrows()]


def sol_ranges(sol: pd.Series, width: int = 100) -> pd.Series:
    """Each sol's range of ``width`` sols as a sortable label, e.g. ``"0300-0399"`` for sol 342."""
    low = (pd.Series(sol).astype(int) // width) * width
    return low.map(lambda start: f"{start:04d}-{start + width - 1:04d}").rename("sol_range")


def _confidence(p_surface: np.ndarray) -> np.ndarray:
    """Confidence of the predicted class: max(p, 1 - p)."""
    return np.maximum(p_surface, 1 - p_surface)


def coverage_curve(y_true: np.ndarray, p_surface: np.ndarray,
                   thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """What answering only confident images buys: one row per confidence threshold.

    An image is kept when the confidence of its predicted class, max(p, 1 - p), is at least the
    threshold. Columns: ``threshold``, ``n_kept``, ``coverage`` (share kept), ``accuracy`` and
    ``balanced_accuracy`` on the kept images (NaN when none is kept; balanced accuracy NaN unless
    both classes are kept). Thresholds default to 0.5, 0.51, ..., 1.0.
    """
    y_true = np.asarray(y_true).astype(int)
    p_surface = np.asarray(p_surface, dtype="float64")
    thresholds = np.linspace(0.5, 1, 51) if thresholds is None else np.asarray(thresholds, dtype=float)
    confidence = _confidence(p_surface)
    y_pred = (p_surface >= 0.5).astype(int)
    rows = []
    for threshold in thresholds:
        kept = confidence >= threshold - 1e-12  # tolerance: linspace gives 0.9000000000000001
        n_kept = int(kept.sum())
        rows.append({
            "threshold": float(threshold),
            "n_kept": n_kept,
            "coverage": n_kept / len(y_true) if len(y_true) else float("nan"),
            "accuracy": float(metrics.accuracy_score(y_true[kept], y_pred[kept])) if n_kept else float("nan"),
            "balanced_accuracy": _balanced_accuracy_or_nan(y_true[kept], y_pred[kept]),
        })
    return pd.DataFrame(rows)


def at_confidence(y_true: np.ndarray, p_surface: np.ndarray, threshold: float = 0.9) -> dict[str, object]:
    """Coverage and accuracy when only images with confidence >= ``threshold`` are answered."""
    row = coverage_curve(y_true, p_surface, [threshold]).iloc[0]
    return {
        "threshold": float(threshold),
        "n_kept": int(row["n_kept"]),
        "coverage": _optional_float(row["coverage"]),
        "accuracy": _optional_float(row["accuracy"]),
        "balanced_accuracy": _optional_float(row["balanced_accuracy"]),
    }


def most_confident_errors(predictions: pd.DataFrame, k: int = 12, *, one_per: pd.Series | None = None) -> pd.DataFrame:
    """The ``k`` wrong predictions made with the highest confidence, most confident first.

    ``predictions`` needs ``label`` and ``p_surface`` (``predicted`` is derived at 0.5 when absent).
    A ``confidence`` column (probability given to the wrong answer) is added. Given ``one_per`` (a key per
    row of ``predictions``, such as :func:`marsrover.dataset.observation_sequences`), only the most confident
    error of each key is kept, and ``errors_like_it`` counts the errors of its key (itself included).
    """
    predicted = _predicted(predictions)
    wrong = predictions[predicted != predictions["label"].astype(int)].copy()
    p = wrong["p_surface"].astype(float)
    wrong["confidence"] = np.where(predicted[wrong.index] == 1, p, 1 - p)
    wrong = wrong.sort_values("confidence", ascending=False, kind="stable")
    if one_per is not None:
        keys = one_per.loc[wrong.index]
        wrong["errors_like_it"] = keys.map(keys.value_counts()).to_numpy()
        wrong = wrong[~keys.duplicated().to_numpy()]
    return wrong.head(k)


def one_of_each(rows: pd.DataFrame, one_per: pd.Series, seed: int) -> pd.DataFrame:
    """One row of ``rows`` per key of ``one_per`` (a key per row), drawn at random, so that every key is
    equally likely to be drawn next however many rows it has."""
    return rows.groupby(one_per.loc[rows.index].to_numpy(), sort=True).sample(n=1, random_state=seed)


def correct_and_wrong(predictions: pd.DataFrame, count: int, seed: int, *,
                      one_per: pd.Series | None = None) -> pd.DataFrame:
    """Examples to explain: ``count // 2`` correct predictions drawn at random, then the ``count // 2`` most
    confident errors (fewer of either when the split has fewer); given ``one_per``, as in
    :func:`most_confident_errors`, at most one image of each key on either side."""
    correct = predictions[_predicted(predictions) == predictions["label"].astype(int)]
    if one_per is not None:
        correct = one_of_each(correct, one_per, seed)
    drawn = correct.sample(n=min(count // 2, len(correct)), random_state=seed)
    return pd.concat([drawn, most_confident_errors(predictions, count // 2, one_per=one_per)])


def average_predictions(frames: list[pd.DataFrame], threshold: float = 0.5) -> pd.DataFrame:
    """An ensemble's predictions: the mean of several runs' P(Surface) on the same images.

    Every frame must list the same images (``id``) in the same order, as one split of one index does;
    the result keeps the first frame's other columns, with ``p_surface`` averaged and ``predicted`` anew.
    """
    if not frames:
        raise ValueError("no predictions to average")
    ids = frames[0]["id"].to_numpy()
    for frame in frames[1:]:
        if not np.array_equal(frame["id"].to_numpy(), ids):
            raise ValueError("the predictions to average must list the same images in the same order")
    averaged = frames[0].copy()
    averaged["p_surface"] = np.mean([frame["p_surface"].to_numpy(dtype=float) for frame in frames], axis=0)
    averaged["predicted"] = (averaged["p_surface"] >= threshold).astype(int)
    return averaged


def group_names(frame: pd.DataFrame, by: str | tuple[str, ...] = ("msl_name", "instrument")) -> pd.Series:
    """Each row's group, e.g. ``"wheel · Mastcam left"``; a missing value reads ``unknown``."""
    columns = [by] if isinstance(by, str) else list(by)
    values = frame[columns].astype(object).where(frame[columns].notna(), "unknown")
    return pd.Series([" · ".join(map(str, row)) for row in values.itertuples(index=False)],
                     index=frame.index, name="group", dtype=object)


def instrument_label_group(frame: pd.DataFrame) -> pd.Series:
    """Each row's instrument x label group, e.g. ``MAHLI · Surface``: the groups ``improved``'s loss balances."""
    return group_names(frame, ("instrument", "label_name"))


def errors_against_training(predictions: pd.DataFrame, training: pd.DataFrame,
                            by: str | tuple[str, ...] = ("msl_name", "instrument")) -> pd.DataFrame:
    """Test errors per group of ``by`` beside how many images of that group the model trained on.

    Under a shifted split, errors piled up in a group that training barely covers say what data is
    missing rather than what the model lacks. One row per group seen in ``predictions`` (index
    ``group``, e.g. ``"wheel · Mastcam left"``), most errors first: ``n``, ``errors``, ``accuracy``,
    ``share_of_errors`` (of all the run's errors) and ``trained_on`` (rows of ``training`` in that group).
    """
    table = breakdown(predictions.assign(group=group_names(predictions, by)), "group")[["n", "errors", "accuracy"]]
    total_errors = int(table["errors"].sum())
    table["share_of_errors"] = table["errors"] / total_errors if total_errors else 0.0
    table["trained_on"] = _images_per_group(training, by).reindex(table.index).fillna(0).astype(int)
    return table.sort_values(["errors", "n"], ascending=False, kind="stable")


def _images_per_group(frame: pd.DataFrame, by: str | tuple[str, ...]) -> pd.Series:
    return group_names(frame, by).value_counts() if len(frame) else pd.Series(dtype=int)


# Fewer images of a group (a class seen by one instrument) than this in training: a handful, too few to
# learn the group's look from, so a model must get those images right from what other groups taught it.
RARELY_TRAINED_BELOW = 10


def rarely_trained(evaluated: pd.DataFrame, training: pd.DataFrame, *,
                   by: str | tuple[str, ...] = ("msl_name", "instrument"),
                   fewer_than: int = RARELY_TRAINED_BELOW) -> dict[str, object]:
    """How much of ``evaluated`` is of a group (e.g. ``wheel · Mastcam left``) that ``training`` barely holds.

    A fact of the split, before any model: under a shift like the official split's, a share of the
    evaluation images can only be right by generalising across groups. Returns ``fewer_than``, ``n``
    (images evaluated), ``rare`` (those of a group with fewer than ``fewer_than`` images in ``training``),
    ``share`` (``rare / n``) and ``groups``: one record per such group, most images first, with
    ``group``, ``n`` and ``trained_on``.
    """
    counts = _images_per_group(evaluated, by)
    trained_on = _images_per_group(training, by).reindex(counts.index).fillna(0).astype(int)
    table = pd.DataFrame({"n": counts.astype(int), "trained_on": trained_on})
    rare = table[table["trained_on"] < fewer_than].sort_index().sort_values("n", ascending=False, kind="stable")
    images, rare_images = len(evaluated), int(rare["n"].sum())
    return {"fewer_than": int(fewer_than), "n": images, "rare": rare_images,
            "share": rare_images / images if images else None,  # None, not NaN: it goes into JSON
            "groups": [{"group": group, "n": int(row.n), "trained_on": int(row.trained_on)}
                       for group, row in rare.iterrows()]}


def accuracy_needed_on_rare(target: float, share: float) -> float:
    """The least accuracy on the rarely trained share of a split that still lets a model reach ``target``
    accuracy on the whole split, even with every other image right (0 when the share is small enough to
    get all of it wrong)."""
    if not share:  # none of them, or nothing scored
        return 0.0
    return max(0.0, 1 - (1 - target) / share)


def accuracy_by_training_coverage(error_groups: pd.DataFrame,
                                  fewer_than: int = RARELY_TRAINED_BELOW) -> dict[str, object]:
    """A run's accuracy on the images of rarely trained groups and on the rest, from its
    :func:`errors_against_training` table. Plain numbers for ``metrics.json``: ``fewer_than``, and for
    ``rare`` and ``rest`` each ``n`` and ``accuracy`` (None for no images)."""
    rare = error_groups["trained_on"] < fewer_than

    def part(rows: pd.DataFrame) -> dict[str, object]:
        images = int(rows["n"].sum())
        return {"n": images, "accuracy": 1 - float(rows["errors"].sum()) / images if images else None}

    return {"fewer_than": int(fewer_than), "rare": part(error_groups[rare]), "rest": part(error_groups[~rare])}
