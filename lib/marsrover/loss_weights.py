"""How the training loss is weighted: by label, or by instrument x label group.

Kept apart from ``training`` (TensorFlow's input pipeline) so that code running on another Keras backend
(``sweep``, on a GPU machine without TensorFlow) weights its loss the same way.
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight


def balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    """Loss weights that make both labels count equally (scikit-learn's "balanced")."""
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def instrument_balance_weights(groups: np.ndarray) -> np.ndarray:
    """Per-image loss weights under which each group (instrument x label) counts more evenly.

    The fully balancing weight is N / (G * n_group); its square root is used, scaled to mean 1. The
    training split's instrument predicts its label (Mastcam frames mostly Surface, MAHLI frames mostly
    Rover, the reverse of validation and test); full weights would count its 52 MAHLI Surface images
    12 times each, which a model memorises.
    """
    groups = np.asarray(groups)
    _, group_of_image, group_sizes = np.unique(groups, return_inverse=True, return_counts=True)
    weights = np.sqrt(len(groups) / (len(group_sizes) * group_sizes[group_of_image]))
    return (weights / weights.mean()).astype("float32")
