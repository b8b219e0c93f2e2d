"""Figures for the notebooks and the report. Each function returns its matplotlib figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .config import CHART_SUFFIX, CLASS_NAMES, PHOTO_SUFFIX
from .dataset import load_image


JPEG_QUALITY = 85
_JPEG_OPTIONS = {"pil_kwargs": {"quality": JPEG_QUALITY}}  # for savefig, inline and saved alike


def draws_images(fig: plt.Figure) -> bool:
    """Whether ``fig`` draws images (``imshow``, ``figimage``, in any axes or subfigure): the sample grids,
    augmentations, Grad-CAM and prediction galleries. Seaborn heatmaps are meshes, not images: charts."""
    from matplotlib.image import AxesImage, FigureImage

    return bool(fig.findobj(lambda artist: isinstance(artist, (AxesImage, FigureImage))))


def _inline_image(fig: plt.Figure, image_format: str) -> str:
    from IPython.core.pylabtools import print_figure

    return print_figure(fig, image_format, base64=True, **(_JPEG_OPTIONS if image_format == "jpeg" else {}))


def setup_notebook(dpi: int = 72) -> None:
    """Figures shown in notebooks at a modest resolution, photographs as JPEG, so the report stays small.

    Inline figures are embedded in the executed notebook and again in its HTML: a figure of photographs
    is shown as JPEG, any other figure as PNG. Call it again after ``%config InlineBackend.figure_formats``
    or ``%matplotlib`` switches back to inline: IPython then resets the formats to its own.
    """
    plt.rcParams["figure.dpi"] = dpi
    from IPython import get_ipython
    from matplotlib.figure import Figure

    shell = get_ipython()
    if shell is None:  # a plain Python session: nothing is displayed inline
        return
    # Load the backend now: the inline backend, when first loaded, resets the figure formatters.
    plt.switch_backend(plt.get_backend())
    formatters = shell.display_formatter.formatters
    # A formatter returning None leaves its MIME type out, so each figure is embedded once.
    formatters["image/png"].for_type(Figure, lambda fig: None if draws_images(fig) else _inline_image(fig, "png"))
    formatters["image/jpeg"].for_type(Figure, lambda fig: _inline_image(fig, "jpeg") if draws_images(fig) else None)


def save_fig(fig: plt.Figure, name: str, figures_dir: Path, *, dpi: int = 100) -> Path:
    """Save ``fig`` as ``figures_dir/name.jpg`` (photographs) or ``name.png`` (charts); return the path.

    Once it is saved, the other format's file of the same name, left by an earlier version, is removed.
    """
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    photographs = draws_images(fig)
    suffix, other_suffix = (PHOTO_SUFFIX, CHART_SUFFIX) if photographs else (CHART_SUFFIX, PHOTO_SUFFIX)
    path = figures_dir / f"{name}{suffix}"
    if fig.get_layout_engine() is None:  # a figure laid out as it was made (constrained) keeps that layout
        fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches="tight", **(_JPEG_OPTIONS if photographs else {}))
    (figures_dir / f"{name}{other_suffix}").unlink(missing_ok=True)
    return path


def remove_stale_figures(figures_dir: Path, family: str, kept: Sequence[Path]) -> list[Path]:
    """Remove the figures of ``family`` (``family.png``, ``family_<anything>.jpg``, ...) not in ``kept``.

    Per-run figures are named after runs; when a later study no longer has a run, its figure would
    otherwise stay in the report beside the current ones. Returns the removed paths, and prints them.
    """
    kept_names = {Path(path).name for path in kept}
    removed = []
    for path in sorted(Path(figures_dir).glob(f"{family}*")):
        is_family = path.stem == family or path.stem.startswith(family + "_")
        if is_family and path.suffix in (PHOTO_SUFFIX, CHART_SUFFIX) and path.name not in kept_names:
            path.unlink()
            removed.append(path)
    if removed:
        print(f"Removed {len(removed)} figure(s) of runs this study no longer has: "
              + ", ".join(path.name for path in removed))
    return removed


def image_grid(images: Sequence, titles: Sequence[str], *, columns: int = 6, size: float = 2.0,
               title_colors: Sequence[str] | None = None, suptitle: str | None = None) -> plt.Figure:
    """Images (paths or arrays) in a grid with one caption each."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    # constrained: a caption of two or three lines stays clear of the row above
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 1.15), squeeze=False,
                             layout="constrained")
    for position, ax in enumerate(axes.flat):
        ax.axis("off")
        if position >= len(images):
            continue
        image = images[position]
        ax.imshow(load_image(image) if isinstance(image, (str, Path)) else image)
        color = title_colors[position] if title_colors else "black"
        ax.set_title(titles[position], fontsize=8, color=color)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def count_bars(table: pd.DataFrame, *, title: str, horizontal: bool = False) -> plt.Figure:
    """Grouped bars of a counts table (rows: categories, columns: splits)."""
    data = table.drop(columns=["total"], errors="ignore")
    height = max(3.0, 0.3 * len(data)) if horizontal else 3.5
    fig, ax = plt.subplots(figsize=(8, height))
    data.plot(kind="barh" if horizontal else "bar", ax=ax)
    ax.set_title(title)
    ax.set_xlabel("images" if horizontal else "")
    if not horizontal:
        ax.set_ylabel("images")
        ax.tick_params(axis="x", rotation=0)
    return fig


