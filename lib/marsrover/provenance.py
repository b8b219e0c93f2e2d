"""What a result was produced with: the commit, library versions and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .config import PROJECT_ROOT

RECORDED_PACKAGES = ("tensorflow", "keras", "numpy", "scikit-learn", "pandas", "pillow", "papermill")


# The study writes these tracked paths itself (README: its results and benchmark tables);
# changing them does not make the code dirty.
STUDY_OUTPUT_PATHS = ("reports", "models", "README.md")


def git_commit(root: Path = PROJECT_ROOT) -> str:
    """The checkout's commit, ``-dirty`` when tracked files outside the study's own outputs changed.

    ``unknown`` outside git. A rerun of the full profile overwrites the committed report, exported
    model and README tables before it records its commit, so those paths are left out of the check.
    """
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root,
                                capture_output=True, text=True, check=True).stdout.strip()
        outside_outputs = [f":(exclude){path}" for path in STUDY_OUTPUT_PATHS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *outside_outputs], cwd=root, capture_output=True, text=True,
                               check=True).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# Read once, when the package is first imported (`import marsrover` imports this module): a notebook's
# kernel does so in its setup cell, `run_all.py` at its start. A commit made while a long run goes on
# changes HEAD, not the code that process already loaded, so reading HEAD at save time would credit
# the run to code it never ran.
_COMMIT_AT_IMPORT = git_commit()


def code_commit() -> str:
    """The commit (and ``-dirty``) of the code this process runs: :func:`git_commit` at import time."""
    return _COMMIT_AT_IMPORT


def package_versions(packages=RECORDED_PACKAGES) -> dict[str, str | None]:
    versions = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


# Instruction sets by which oneDNN (TensorFlow's CPU kernels) chooses its code paths: two CPUs that differ in
# them, or in model, can give a seeded run different last bits, so a record names both.
NUMERIC_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_description(cpuinfo: str | None = None) -> dict[str, object]:
    """The CPU as /proc/cpuinfo names it (vendor, family, model, stepping, model name) and which of
    :data:`NUMERIC_CPU_FLAGS` it has; only ``flags`` (empty) where /proc/cpuinfo cannot be read."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {"flags": []}
    first = cpuinfo.split("\n\n")[0]  # every core repeats the same block
    fields = dict(line.split(":", 1) for line in first.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    described = {name: fields[key] for name, key in (("vendor", "vendor_id"), ("family", "cpu family"),
                                                      ("model", "model"), ("stepping", "stepping"),
                                                      ("model_name", "model name")) if key in fields}
    flags = set(fields.get("flags", "").split())
    return {**described, "flags": [flag for flag in NUMERIC_CPU_FLAGS if flag in flags]}


def recorded_cpu(record: dict) -> dict[str, object]:
    """The CPU a run record (with :func:`run_environment` under ``environment``) was made on, in
    :func:`cpu_description`'s form; {} where the record does not say."""
    return record.get("environment", {}).get("cpu", {})


def has_native_bfloat16(cpu: dict[str, object]) -> bool:
    """Whether a CPU, as :func:`cpu_description` describes it, computes bfloat16 natively (AVX512-BF16 or AMX)."""
    flags = cpu.get("flags") or []
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_label(cpu: dict[str, object]) -> str:
    """``"AMD EPYC (no native bfloat16)"``: a CPU as :func:`cpu_description` describes it, named with what decides
    the ``full`` profile's precision on it; empty when the CPU has no model name."""
    if not cpu.get("model_name"):
        return ""
    return f"{cpu['model_name']} ({'native' if has_native_bfloat16(cpu) else 'no native'} bfloat16)"


def run_environment() -> dict[str, object]:
    """Commit, library versions and machine, recorded beside every run's metrics."""
    import tensorflow as tf  # here, so that reading provenance needs no TensorFlow elsewhere

    return {
        "commit": code_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_description(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "versions": package_versions(),
    }
