"""The mapping from the data set's 25 MSL classes to the two labels this project predicts.

Surface means the picture shows terrain (ground, horizon, drill holes); every other class shows a
part of the rover or something mounted on it, so it is Rover. This table is the only place the
mapping is written down; notebook 02 shows it with counts so a reader can audit it.
"""

from __future__ import annotations

import numbers

import pandas as pd

from .config import CLASS_NAMES

ROVER, SURFACE = 0, 1

# (MSL class id, name as in msl_synset_words-indexed.txt, binary label, why)
MSL_CLASSES: tuple[tuple[int, str, int, str], ...] = (
    (0, "apxs", ROVER, "instrument on the arm"),
    (1, "apxs cal target", ROVER, "calibration target on the rover"),
    (2, "chemcam cal target", ROVER, "calibration target on the rover"),
    (3, "chemin inlet open", ROVER, "inlet on the rover deck"),
    (4, "drill", ROVER, "tool on the arm"),
    (5, "drill holes", SURFACE, "holes drilled in the terrain"),
    (6, "drt front", ROVER, "dust removal tool on the arm"),
    (7, "drt side", ROVER, "dust removal tool on the arm"),
    (8, "ground", SURFACE, "terrain"),
    (9, "horizon", SURFACE, "terrain"),
    (10, "inlet", ROVER, "inlet on the rover deck"),
    (11, "mahli", ROVER, "camera on the arm"),
    (12, "mahli cal target", ROVER, "calibration target on the rover"),
    (13, "mastcam", ROVER, "camera on the mast"),
    (14, "mastcam cal target", ROVER, "calibration target on the rover"),
    (15, "observation tray", ROVER, "tray on the rover"),
    (16, "portion box", ROVER, "sample hardware on the arm"),
    (17, "portion tube", ROVER, "sample hardware on the arm"),
    (18, "portion tube opening", ROVER, "sample hardware on the arm"),
    (19, "rems uv sensor", ROVER, "sensor on the rover deck"),
    (20, "rover rear deck", ROVER, "rover body"),
    (21, "scoop", ROVER, "sample hardware on the arm"),
    (22, "sun", ROVER, "not terrain: solar images from Mastcam (kept with Rover as specified)"),
    (23, "turret", ROVER, "the arm's tool turret"),
    (24, "wheel", ROVER, "rover wheel"),
)

SURFACE_CLASS_NAMES = frozenset(name for _, name, label, _ in MSL_CLASSES if label == SURFACE)


def label_table() -> pd.DataFrame:
    """One row per MSL class: ``msl_class``, ``msl_name``, ``label`` (0/1), ``label_name``, ``why``."""
    frame = pd.DataFrame(MSL_CLASSES, columns=["msl_class", "msl_name", "label", "why"])
    frame["label_name"] = frame["label"].map(dict(enumerate(CLASS_NAMES)))
    return frame[["msl_class", "msl_name", "label", "label_name", "why"]]


def binary_label(msl_class: int) -> int:
    """0 (Rover) or 1 (Surface) for an MSL class id; KeyError names unknown ids."""
    if not isinstance(msl_class, numbers.Integral) or not 0 <= msl_class < len(MSL_CLASSES):
        raise KeyError(f"unknown MSL class id {msl_class!r}: the data set defines 0-{len(MSL_CLASSES) - 1}")
    return MSL_CLASSES[int(msl_class)][2]


def check_class_names(names: dict[int, str]) -> None:
    """Fail if the archive's class-name file disagrees with the table above."""
    expected = {class_id: name for class_id, name, _, _ in MSL_CLASSES}
    if names != expected:
        differing = sorted(set(names.items()) ^ set(expected.items()))
        raise ValueError(f"class names in the archive differ from marsrover.labels: {differing}")