def training_history(histories: dict[str, dict[str, list[float]]]) -> plt.Figure:
    """Loss and accuracy per epoch, train (solid) and validation (dashed), one colour per model."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 3.8))
    for color, (name, history) in zip(sns.color_palette(n_colors=len(histories)), histories.items()):
        epochs = np.arange(1, len(history["loss"]) + 1)
        for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            ax.plot(epochs, history[key], color=color, marker="o", label=f"{name} train")
            if f"val_{key}" in history:
                ax.plot(epochs, history[f"val_{key}"], color=color, ls="--", marker="o", label=f"{name} val")
    loss_ax.set(title="Loss", xlabel="epoch")
    acc_ax.set(title="Accuracy", xlabel="epoch")
    acc_ax.legend(fontsize=8)
    return fig


def validation_curves(histories: dict[str, dict[str, list[float]]], metric: str = "val_balanced_accuracy", *,
                      title: str = "Validation balanced accuracy per epoch", background: Sequence[str] = ()) -> plt.Figure:
    """One line per run of a validation metric against the epoch (ablations side by side); the first run
    is drawn thick, runs named in ``background`` (e.g. seed repeats of the first) thin and grey."""
    fig, ax = plt.subplots(figsize=(9, 4))
    coloured = [name for name in histories if name not in background]
    colors = dict(zip(coloured, sns.color_palette("tab10", n_colors=max(1, len(coloured)))))
    first = next(iter(histories), None)
    for name, history in histories.items():
        values = history[metric]
        style = (dict(color="grey", ls="--", lw=1.0) if name in background else
                 dict(color=colors[name], marker="o", ms=3, lw=2.5 if name == first else 1.2))
        ax.plot(np.arange(1, len(values) + 1), values, label=name, **style)
    ax.set(title=title, xlabel="epoch", ylabel=metric.replace("_", " "))
    ax.legend(fontsize=8, ncol=2)
    return fig


def confusion_heatmap(confusion: Sequence[Sequence[int]], *, title: str, normalize: bool = False,
                      with_counts: bool = False) -> plt.Figure:
    """A seaborn heatmap of a 2x2 confusion matrix (rows: true label, columns: predicted).

    ``normalize`` divides each row by its true-label count; ``with_counts`` then writes each cell's count
    under its share, so one figure holds both."""
    counts = np.asarray(confusion, dtype=float)
    matrix = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None) if normalize else counts
    if normalize and with_counts:
        annot, fmt = np.array([[f"{share:.2f}\n({count:.0f})" for share, count in zip(*rows)]
                               for rows in zip(matrix, counts)]), ""
    else:
        annot, fmt = True, ".2f" if normalize else ".0f"
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    sns.heatmap(matrix, annot=annot, fmt=fmt, cmap="Blues", cbar=False,
                xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, ax=ax)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def prediction_captions(y_true: Sequence[int], p_surface: Sequence[float],
                        notes: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Captions (true label, predicted label and its probability, and a line of ``notes`` where one is not
    empty) and their colours: green when right, red when wrong."""
    titles, colors = [], []
    for truth, probability, note in zip(y_true, p_surface, notes if notes is not None else [""] * len(y_true),
                                        strict=True):
        predicted = int(probability >= 0.5)
        confidence = probability if predicted else 1 - probability
        titles.append(f"true: {CLASS_NAMES[int(truth)]}\npred: {CLASS_NAMES[predicted]} ({confidence:.0%})"
                      + (f"\n{note}" if note else ""))
        colors.append("tab:green" if predicted == int(truth) else "tab:red")
    return titles, colors


