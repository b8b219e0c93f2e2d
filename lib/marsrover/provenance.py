"""What a result was produced with: the commit, library versions and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

from .config import PROJECT_ROOT

RECORDED_PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "pandas", "pillow", "papermill")


def git_commit() -> str:
    """The checkout's commit (``-dirty`` when tracked files changed), or ``unknown`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=PROJECT_ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions(packages=RECORDED_PACKAGES) -> dict[str, str | None]:
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def run_environment() -> dict[str, object]:
    """Commit, library versions and machine, recorded beside every run's metrics."""
    import tensorflow as tf  # here, so that reading provenance needs no TensorFlow elsewhere

    return {
        "commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "versions": package_versions(),
    }
