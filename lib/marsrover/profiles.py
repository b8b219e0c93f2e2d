"""Run profiles: the one source of the parameters papermill passes to the notebooks.

- ``smoke``: CI and a first try; a few dozen images per split, small images, one epoch.
- ``full``: the real study on a CPU; every image, each model at its own size and epochs.
- ``gpu``: the full study on Colab's GPU: mixed precision and XLA (off, with a note, on a CPU).

A notebook receives only the keys its ``parameters`` cell declares (see ``runner``).
"""

from __future__ import annotations

from typing import Any

ALL_MODELS = ["seed_notebook", "seed_blog", "improved", "quick_cnn", "transfer"]
# The names of marsrover.ablation.ABLATIONS (kept here so the runner needs no TensorFlow; a test checks).
ALL_ABLATIONS = ["geometric_augmentation", "flip_only", "no_batch_norm", "flatten_dense_head", "group_norm",
                 "per_image_scaling", "unweighted_loss", "label_weighting", "constant_learning_rate", "weight_averaging",
                 "closeup_zoom", "full_resolution_stem", "smaller_images", "larger_images", "plain_recipe"]

# One variant for each of five choices of the improved recipe (augmentation, batch norm, pooling head, loss
# weighting, learning-rate schedule), and the image size both ways.
FULL_ABLATIONS = ["flip_only", "no_batch_norm", "flatten_dense_head", "unweighted_loss", "constant_learning_rate",
                  "smaller_images", "larger_images"]

_COMMON: dict[str, Any] = {
    "seed": 42,
    "max_images_per_split": None,  # None: every image
    "image_size": None,  # None: each model's own size
    "epochs": None,  # None: each model's own number of epochs
    "batch_size": None,  # None: each model's own batch size
    "models": ALL_MODELS,
    # refitted on train+val for the epochs chosen on val, or the recipe's own where it keeps its last epoch
    # ("best_on_val": the winner; "a+b": each of a and b, then their average). `improved` too, whatever wins: the
    # targets are set for it, so it is reported both ways, as the headline is (in `full`, about 10 more minutes:
    # its forward-validation run and the refit).
    "refit": ["best_on_val", "improved"],
    # An average competes for best_on_val only if refitting its models would take at most this many minutes,
    # estimated from their train-only runs (None: no limit). A single model, or an average named above, always does.
    "average_refit_budget_minutes": None,
    # A refit ends by recomputing batch normalisation's running statistics over its fit images, weighted by
    # instrument x label group (marsrover.diagnostics batch-norm: a refit can end with stale running ones).
    "refit_recomputes_batch_norm": True,
    # Variants of the improved recipe, each trained on train and judged on val (marsrover.ablation).
    "ablations": [*FULL_ABLATIONS, "geometric_augmentation", "closeup_zoom", "label_weighting"],
    # The improved recipe again at these seeds (beside the ablations): a rough yardstick of chance for them.
    "seed_repeats": [1, 2, 3],
    "leakage_model": "seed_notebook",  # also trained on the seed blog's random 80/20 split
    "transfer_weights": "imagenet",  # None: the transfer architecture from random weights
    "mixed_precision": False,  # float16 on a GPU
    "jit_compile": False,  # XLA on a GPU
    "cpu_bfloat16": False,  # bfloat16 mixed precision on CPUs with native support
    "bootstrap_samples": 1000,
    "export_headline": False,  # copy the headline model to models/ (the committed full study only)
    "sample_images": 24,
}

PROFILES: dict[str, dict[str, Any]] = {
    # No download in CI: the transfer model is built from random weights there.
    # smoke also names an average, so CI builds, refits and scores one whatever wins its tiny validation set.
    # Its refit budget is one no tiny run can exceed: CI records every average's estimate, and every one competes.
    "smoke": {**_COMMON, "ablations": ALL_ABLATIONS, "max_images_per_split": 40, "image_size": 64, "epochs": 1, "sample_images": 12,
              "transfer_weights": None, "bootstrap_samples": 50, "seed_repeats": [1], "refit": ["best_on_val", "improved+seed_notebook"],
              "average_refit_budget_minutes": 60},
    # full: the study's budget is 2 h on 2 cores (BUDGET_MINUTES). With the common set of ablations and repeats
    # as it was then, the whole study took 136 min at 742b75f; with these less the schedule's variant, 95 min at 7289022 (the
    # README gives the latest run), which that variant should lengthen by about one improved run (4 min there), and
    # the refit of improved whatever wins by about 10 (estimated_refit_seconds, from that run): about 110 in all.
    # The refit is the one stage whose cost depends on what validation picks: an average's own refit is capped
    # at 30 min, so the worst case is near the budget.
    "full": {**_COMMON, "cpu_bfloat16": True, "export_headline": True, "average_refit_budget_minutes": 30,
             "ablations": FULL_ABLATIONS, "seed_repeats": [1, 2]},
    "gpu": {**_COMMON, "batch_size": 64, "mixed_precision": True, "jit_compile": True},
}

# A profile's wall-time budget for the whole study, in minutes: run_log.json and the README say how a run fared.
# full: until the speed work lands, the study must finish inside two hours on the 2-core CPU.
BUDGET_MINUTES: dict[str, float] = {"full": 120}


def get_profile(name: str) -> dict[str, Any]:
    """A copy of profile ``name`` with its own name under ``profile``."""
    if name not in PROFILES:
        raise KeyError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return {"profile": name, **PROFILES[name]}