def example_predictions(images: Sequence, y_true: Sequence[int], p_surface: Sequence[float], *,
                        columns: int = 4, suptitle: str | None = None,
                        notes: Sequence[str] | None = None) -> plt.Figure:
    """Images captioned with true label, predicted label and its probability, and a line of ``notes`` where one
    is not empty; errors in red."""
    titles, colors = prediction_captions(y_true, p_surface, notes)
    return image_grid(images, titles, columns=columns, size=2.6, title_colors=colors, suptitle=suptitle)


def contact_sheet(index: pd.DataFrame, images_root: Path, *, per_class: int = 6, seed: int = 42,
                  size: float = 1.1) -> plt.Figure:
    """One row per MSL class: a few random images, labelled with the class and its binary label."""
    classes = index.drop_duplicates("msl_class").sort_values("msl_class")
    fig, axes = plt.subplots(len(classes), per_class + 1, squeeze=False,
                             figsize=((per_class + 1) * size + 1.5, len(classes) * size))
    for row_axes, (_, cls) in zip(axes, classes.iterrows()):
        members = index[index["msl_class"] == cls["msl_class"]]
        shown = members.sample(n=min(per_class, len(members)), random_state=seed)
        label_ax, *image_axes = row_axes
        label_ax.axis("off")
        color = "tab:brown" if cls["label_name"] == CLASS_NAMES[1] else "tab:blue"
        label_ax.text(1.0, 0.5, f"{cls['msl_class']} {cls['msl_name']}\n→ {cls['label_name']} ({len(members)})",
                      ha="right", va="center", fontsize=9, color=color, transform=label_ax.transAxes)
        for ax, path in zip(image_axes, list(shown["path"]) + [None] * per_class):
            ax.axis("off")
            if path is not None:
                ax.imshow(load_image(Path(images_root) / path, 96))
    return fig


def augmentation_grid(images: np.ndarray, augmenter, *, repeats: int = 5, title: str = "") -> plt.Figure:
    """Each row: an original image, then ``repeats`` random augmentations of it."""
    fig, axes = plt.subplots(len(images), repeats + 1, figsize=((repeats + 1) * 1.8, len(images) * 1.8),
                             squeeze=False)
    for row_axes, image in zip(axes, images):
        batch = np.repeat(image[None].astype("float32"), repeats, axis=0)
        augmented = np.asarray(augmenter(batch, training=True))
        for ax, shown in zip(row_axes, [image, *augmented]):
            ax.imshow(np.clip(shown, 0, 255).astype("uint8"))
            ax.axis("off")
        row_axes[0].set_title("original", fontsize=8)
    fig.suptitle(title)
    return fig


