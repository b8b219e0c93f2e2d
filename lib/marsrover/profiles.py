"""Run profiles: the one source of the parameters papermill passes to the notebooks.

- ``smoke``: CI and a first try; a few dozen images per split, small images, one epoch.
- ``full``: the real study on a CPU; every image, each model at its own size and epochs.
- ``gpu``: the full study on Colab's GPU: mixed precision and XLA (off, with a note, on a CPU).

A notebook receives only the keys its ``parameters`` cell declares (see ``runner``).
"""

from __future__ import annotations

from typing import Any

ALL_MODELS = ["seed_notebook", "seed_blog", "improved"]

_COMMON: dict[str, Any] = {
    "seed": 42,
    "max_images_per_split": None,  # None: every image
    "image_size": None,  # None: each model's own size
    "epochs": None,  # None: each model's own number of epochs
    "batch_size": None,  # None: each model's own batch size
    "models": ALL_MODELS,
    "mixed_precision": False,
    "jit_compile": False,
    "sample_images": 24,
}

PROFILES: dict[str, dict[str, Any]] = {
    "smoke": {**_COMMON, "max_images_per_split": 40, "image_size": 64, "epochs": 1, "sample_images": 12},
    "full": dict(_COMMON),
    "gpu": {**_COMMON, "batch_size": 64, "mixed_precision": True, "jit_compile": True},
}


def get_profile(name: str) -> dict[str, Any]:
    """A copy of profile ``name`` with its own name under ``profile``."""
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return {"profile": name, **PROFILES[name]}
