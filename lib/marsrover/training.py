"""Training: seeds and determinism, the tf.data input pipeline, fitting and saving a run."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .models import build_model, get_spec
from .provenance import run_environment


def set_seeds(seed: int, *, deterministic: bool = True) -> dict[str, object]:
    """Fix every source of randomness we control, print what was fixed and return it."""
    keras.utils.set_random_seed(seed)  # Python's random, NumPy and TensorFlow
    fixed: dict[str, object] = {"seed": seed, "python_random": True, "numpy": True, "tensorflow": True}
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    fixed["op_determinism"] = deterministic
    fixed["PYTHONHASHSEED"] = os.environ.get("PYTHONHASHSEED", "not set (irrelevant: no hashed iteration)")
    print("Fixed for reproducibility: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    return fixed


def configure_accelerator(*, mixed_precision: bool = False, jit_compile: bool = False) -> dict[str, object]:
    """Mixed precision and XLA where a GPU is present; on a CPU both fall back off, and say so."""
    gpus = tf.config.list_physical_devices("GPU")
    use_mixed = bool(mixed_precision and gpus)
    keras.mixed_precision.set_global_policy("mixed_float16" if use_mixed else "float32")
    settings = {"gpus": len(gpus), "mixed_precision": use_mixed, "jit_compile": bool(jit_compile and gpus)}
    if (mixed_precision or jit_compile) and not gpus:
        print("No GPU found: mixed precision and XLA are off; training runs in float32 on the CPU.")
    print(f"Accelerator settings: {settings}")
    return settings


def make_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, shuffle: bool,
                 seed: int = 42) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 255], int labels) from in-memory uint8 arrays."""
    dataset = tf.data.Dataset.from_tensor_slices((images, labels.astype("int32")))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


@dataclass
class TrainingResult:
    model: keras.Model
    history: dict[str, list[float]]
    seconds: float
    config: dict[str, object]


def train(name: str, train_data: tuple[np.ndarray, np.ndarray], val_data: tuple[np.ndarray, np.ndarray], *,
          image_size: int | None = None, epochs: int | None = None, batch_size: int | None = None,
          seed: int = 42, jit_compile: bool = False, verbose: int = 2) -> TrainingResult:
    """Build model ``name`` and fit it with its published recipe (Adam, sparse cross-entropy)."""
    spec = get_spec(name)
    epochs = epochs or spec.epochs
    batch_size = batch_size or spec.batch_size
    size = image_size or spec.image_size
    fixed = set_seeds(seed)
    model = build_model(name, size, seed=seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=spec.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )
    train_ds = make_dataset(*train_data, batch_size=batch_size, shuffle=True, seed=seed)
    val_ds = make_dataset(*val_data, batch_size=batch_size, shuffle=False)
    started = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose)
    seconds = time.perf_counter() - started
    config = {
        "model": name, "image_size": size, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": spec.learning_rate, "optimizer": "Adam", "augmentation": spec.augmentation,
        "train_images": int(len(train_data[1])), "val_images": int(len(val_data[1])), "seeds": fixed,
    }
    clean_history = {key: [float(v) for v in values] for key, values in history.history.items()}
    return TrainingResult(model, clean_history, seconds, config)


def save_run(result: TrainingResult, output_dir: Path) -> dict[str, Path]:
    """Write ``models/<name>.keras`` and ``runs/<name>.json`` (history, config, timing, env)."""
    output_dir = Path(output_dir)
    name = result.config["model"]
    model_path = output_dir / "models" / f"{name}.keras"
    run_path = output_dir / "runs" / f"{name}.json"
    model_path.parent.mkdir(parents=True, exist_ok=True)
    run_path.parent.mkdir(parents=True, exist_ok=True)
    result.model.save(model_path)
    record = {
        "config": result.config,
        "history": result.history,
        "train_seconds": round(result.seconds, 2),
        "seconds_per_epoch": round(result.seconds / max(1, result.config["epochs"]), 2),
        "environment": run_environment(),
    }
    run_path.write_text(json.dumps(record, indent=2))
    print(f"Saved {model_path} and {run_path}")
    return {"model": model_path, "run": run_path}