def roc_pr_curves(curves_by_model: dict[str, dict]) -> plt.Figure:
    """ROC (left) and precision-recall (right) curves of Surface, one colour per model.

    Each value is a :func:`marsrover.evaluation.curves` dict; AUC and average precision go in the legend.
    """
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for color, (name, curve) in zip(sns.color_palette(n_colors=max(1, len(curves_by_model))),
                                    curves_by_model.items()):
        roc_auc, pr_auc = curve.get("roc_auc"), curve.get("pr_auc")
        roc_ax.plot(curve["fpr"], curve["tpr"], color=color,
                    label=f"{name} (AUC {roc_auc:.3f})" if roc_auc is not None else name)
        pr_ax.step(curve["recall"], curve["precision"], where="post", color=color,
                   label=f"{name} (AP {pr_auc:.3f})" if pr_auc is not None else name)
    roc_ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    shares = {curve.get("surface_share") for curve in curves_by_model.values()} - {None}
    if len(shares) == 1:
        pr_ax.axhline(shares.pop(), color="grey", ls=":", lw=1, label="chance (Surface share)")
    roc_ax.set(title="ROC (Surface positive)", xlabel="false positive rate", ylabel="true positive rate",
               xlim=(0, 1), ylim=(0, 1.02))
    pr_ax.set(title="Precision-recall (Surface)", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02))
    roc_ax.legend(fontsize=8, loc="lower right")
    pr_ax.legend(fontsize=8, loc="lower left")
    return fig


def reliability_diagram(tables_by_name: dict[str, pd.DataFrame], *, show_counts: bool = True,
                        title: str = "Reliability diagram") -> plt.Figure:
    """Observed Surface rate against mean predicted P(Surface) per bin, one colour per name.

    Each value is a :func:`marsrover.calibration.reliability_table`. The diagonal is perfect
    calibration; with ``show_counts`` a second, shorter panel shows how many images fall in each bin.
    """
    if show_counts:
        fig, (ax, count_ax) = plt.subplots(2, 1, figsize=(5.5, 6.2), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 1]})
    else:
        fig, ax = plt.subplots(figsize=(5.5, 4.8))
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="perfectly calibrated")
    colors = sns.color_palette(n_colors=max(1, len(tables_by_name)))
    for offset, (color, (name, table)) in enumerate(zip(colors, tables_by_name.items())):
        filled = table[table["count"] > 0]
        ax.plot(filled["mean_predicted"], filled["observed_rate"], color=color, marker="o", label=name)
        if show_counts:
            width = (table["bin_upper"] - table["bin_lower"]).to_numpy() / max(1, len(tables_by_name))
            count_ax.bar(table["bin_lower"] + width * offset, table["count"], width=width, align="edge",
                         color=color, alpha=0.8, label=name)
    ax.set(title=title, ylabel="observed Surface rate", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="upper left")
    if show_counts:
        count_ax.set(xlabel="predicted P(Surface)", ylabel="images", xlim=(0, 1))
    else:
        ax.set_xlabel("predicted P(Surface)")
    return fig


