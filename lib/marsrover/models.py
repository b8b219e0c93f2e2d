"""The model zoo: the seed's two models as published, and this project's own design.

Every model takes uint8-range RGB images ``(size, size, 3)``, augments them (training only),
rescales to [0, 1] and ends in a two-unit softmax over ``config.CLASS_NAMES`` (Rover, Surface).
Each :class:`ModelSpec` also carries the training recipe the model was published with, so that
``seed_*`` models are trained exactly as their sources describe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import keras
from keras import layers

from .augmentation import build_augmentation
from .config import CLASS_NAMES


@dataclass(frozen=True)
class ModelSpec:
    """A model family and the recipe it is trained with."""

    name: str
    description: str
    image_size: int
    augmentation: str
    epochs: int
    batch_size: int = 32
    learning_rate: float = 1e-3
    build_body: Callable[[keras.KerasTensor], keras.KerasTensor] = field(repr=False, default=None)


def _seed_blog_body(x):
    # The blog: four conv layers, each followed by max pooling and dropout; two dense layers.
    for filters in (32, 64, 128, 128):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
        x = layers.Dropout(0.25)(x)
    x = layers.Flatten()(x)
    return layers.Dense(128, activation="relu")(x)


def _seed_notebook_body(x):
    # The seed repository's notebook: two conv layers (8 and 32 filters), dense 128.
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    return layers.Dense(128, activation="relu")(x)


def _improved_body(x):
    # Batch normalisation keeps training stable across the Mastcam/MAHLI shift; global pooling
    # replaces a large flatten+dense with few parameters, which generalises better on 3.7k images.
    for filters in (32, 64, 128, 256):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(0.3)(x)


MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("seed_blog", "the seed blog's CNN: 4 conv+pool+dropout blocks, 2 dense layers",
                  image_size=224, augmentation="seed_blog", epochs=20, build_body=_seed_blog_body),
        ModelSpec("seed_notebook", "the seed notebook's CNN: 2 conv layers (8, 32), dense 128",
                  image_size=256, augmentation="flip", epochs=15, build_body=_seed_notebook_body),
        ModelSpec("improved", "this project's CNN: 4 double-conv blocks with batch norm, global pooling",
                  image_size=128, augmentation="strong", epochs=30, build_body=_improved_body),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec called ``name``; KeyError lists the known ones."""
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; choose from {sorted(MODEL_SPECS)}") from None


def build_model(name: str, image_size: int | None = None, *, seed: int = 42,
                augment: bool = True) -> keras.Model:
    """An uncompiled model of family ``name`` for square images of ``image_size`` pixels."""
    spec = get_spec(name)
    size = image_size or spec.image_size
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = build_augmentation(spec.augmentation if augment else "none", seed)(inputs)
    x = layers.Rescaling(1.0 / 255, name="rescale")(x)
    x = spec.build_body(x)
    # float32 output keeps softmax stable under mixed precision.
    outputs = layers.Dense(len(CLASS_NAMES), activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def count_parameters(model: keras.Model) -> dict[str, int]:
    """Trainable, non-trainable and total parameter counts."""
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    frozen = sum(int(w.numpy().size) for w in model.non_trainable_weights)
    return {"trainable": trainable, "non_trainable": frozen, "total": trainable + frozen}
