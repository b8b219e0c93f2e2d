"""Batch normalisation's statistics at inference: which a model uses, and recomputing them after training.

Kept apart from ``training`` (TensorFlow's input pipeline): it uses Keras alone, so code running on another
Keras backend (``sweep``, on a GPU machine without TensorFlow) ends its refits the way the study does.
"""

from __future__ import annotations

import keras
import numpy as np

from .evaluation import EVAL_BATCH_SIZE


def batch_norm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The model's own BatchNormalization layers, in graph order (not those inside a nested model)."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def batch_norm_description(model: keras.Model) -> str:
    """What a trained model's batch normalisation normalises by at inference, before any recomputation."""
    if batch_norm_layers(model):
        return "running (Keras' moving average)"
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model) and any(
        isinstance(inner, keras.layers.BatchNormalization) for inner in layer.layers)]
    return "a nested model's own, e.g. a pretrained backbone's (never recomputed)" if nested else \
        "none (no batch normalisation)"


def recalibrate_batch_norm(model: keras.Model, images: np.ndarray, weights: np.ndarray | None = None, *,
                           batch_size: int = EVAL_BATCH_SIZE) -> int:
    """Set each BatchNormalization layer's running mean and variance to the statistics of its input over
    ``images`` (each image counted by ``weights``, default 1), with no augmentation ("precise BN").

    Keras keeps running statistics as a moving average over the last few hundred training batches, taken
    from augmented images and from weights that kept changing; inference uses them, training never does
    (a training step normalises by its batch). Layers are done in graph order, each with its predecessors'
    new statistics, as inference will see them. Returns how many layers were set.
    """
    layers_ = batch_norm_layers(model)
    weights = np.ones(len(images)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(weights) != len(images) or not len(images) or weights.sum() <= 0:
        raise ValueError(f"recalibrating batch norm needs images and positive weights, one per image "
                         f"({len(images)} images, {len(weights)} weights summing to {weights.sum():g})")
    for layer in layers_:
        if layer.axis not in (-1, len(layer.input.shape) - 1):
            raise ValueError(f"{layer.name} normalises axis {layer.axis}; only channels-last layers are supported")
        inputs_of_layer = keras.Model(model.input, layer.input)
        total = weighted_sum = weighted_squares = 0.0
        for start in range(0, len(images), batch_size):
            values = np.asarray(inputs_of_layer(images[start:start + batch_size], training=False), dtype=np.float64)
            per_image = values.reshape(len(values), -1, values.shape[-1])  # (image, position, channel)
            batch_weights = weights[start:start + batch_size]
            weighted_sum = weighted_sum + batch_weights @ per_image.sum(1)
            weighted_squares = weighted_squares + batch_weights @ (per_image ** 2).sum(1)
            total += batch_weights.sum() * per_image.shape[1]
        mean = weighted_sum / total
        layer.moving_mean.assign(mean.astype("float32"))
        layer.moving_variance.assign(np.maximum(weighted_squares / total - mean ** 2, 0.0).astype("float32"))
    return len(layers_)
