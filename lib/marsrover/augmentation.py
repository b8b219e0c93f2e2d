"""Data augmentation as Keras preprocessing layers, run on batches inside the model.

The layers are only active while training (``training=True``), so a saved model carries its
augmentation but predicts on untouched images. Inputs are pixel values in [0, 255].
"""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="marsrover")
class TrainingOnlyRandomGrayscale(layers.RandomGrayscale):
    """Keras' RandomGrayscale, drawing random numbers only while training.

    Keras 3's layer draws its per-image coin flips even with ``training=False`` and discards them,
    so every validation batch advanced the training augmentation's random stream: the images a model
    trained on depended on the validation batch size. The other random layers already skip the draw.
    """

    def get_random_transformation(self, images, training=True, seed=None):
        if not training:
            return None
        return super().get_random_transformation(images, training=training, seed=seed)


# Each recipe: (description, function of seed -> list of layers)
AUGMENTATIONS = {
    "none": "no augmentation",
    "flip": "random horizontal flip (the seed notebook)",
    "seed_blog": "random rotation (±10%), zoom (±10%) and horizontal flip (the seed blog)",
    "strong": "flips, rotation, zoom, translation, brightness, contrast and random greyscale",
    "photometric": "horizontal flip, brightness, contrast and random greyscale (no geometric warp)",
    "closeup": "photometric, plus zooming in by up to 50% (MAHLI-like close-ups from Mastcam frames)",
}


def augmentation_layers(name: str, seed: int) -> list[keras.layers.Layer]:
    """The layers of recipe ``name``; each layer gets its own seed derived from ``seed``."""
    if name == "none":
        return [layers.Identity()]  # keeps the block (and model structure) the same without augmentation
    if name == "flip":
        return [layers.RandomFlip("horizontal", seed=seed)]
    if name == "seed_blog":
        return [
            layers.RandomRotation(0.1, seed=seed),
            layers.RandomZoom(0.1, seed=seed + 1),
            layers.RandomFlip("horizontal", seed=seed + 2),
        ]
    if name == "strong":
        return [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.15, seed=seed + 1),
            layers.RandomZoom(0.15, seed=seed + 2),
            layers.RandomTranslation(0.1, 0.1, seed=seed + 3),
            layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed + 4),
            layers.RandomContrast(0.3, seed=seed + 5),
            TrainingOnlyRandomGrayscale(factor=0.2, seed=seed + 6),
        ]
    if name == "photometric":
        # Mastcam and MAHLI differ in exposure and colour, not in geometry: vary those, cheaply.
        return [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomBrightness(0.2, value_range=(0, 255), seed=seed + 4),
            layers.RandomContrast(0.3, seed=seed + 5),
            TrainingOnlyRandomGrayscale(factor=0.2, seed=seed + 6),
        ]
    if name == "closeup":
        # Validation and test are mostly MAHLI close-ups; train is mostly wide Mastcam frames.
        return augmentation_layers("photometric", seed) + [
            layers.RandomZoom((-0.5, 0.0), fill_mode="reflect", seed=seed + 7),
        ]
    raise KeyError(f"unknown augmentation {name!r}; choose from {sorted(AUGMENTATIONS)}")


def build_augmentation(name: str, seed: int = 42) -> keras.Sequential:
    """Recipe ``name`` as one ``keras.Sequential`` block named ``augmentation``."""
    return keras.Sequential(augmentation_layers(name, seed), name="augmentation")
