"""Training: seeds and determinism, the tf.data input pipeline, fitting and saving a run."""

from __future__ import annotations

import gc
import json
import os
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from .config import display_path
from .evaluation import EVAL_BATCH_SIZE
from .batch_norm import batch_norm_description, batch_norm_layers, recalibrate_batch_norm  # noqa: F401 (re-exported)
from .loss_weights import balanced_class_weights, instrument_balance_weights  # noqa: F401 (re-exported)
from .models import build_model, get_spec, recipe_learning_rate
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


def cpu_supports_bfloat16() -> bool:
    """Whether this CPU has native bfloat16 instructions (AVX512-BF16 or AMX), read from /proc/cpuinfo."""
    from .provenance import cpu_description, has_native_bfloat16

    return has_native_bfloat16(cpu_description())


def configure_accelerator(*, mixed_precision: bool = False, jit_compile: bool = False,
                          cpu_bfloat16: bool = False) -> dict[str, object]:
    """Choose the numeric policy: float16 mixed precision (+ XLA) on a GPU, bfloat16 on a capable CPU.

    Each option falls back to float32 where the hardware lacks it, and says so. Variables stay float32
    under both mixed policies; the softmax output is float32 in every model.
    """
    gpus = tf.config.list_physical_devices("GPU")
    policy = "float32"
    if mixed_precision and gpus:
        policy = "mixed_float16"
    elif cpu_bfloat16 and not gpus and cpu_supports_bfloat16():
        policy = "mixed_bfloat16"
    keras.mixed_precision.set_global_policy(policy)
    settings = {"gpus": len(gpus), "policy": policy, "jit_compile": bool(jit_compile and gpus)}
    if (mixed_precision or jit_compile) and not gpus:
        print("No GPU found: float16 mixed precision and XLA are off.")
    if cpu_bfloat16 and policy == "float32" and not gpus:
        print("This CPU has no native bfloat16: training runs in float32.")
    print(f"Accelerator settings: {settings}")
    return settings


# Fixed sizes instead of tf.data.AUTOTUNE: gathering a batch from memory is cheap, and autotuning
# cost whole seconds of idle CPU. Its optimisation thread wakes at doubling intervals (10 ms, 20 ms,
# ... up to 60 s) and, in TF 2.21, deleting an iterator waits for that thread's next wake-up. Keras
# makes a new iterator every epoch, so each epoch's wall time was rounded up to a wake-up time
# (10.23 s, 20.47 s, 40.95 s, 81.9 s... after the iterator's start).
PIPELINE_PARALLELISM = 2
PREFETCH_BATCHES = 2


def _pipeline_options() -> tf.data.Options:
    options = tf.data.Options()
    options.autotune.enabled = False
    return options


