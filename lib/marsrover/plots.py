"""Figures for the notebooks and the report. Each function returns its matplotlib figure."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from .config import CLASS_NAMES
from .dataset import load_image


def save_fig(fig: plt.Figure, name: str, figures_dir: Path, *, dpi: int = 100) -> Path:
    """Save ``fig`` as ``figures_dir/name.png`` (tight layout) and return the path."""
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    path = figures_dir / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def image_grid(images: Sequence, titles: Sequence[str], *, columns: int = 6, size: float = 2.0,
               title_colors: Sequence[str] | None = None, suptitle: str | None = None) -> plt.Figure:
    """Images (paths or arrays) in a grid with one caption each."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * size, rows * size * 1.15), squeeze=False)
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


def confusion_heatmap(confusion: Sequence[Sequence[int]], *, title: str, normalize: bool = False) -> plt.Figure:
    """A seaborn heatmap of a 2x2 confusion matrix (rows: true label, columns: predicted)."""
    matrix = np.asarray(confusion, dtype=float)
    if normalize:
        matrix = matrix / np.clip(matrix.sum(axis=1, keepdims=True), 1, None)
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    sns.heatmap(matrix, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", cbar=False,
                xticklabels=CLASS_NAMES, yticklabels=CLASS_NAMES, ax=ax)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def example_predictions(images: Sequence, y_true: Sequence[int], p_surface: Sequence[float], *,
                        columns: int = 4, suptitle: str | None = None) -> plt.Figure:
    """Images captioned with true label, predicted label and its probability; errors in red."""
    titles, colors = [], []
    for truth, probability in zip(y_true, p_surface):
        predicted = int(probability >= 0.5)
        confidence = probability if predicted else 1 - probability
        titles.append(f"true: {CLASS_NAMES[truth]}\npred: {CLASS_NAMES[predicted]} ({confidence:.0%})")
        colors.append("tab:green" if predicted == truth else "tab:red")
    return image_grid(images, titles, columns=columns, size=2.6, title_colors=colors, suptitle=suptitle)


def contact_sheet(index: pd.DataFrame, images_root: Path, *, per_class: int = 6, seed: int = 42, size: float = 1.4) -> plt.Figure:
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
                ax.imshow(load_image(Path(images_root) / path, 128))
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