def coverage_plot(curves_by_model: dict[str, pd.DataFrame], mark: float = 0.9) -> plt.Figure:
    """Selective prediction: coverage against the confidence threshold (left) and accuracy
    (solid) and balanced accuracy (dashed) against coverage (right), one colour per model.

    Each value is a :func:`marsrover.evaluation.coverage_curve`; the point at threshold ``mark`` is ringed.
    """
    fig, (cov_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for color, (name, table) in zip(sns.color_palette(n_colors=max(1, len(curves_by_model))),
                                    curves_by_model.items()):
        cov_ax.plot(table["threshold"], table["coverage"], color=color, label=name)
        acc_ax.plot(table["coverage"], table["accuracy"], color=color, label=f"{name} accuracy")
        acc_ax.plot(table["coverage"], table["balanced_accuracy"], color=color, ls="--",
                    label=f"{name} balanced accuracy")
        if mark is not None and len(table):
            row = table.iloc[int(np.argmin(np.abs(table["threshold"].to_numpy() - mark)))]
            cov_ax.plot(row["threshold"], row["coverage"], "o", mfc="none", ms=10, color=color)
            acc_ax.plot(row["coverage"], row["accuracy"], "o", mfc="none", ms=10, color=color)
    if mark is not None:
        cov_ax.axvline(mark, color="grey", ls=":", lw=1)
    cov_ax.set(title="Images answered", xlabel="confidence threshold max(p, 1-p)", ylabel="coverage",
               ylim=(0, 1.02))
    acc_ax.set(title="Accuracy on the answered images", xlabel="coverage", ylabel="score")
    cov_ax.legend(fontsize=8)
    acc_ax.legend(fontsize=7)
    return fig


def breakdown_bars(table: pd.DataFrame, *, title: str, metric: str = "accuracy") -> plt.Figure:
    """Horizontal bars of ``metric`` per group of a :func:`marsrover.evaluation.breakdown` table,
    sorted best (top) to worst, each annotated with its number of images."""
    data = table.sort_values(metric, ascending=False)
    labels = [str(group) for group in data.index]
    fig, ax = plt.subplots(figsize=(8, max(2.5, 0.32 * len(data) + 1)))
    sns.barplot(x=data[metric].to_numpy(), y=labels, hue=labels, palette="viridis", legend=False, ax=ax)
    for position, (value, n) in enumerate(zip(data[metric], data["n"])):
        ax.text(value + 0.01 if np.isfinite(value) else 0.01, position, f"n={int(n)}", va="center", fontsize=8)
    ax.set(title=title, xlabel=metric.replace("_", " "), ylabel=data.index.name or "", xlim=(0, 1.12))
    return fig


def gradcam_figure(model, examples: pd.DataFrame, images_root: Path, *, suptitle: str) -> plt.Figure:
    """Grad-CAM of ``model`` on the ``examples`` rows' images (``path``, ``label``, ``p_surface``), read at the
    model's input size; each caption gives the probability in ``p_surface`` (an average's, for its models)."""
    from .gradcam import grad_cam

    size = int(model.input_shape[1])
    images = np.stack([load_image(Path(images_root) / path, size) for path in examples["path"]])
    heatmaps = grad_cam(model, images.astype("float32"))
    return gradcam_grid(images, heatmaps, y_true=examples["label"].tolist(), p_surface=examples["p_surface"].tolist(),
                        suptitle=suptitle)


def gradcam_grid(images: Sequence, heatmaps: Sequence, titles: Sequence[str] | None = None, *,
                 y_true: Sequence[int] | None = None, p_surface: Sequence[float] | None = None,
                 columns: int = 4, side_by_side: bool = True, alpha: float = 0.4, size: float = 2.2,
                 suptitle: str | None = None) -> plt.Figure:
    """Grad-CAM overlays in a grid: per image the image and its overlay side by side (or the overlay
    only), ``columns`` images per row. Captions are ``titles``, or, given ``y_true`` and
    ``p_surface``, true label, predicted label and its probability (errors in red)."""
    from .gradcam import overlay

    colors = None
    if titles is None and y_true is not None and p_surface is not None:
        titles, colors = prediction_captions(y_true, p_surface)
    titles = list(titles) if titles is not None else [""] * len(images)
    per_image = 2 if side_by_side else 1
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns * per_image, squeeze=False,
                             figsize=(columns * per_image * size, rows * size * 1.2), layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for position, (image, heatmap) in enumerate(zip(images, heatmaps)):
        row, column = divmod(position, columns)
        image = load_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
        shown = np.clip(image, 0, 255).astype("uint8")
        image_axes = axes[row, column * per_image:(column + 1) * per_image]
        if side_by_side:
            image_axes[0].imshow(shown)
        image_axes[-1].imshow(overlay(shown, heatmap, alpha))
        image_axes[0].set_title(titles[position], fontsize=8, color=colors[position] if colors else "black",
                                loc="left" if side_by_side else "center")
    if suptitle:
        fig.suptitle(suptitle)
    return fig