class _ArraySource:
    """The arrays one dataset gathers its batches from."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None):
        self.images, self.labels, self.weights = images, labels, weights


def make_dataset(images: np.ndarray, labels: np.ndarray, *, batch_size: int, shuffle: bool,
                 seed: int = 42, sample_weights: np.ndarray | None = None) -> tf.data.Dataset:
    """Batches of (float32 images in [0, 255], int labels) gathered from in-memory uint8 arrays; with
    ``sample_weights``, (images, labels, weights), which Keras applies to each image's loss.

    Only indices pass through tf.data (shuffled, batched); each batch is gathered from the NumPy
    array itself. ``from_tensor_slices`` would copy the whole array into a tensor, and a shuffle
    buffer over images a second time: two extra gigabytes for train+val at 256 px.

    TensorFlow keeps a ``numpy_function``'s Python function alive for the rest of the process, so
    the gather function holds the arrays only weakly; the returned dataset (and every dataset or
    iterator made from it) holds them strongly, and they are freed with it.
    """
    labels = np.asarray(labels).astype("int32")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    shape = (None, *images.shape[1:])
    weighted = sample_weights is not None
    if weighted:
        sample_weights = np.asarray(sample_weights, dtype="float32")
        if len(sample_weights) != len(labels):
            raise ValueError(f"{len(labels)} labels but {len(sample_weights)} sample weights")
    source = _ArraySource(images, labels, sample_weights)
    weak_source = weakref.ref(source)

    def gather(batch_indices: np.ndarray) -> tuple[np.ndarray, ...]:
        arrays = weak_source()
        if arrays is None:
            raise RuntimeError("the images behind this dataset were freed with the dataset object; "
                               "keep the dataset returned by make_dataset alive while reading it")
        batch = (arrays.images[batch_indices], arrays.labels[batch_indices])
        return batch + (arrays.weights[batch_indices],) if weighted else batch

    def to_tensors(batch_indices):
        dtypes = [tf.uint8, tf.int32] + ([tf.float32] if weighted else [])
        batch_images, batch_labels, *batch_weights = tf.numpy_function(gather, [batch_indices], dtypes,
                                                                       stateful=False)
        batch_images = tf.cast(tf.ensure_shape(batch_images, shape), tf.float32)
        batch_labels = tf.ensure_shape(batch_labels, (None,))
        return (batch_images, batch_labels, *[tf.ensure_shape(w, (None,)) for w in batch_weights])

    dataset = tf.data.Dataset.range(len(images))
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size).map(to_tensors, num_parallel_calls=PIPELINE_PARALLELISM,
                                            deterministic=True)
    dataset = dataset.prefetch(PREFETCH_BATCHES).with_options(_pipeline_options())
    dataset._marsrover_arrays = source  # derived datasets keep their input dataset, hence this, alive
    return dataset


@keras.saving.register_keras_serializable(package="marsrover")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean per-class recall of a softmax classifier: the study's selection metric, per epoch."""

    def __init__(self, num_classes: int = 2, name: str = "balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.hits = self.add_weight(shape=(num_classes,), initializer="zeros", name="hits")
        self.totals = self.add_weight(shape=(num_classes,), initializer="zeros", name="totals")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        truth = keras.ops.one_hot(y_true, self.num_classes)
        correct = keras.ops.cast(keras.ops.equal(keras.ops.argmax(y_pred, axis=-1), y_true), "float32")
        self.hits.assign_add(keras.ops.sum(truth * correct[:, None], axis=0))
        self.totals.assign_add(keras.ops.sum(truth, axis=0))

    def result(self):
        present = keras.ops.cast(self.totals > 0, "float32")
        recall = keras.ops.divide_no_nan(self.hits, self.totals)
        return keras.ops.divide_no_nan(keras.ops.sum(recall * present), keras.ops.sum(present))

    def reset_state(self):
        self.hits.assign(keras.ops.zeros_like(self.hits))
        self.totals.assign(keras.ops.zeros_like(self.totals))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@dataclass
class TrainingResult:
    model: keras.Model
    history: dict[str, list[float]]
    seconds: float
    config: dict[str, object]


def train(name: str, train_data: tuple[np.ndarray, np.ndarray],
          val_data: tuple[np.ndarray, np.ndarray] | None = None, *, image_size: int | None = None,
          epochs: int | None = None, batch_size: int | None = None, seed: int = 42, jit_compile: bool = False,
          weights: str | None = "imagenet", run_name: str | None = None, verbose: int = 2,
          train_groups: np.ndarray | None = None,
          extra_callbacks: list[keras.callbacks.Callback] | tuple = (),
          recompute_batch_norm: bool = False) -> TrainingResult:
    """Build model ``name`` and fit it with its recipe (Adam, sparse cross-entropy).

    ``train_groups`` names each training image's instrument x label group; recipes with
    ``instrument_balance`` weight the loss by it (:func:`instrument_balance_weights`) and need it.

    With ``val_data``, the validation balanced accuracy is tracked every epoch and recorded with the
    best epoch; specs with ``restore_best`` keep that epoch's weights (selection on validation only).
    Without it (a refit on train+val), the model trains for exactly ``epochs``.
    ``extra_callbacks`` see each epoch's validated weights (the averaged ones under EMA) before the best
    epoch is kept.
    ``recompute_batch_norm`` ends the run by replacing batch normalisation's running statistics with those
    of the training images (:func:`recalibrate_batch_norm`), each counted by its instrument x label group's
    weight in ``improved``'s loss (:func:`instrument_balance_weights`; every image once without ``train_groups``),
    whatever the recipe's own loss: on validation, so weighted they beat plain ones for ``improved`` and
    ``quick_cnn`` alike (``python -m marsrover.diagnostics batch-norm``).
    """
    spec = get_spec(name)
    epochs = epochs or spec.epochs
    batch_size = batch_size or spec.batch_size
    size = image_size or spec.image_size
    fixed = set_seeds(seed)
    model = build_model(name, size, seed=seed, weights=weights)
    steps_per_epoch = int(np.ceil(len(train_data[1]) / batch_size))
    learning_rate = recipe_learning_rate(spec, epochs, steps_per_epoch)
    use_ema = spec.ema_momentum is not None
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate, use_ema=use_ema,
                                         ema_momentum=spec.ema_momentum or 0.99),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy"), BalancedAccuracy()],
        jit_compile=jit_compile,
    )
    class_weight = balanced_class_weights(train_data[1]) if spec.class_weighting else None
    sample_weights, group_weights = None, {}
    if spec.instrument_balance:
        if train_groups is None or len(train_groups) != len(train_data[1]):
            raise ValueError(f"{name} weights its loss by instrument x label group: pass train_groups, one group "
                             f"per training image ({len(train_data[1])}), not "
                             f"{'none' if train_groups is None else len(train_groups)}")
        sample_weights = instrument_balance_weights(train_groups)
        group_weights = {str(group): round(float(weight), 3) for group, weight in zip(train_groups, sample_weights)}
    callbacks = []
    if use_ema:  # the averaged weights are the ones validated, kept at the best epoch, and returned
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks.extend(extra_callbacks)  # they see the weights validation saw, before the best epoch is kept
    if val_data is not None and spec.restore_best:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_balanced_accuracy", mode="max",
                                                       patience=epochs, restore_best_weights=True))
    train_ds = make_dataset(*train_data, batch_size=batch_size, shuffle=True, seed=seed,
                            sample_weights=sample_weights)
    val_ds = make_dataset(*val_data, batch_size=EVAL_BATCH_SIZE, shuffle=False) if val_data is not None else None
    started = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=verbose, callbacks=callbacks,
                        class_weight=class_weight, shuffle=False)  # tf.data already shuffles
    fit_seconds = time.perf_counter() - started
    statistics = batch_norm_description(model)
    if recompute_batch_norm and batch_norm_layers(model):
        group_weights_ = None if train_groups is None else instrument_balance_weights(train_groups)
        recalibrate_batch_norm(model, train_data[0], group_weights_)
        statistics = ("recomputed over the training images" if group_weights_ is None
                      else "recomputed over the training images, weighted by instrument x label group")
    seconds = time.perf_counter() - started  # the recomputation is part of the run's cost
    clean_history = {key: [float(v) for v in values] for key, values in history.history.items()}
    best_epoch = None
    if "val_balanced_accuracy" in clean_history:
        best_epoch = int(np.argmax(clean_history["val_balanced_accuracy"])) + 1
    config = {
        "model": name, "run": run_name or name, "image_size": size, "epochs": epochs, "batch_size": batch_size,
        "learning_rate": spec.learning_rate, "schedule": spec.schedule, "optimizer": "Adam",
        # the policy the model was built with: float32, or mixed_bfloat16 / mixed_float16 where the profile
        # asks and the hardware has it
        "numeric_policy": model.dtype_policy.name,
        "ema_momentum": spec.ema_momentum,
        "augmentation": spec.augmentation, "class_weight": class_weight,
        **({"group_weights": group_weights} if group_weights else {}),  # instrument_balance's weight per group
        "weights": weights if spec.pretrained else None,
        "best_epoch_on_val": best_epoch, "kept_weights": f"epoch {best_epoch} (best on val)"
        if val_data is not None and spec.restore_best and best_epoch else f"epoch {epochs} (last)",
        "batch_norm_statistics": statistics,
        **({"batch_norm_seconds": round(seconds - fit_seconds, 2)} if recompute_batch_norm else {}),
        "train_images": int(len(train_data[1])), "val_images": int(len(val_data[1])) if val_data else 0,
        "seeds": fixed,
    }
    return TrainingResult(model, clean_history, seconds, config)


