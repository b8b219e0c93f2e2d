"""Every path and constant the project uses, in one place.

Layout follows cookiecutter-data-science: ``data/raw`` holds the immutable archive, ``data/interim``
the extracted images, ``data/processed`` the index table and image caches; outputs go to
``reports/`` and trained models to ``models/``.

Environment variables (all optional):

- ``MARSROVER_HOME``: the project root, when the package is installed outside its checkout.
- ``MARSROVER_DATA_DIR``: where ``data/`` lives (default: ``<root>/data``).
- ``MARSROVER_MIRROR``: a folder holding ``msl-images.zip`` and ``SHA256SUMS``; when set, the
  archive is taken from there instead of Zenodo (CI points it at ``../shared/data``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def _find_project_root() -> Path:
    if os.environ.get("MARSROVER_HOME"):
        return Path(os.environ["MARSROVER_HOME"]).expanduser().resolve()
    for candidate in PACKAGE_DIR.parents:
        if (candidate / "pyproject.toml").is_file() and (candidate / "notebooks").is_dir():
            return candidate
    return Path.cwd().resolve()


PROJECT_ROOT = _find_project_root()
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
REPORTS_DIR = PROJECT_ROOT / "reports"
SIDE_CHECKS_DIR = REPORTS_DIR / "side_checks"  # python -m marsrover.diagnostics: validation-only checks of a run
MODELS_DIR = PROJECT_ROOT / "models"
# Report figures: photographs as JPEG (five to ten times smaller than PNG), charts as PNG (sharp lines).
PHOTO_SUFFIX, CHART_SUFFIX = ".jpg", ".png"

# The data set: Stanboli & Wagstaff (2017), DOI 10.5281/zenodo.1049137.
ZENODO_RECORD_ID = "1049137"
ZENODO_API_URL = "https://zenodo.org/api"
ARCHIVE_NAME = "msl-images.zip"
ARCHIVE_TOP = "msl-images"
MIRROR_ENV = "MARSROVER_MIRROR"
SPLITS = ("train", "val", "test")
EXPECTED_SPLIT_SIZES = {"train": 3746, "val": 1640, "test": 1305}

# Binary labels: index 1 is the "positive" class for probabilities and ROC curves.
CLASS_NAMES = ("Rover", "Surface")

GITHUB_REPO = "marsrover-study/marsrover"


@dataclass(frozen=True)
class DataPaths:
    """The folders under one ``data/`` root."""

    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def interim(self) -> Path:
        return self.root / "interim"

    @property
    def processed(self) -> Path:
        return self.root / "processed"

    @property
    def archive(self) -> Path:
        return self.raw / ARCHIVE_NAME

    @property
    def images_root(self) -> Path:
        """Folder the split files' relative paths (``calibrated/...``) resolve against."""
        return self.interim / ARCHIVE_TOP

    @property
    def index_csv(self) -> Path:
        return self.processed / "index.csv"

    @property
    def cache(self) -> Path:
        return self.processed / "cache"

    @property
    def labels(self) -> Path:
        return self.root / "labels"


def data_paths(data_dir: str | os.PathLike | None = None) -> DataPaths:
    """Paths under ``data_dir``, or the configured default ``data/`` folder."""
    if data_dir is None:
        data_dir = os.environ.get("MARSROVER_DATA_DIR") or PROJECT_ROOT / "data"
    return DataPaths(Path(data_dir).expanduser().resolve())


def mirror_dir() -> Path | None:
    """The local mirror folder named by ``MARSROVER_MIRROR``, if any."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser().resolve() if value else None


def display_path(path: str | os.PathLike) -> str:
    """``path`` relative to the project root when it lies inside it (for reports read on other machines)."""
    try:
        return str(Path(path).resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