def release_models() -> None:
    """Free what finished runs left behind (graphs, variables) before the next model is built."""
    policy = keras.mixed_precision.global_policy()
    keras.backend.clear_session()  # also resets the dtype policy to float32: the study's choice is kept
    keras.mixed_precision.set_global_policy(policy)
    gc.collect()


def save_run(result: TrainingResult, output_dir: Path, *, records: str = "runs",
             save_model: bool = True) -> dict[str, Path]:
    """Write ``models/<name>.keras`` (unless not ``save_model``) and ``<records>/<name>.json``
    (history, config, timing, env)."""
    output_dir = Path(output_dir)
    name = result.config["run"]
    model_path = output_dir / "models" / f"{name}.keras"
    run_path = output_dir / records / f"{name}.json"
    run_path.parent.mkdir(parents=True, exist_ok=True)
    if save_model:
        model_path.parent.mkdir(parents=True, exist_ok=True)
        result.model.save(model_path)
    record = {
        "config": result.config,
        "history": result.history,
        "train_seconds": round(result.seconds, 2),
        "seconds_per_epoch": round(result.seconds / max(1, result.config["epochs"]), 2),
        "environment": run_environment(),
    }
    run_path.write_text(json.dumps(record, indent=2))
    model_shown, run_shown = display_path(model_path), display_path(run_path)  # reports travel
    print(f"Saved {model_shown} and {run_shown}" if save_model else f"Saved {run_shown}")
    return {"model": model_path, "run": run_path} if save_model else {"run": run_path}
