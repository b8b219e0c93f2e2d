"""Speed benchmark: ``python -m marsrover.bench`` prints a table and writes ``reports/bench.json``.

Everything is measured in one run on one machine, as ratios where it matters (the machine is shared):

1. training throughput of the seed-notebook model fed by the seed's pipeline
   (``image_dataset_from_directory``: decode and resize every JPEG every epoch) against this project's
   (decoded once into the on-disk cache, fed from memory with tf.data), same batch size, after warm-up;
   and against no input work at all (one batch in memory, every step): the ceiling of any pipeline;
2. inference on real MSL images from disk, decoding included: one ``model.predict`` per image against
   the batched path of ``marsrover predict``, for the improved model (and the batched path for the
   headline too, when it is an average of runs);
3. the peak resident memory of each (every measurement runs in its own process);
4. the wall time of each notebook in the last full-profile run, from ``reports/full/run_log.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from . import config, reporting, study
from .inference import emulated_here
from .provenance import code_commit, cpu_description


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _isolated(function, *args):
    """Run ``function(*args)`` in a fresh process; return its result and that process's peak memory."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure, function, *args).result()


def _measure(function, *args):
    from .console import start_keras_quietly

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start_keras_quietly()  # each measuring process starts TensorFlow afresh: no start-up lines each time
    result = function(*args)
    result["peak_rss_gib"] = round(_peak_rss_gib(), 3)
    return result


def _compiled_seed_model(size: int, policy: str = "float32"):
    import keras

    from .models import build_model
    from .training import set_seeds

    keras.mixed_precision.set_global_policy(policy)
    set_seeds(0)
    model = build_model("seed_notebook", size)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


def _time_training(model, dataset, steps: int) -> dict:
    """Seconds for ``steps`` batches after a warm-up of two batches (tracing, caches).

    ``seconds`` stops when the last step has finished (Keras' ``on_train_end``); ``seconds_with_teardown``
    also counts deleting the input iterator, which with tf.data autotuning can wait for the tuner's
    next wake-up (see ``marsrover.training.PIPELINE_PARALLELISM``). The ratio uses ``seconds``.
    """
    import keras

    class LastStep(keras.callbacks.Callback):
        def on_train_end(self, logs=None):
            self.finished = time.perf_counter()

    last_step = LastStep()
    model.fit(dataset.take(2), epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(dataset.take(steps), epochs=1, verbose=0, callbacks=[last_step])
    returned = time.perf_counter()
    return {"seconds": last_step.finished - started, "seconds_with_teardown": returned - started}


def train_seed_pipeline(files: list[str], labels: list[int], size: int, batch_size: int, steps: int) -> dict:
    """The seed's input: a class-per-folder tree read by ``image_dataset_from_directory`` every epoch."""
    import keras

    with tempfile.TemporaryDirectory() as tree:
        for position, (file, label) in enumerate(zip(files, labels)):
            folder = Path(tree) / config.CLASS_NAMES[label]
            folder.mkdir(exist_ok=True)
            (folder / f"{position:05d}_{Path(file).name}").symlink_to(file)
        dataset = keras.utils.image_dataset_from_directory(
            tree, image_size=(size, size), batch_size=batch_size, shuffle=True, seed=0,
            class_names=list(config.CLASS_NAMES), verbose=False).repeat()
        timing = _time_training(_compiled_seed_model(size), dataset, steps)
    return {"images_per_s": steps * batch_size / timing["seconds"], **timing}


def train_project_pipeline(images_path: str, labels: list[int], batch_size: int, steps: int,
                           policy: str = "float32") -> dict:
    """This project's input: the cached uint8 array, shuffled and batched by tf.data from memory.

    ``policy="mixed_bfloat16"`` adds the numeric policy the full profile trains with on CPUs that
    support it, to show what the project's whole training setup gains, not only its input pipeline.
    """
    return {**_train_from_cache(images_path, labels, batch_size, steps, policy), "policy": policy}


def train_input_free(images_path: str, labels: list[int], batch_size: int, steps: int) -> dict:
    """The ceiling of any input pipeline: the same model fed one batch, already in memory, every step.

    No decoding, copying or shuffling happens per step, so no float32 pipeline, however fast, can train this
    model faster on this machine; its ratio to the seed's pipeline bounds what an input pipeline can gain.
    """
    return _train_from_cache(images_path, labels, batch_size, steps, one_batch=True)


def _train_from_cache(images_path: str, labels: list[int], batch_size: int, steps: int, policy: str = "float32",
                      *, one_batch: bool = False) -> dict:
    """The seed-notebook model trained from the cached array: shuffled batches, or its first batch every step."""
    from .training import make_dataset

    images = np.load(images_path)
    dataset = make_dataset(images, np.asarray(labels), batch_size=batch_size, shuffle=not one_batch, seed=0)
    dataset = (dataset.take(1).cache() if one_batch else dataset).repeat()
    timing = _time_training(_compiled_seed_model(images.shape[1], policy), dataset, steps)
    return {"images_per_s": steps * batch_size / timing["seconds"], **timing}


def _inference_model(model_path: str | None, size: int, as_saved: bool = False):
    from .inference import load_model
    from .models import build_model

    return load_model(model_path, float32_where_emulated=not as_saved) if model_path else build_model("improved", size)


def infer_per_image(files: list[str], model_path: str | None, size: int) -> dict:
    """The naive loop: decode one image, call ``model.predict`` on it, repeat."""
    from .dataset import load_image

    model = _inference_model(model_path, size)
    size = int(model.input_shape[1])
    model.predict(load_image(files[0], size)[None].astype("float32"), verbose=0)  # warm-up
    started = time.perf_counter()
    for file in files:
        model.predict(load_image(file, size)[None].astype("float32"), verbose=0)
    seconds = time.perf_counter() - started
    return {"images_per_s": len(files) / seconds, "seconds": seconds}


def infer_batched(files: list[str], model_path: str | None, size: int, batch_size: int, as_saved: bool = False) -> dict:
    """``marsrover predict``'s path: parallel decoding, large batches, one predict_on_batch call per batch (``as_saved``:
    the model in its saved policy, even where ``predict`` would load it to compute in float32)."""
    from .inference import classify_files

    model = _inference_model(model_path, size, as_saved)
    classify_files(model, files[:batch_size], batch_size=batch_size, progress=False)  # warm-up
    started = time.perf_counter()
    table = classify_files(model, files, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - started
    return {"images_per_s": len(files) / seconds, "seconds": seconds, "failed": int((table["error"] != "").sum())}


def _interleaved(measurements: dict[str, tuple], rounds: int) -> dict[str, dict]:
    """Each measurement ``rounds`` times, alternating their order, and the median round of each.

    A shared machine drifts (CPU credits, neighbours): running A then B once would credit the drift
    to B. Alternating A B / B A and taking medians spreads it over both.
    """
    runs: dict[str, list[dict]] = {name: [] for name in measurements}
    for round_number in range(rounds):
        order = list(measurements) if round_number % 2 == 0 else list(reversed(measurements))
        for name in order:
            runs[name].append(_isolated(*measurements[name]))
    summary = {}
    for name, results in runs.items():
        speeds = [result["images_per_s"] for result in results]
        median = results[int(np.argsort(speeds)[len(speeds) // 2])]
        summary[name] = {**median, "rounds_images_per_s": [round(speed, 1) for speed in speeds],
                         "peak_rss_gib": max(result["peak_rss_gib"] for result in results)}
    return summary


def last_full_run(report_dir: Path) -> dict:
    """Wall time per notebook and peak kernel memory of the last run logged in ``report_dir``."""
    log_path = Path(report_dir) / "run_log.json"
    if not log_path.exists():
        return {}
    log = json.loads(log_path.read_text())
    # metrics.json names the CPU the study ran on, often not this one
    cpu = reporting.load_json(Path(report_dir) / reporting.METRICS_FILE).get("cpu", {})
    return {
        "total_minutes": round(log["total_seconds"] / 60, 2), "peak_rss_gib": log.get("peak_rss_gib"),
        "cpu_model": cpu.get("model_name"),
        "commit": log.get("commit"), "notebook_seconds": {run["name"]: run["seconds"] for run in log["notebooks"]},
        "all_ok": all(run["status"] == "ok" for run in log["notebooks"]),
    }


def run_benchmark(paths: config.DataPaths, index: pd.DataFrame, *, train_images: int = 640, train_steps: int = 60,
                  infer_images: int = 1000, train_size: int = 256, batch_size: int = 32,
                  infer_batch_size: int = 256, model_path: str | None = None, infer_size: int = 128,
                  train_rounds: int = 3, full_report: Path = config.REPORTS_DIR / "full",
                  out: Path | None = None) -> dict:
    """Measure everything, write the JSON (``out``) and return it."""
    train = index[index["split"] == "train"].head(train_images)
    files = [str(paths.images_root / p) for p in train["path"]]
    labels = train["label"].tolist()
    cached = study.split_arrays(paths, train.assign(split="bench"), "bench", train_size, progress=False)[0]
    with tempfile.NamedTemporaryFile(suffix=".npy", delete=False) as handle:
        np.save(handle, cached)
    from .training import cpu_supports_bfloat16

    trainings = {
        "train_seed_pipeline": (train_seed_pipeline, files, labels, train_size, batch_size, train_steps),
        "train_project_pipeline": (train_project_pipeline, handle.name, labels, batch_size, train_steps),
        "train_input_free": (train_input_free, handle.name, labels, batch_size, train_steps),
    }
    if cpu_supports_bfloat16():
        trainings["train_project_pipeline_bfloat16"] = (
            train_project_pipeline, handle.name, labels, batch_size, train_steps, "mixed_bfloat16")
    try:
        timed = _interleaved(trainings, train_rounds)
    finally:
        os.unlink(handle.name)
    seed_train, project_train, ceiling = (timed[name] for name in (
        "train_seed_pipeline", "train_project_pipeline", "train_input_free"))
    project_bf16 = timed.get("train_project_pipeline_bfloat16")
    test = index[index["split"] == "test"].head(infer_images)
    infer_files = [str(paths.images_root / p) for p in test["path"]]
    # The speed targets are the improved model's. When the headline is an average of runs (its file name joins
    # them with "+"), the improved architecture is timed from untrained weights (the same arithmetic), and the
    # average's batched path is timed beside it.
    headline_is_average = bool(model_path) and "+" in Path(model_path).name
    improved_path = None if headline_is_average else model_path
    per_image = _isolated(infer_per_image, infer_files, improved_path, infer_size)
    batched = _isolated(infer_batched, infer_files, improved_path, infer_size, infer_batch_size)
    headline = _isolated(infer_batched, infer_files, model_path, infer_size, infer_batch_size) \
        if headline_is_average else None
    # Where predict loads the headline to compute in float32 (its bfloat16 would only be emulated), also as saved.
    headline_as_saved = _isolated(infer_batched, infer_files, model_path, infer_size, infer_batch_size, True) \
        if headline_is_average and emulated_here(Path(model_path)) else None
    full = last_full_run(full_report)
    result = {
        "commit": code_commit(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "platform": platform.platform(),
        "cpu_model": cpu_description().get("model_name"),
        "train_pipeline_ratio": round(project_train["images_per_s"] / seed_train["images_per_s"], 2),
        # The most any float32 input pipeline could reach here: the model fed without input work, over the seed's.
        "train_pipeline_ceiling_ratio": round(ceiling["images_per_s"] / seed_train["images_per_s"], 2),
        # The project's pipeline plus its CPU bfloat16 policy against the seed's (float32) setup; None without bf16.
        "train_setup_ratio_bfloat16": round(project_bf16["images_per_s"] / seed_train["images_per_s"], 2)
        if project_bf16 else None,
        "inference_ratio": round(batched["images_per_s"] / per_image["images_per_s"], 2),
        "inference_images_per_s": round(batched["images_per_s"], 1),
        "headline_inference_images_per_s": round((headline or batched)["images_per_s"], 1),
        # predict's float32 load over the headline as saved, where its mixed policy is only emulated here
        "headline_float32_ratio": round(headline["images_per_s"] / headline_as_saved["images_per_s"], 2)
        if headline_as_saved else None,
        "full_profile_minutes": full.get("total_minutes"),
        "peak_rss_gib": full.get("peak_rss_gib"),
        "settings": {"train_images": len(files), "train_steps": train_steps, "train_rounds": train_rounds,
                     "train_size": train_size,
                     "batch_size": batch_size, "infer_images": len(infer_files), "infer_batch_size": infer_batch_size,
                     "inference_model": config.display_path(improved_path) if improved_path
                     else f"improved (untrained weights) at {infer_size}px",
                     "headline_model": config.display_path(model_path) if model_path else None},
        "measurements": {"train_seed_pipeline": seed_train, "train_project_pipeline": project_train,
                         "train_input_free": ceiling,
                         **({"train_project_pipeline_bfloat16": project_bf16} if project_bf16 else {}),
                         "infer_per_image": per_image, "infer_batched": batched,
                         **({"infer_batched_headline": headline} if headline else {}),
                         **({"infer_batched_headline_as_saved": headline_as_saved} if headline_as_saved else {})},
        "full_profile": full,
    }
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2))
    return result


BENCH_BEGIN, BENCH_END = "<!-- bench:begin -->", "<!-- bench:end -->"


def bench_markdown(result: dict) -> str:
    """The benchmark as the README shows it: the table, the ratios and the machine it ran on."""
    lines = ["| measurement | images/s | seconds | seconds incl. iterator deletion | peak RSS (GiB) |",
             "| --- | --- | --- | --- | --- |"]
    for name, row in table(result).iterrows():
        lines.append(f"| {name} | {row['images/s']} | {row['seconds']} | {row['seconds incl. iterator deletion']} "
                     f"| {row['peak RSS (GiB)']} |")
    full = result.get("full_profile") or {}
    lines += [
        "",
        f"Training pipeline ratio (project / seed, both float32; median of "
        f"{result['settings'].get('train_rounds', 1)} rounds in alternating order): **{result['train_pipeline_ratio']}×**"
        + (f" (the ceiling, the same model fed one batch already in memory: **{result['train_pipeline_ceiling_ratio']}×**)"
           if result.get("train_pipeline_ceiling_ratio") else "")
        + (f"; with the full profile's bfloat16 policy: **{result['train_setup_ratio_bfloat16']}×**"
           if result.get("train_setup_ratio_bfloat16") else
           "; no bfloat16 row: this CPU has no native bfloat16, so the full profile would train in float32 on it"
           if "train_setup_ratio_bfloat16" in result else "") + "; batched inference: "
        f"**{result['inference_images_per_s']} images/s**, **{result['inference_ratio']}×** the per-image loop "
        f"({result['settings']['inference_model']})"
        + (f"; the headline, an average of runs ({result['settings']['headline_model']}): "
           f"**{result['headline_inference_images_per_s']} images/s**"
           if "infer_batched_headline" in result["measurements"] else "")
        + (f", **{result['headline_float32_ratio']}×** the same model as saved, whose mixed precision this CPU only "
           "emulates (`predict` loads it to compute in float32)" if result.get("headline_float32_ratio") else "")
        + ". Last full profile: "
        f"{full.get('total_minutes', '–')} minutes, peak kernel memory {full.get('peak_rss_gib', '–')} GiB"
        + (f" (on {full['cpu_model']}, as `reports/full/metrics.json` names it)" if full.get("cpu_model") else "") + ".",
        f"Measured at commit `{result['commit']}` on "
        f"{reporting.cpu_and_architecture(result.get('cpu_model'), result.get('machine', '–'))} "
        f"with {result['cpu_count']} CPU "
        f"cores ({result.get('platform', 'platform not recorded')}); `reports/bench.json` has every figure.",
    ]
    return "\n".join(lines)


def table(result: dict) -> pd.DataFrame:
    """The measurements as rows: images per second, seconds and peak memory.

    Training rows also show the seconds until ``fit`` returned, the input iterator's deletion included.
    """
    rows = {name: {"images/s": round(m["images_per_s"], 1), "seconds": round(m["seconds"], 1),
                   "seconds incl. iterator deletion": round(m["seconds_with_teardown"], 1)
                   if "seconds_with_teardown" in m else "–",
                   "peak RSS (GiB)": m["peak_rss_gib"]} for name, m in result["measurements"].items()}
    return pd.DataFrame(rows).T


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m marsrover.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--train-images", type=int, default=640)
    parser.add_argument("--train-steps", type=int, default=60, help="timed batches per training pipeline (3 epochs of 640 images)")
    parser.add_argument("--train-rounds", type=int, default=3,
                        help="times each training pipeline is measured, in alternating order (median kept)")
    parser.add_argument("--infer-images", type=int, default=1000)
    parser.add_argument("--model", help="model for the inference measurements (default: newest in models/)")
    parser.add_argument("--out", type=Path, default=config.REPORTS_DIR / "bench.json")
    args = parser.parse_args(argv)
    model_path = args.model
    if model_path is None:
        from .inference import NoModelError, find_default_model

        try:
            model_path = str(find_default_model())
        except NoModelError:
            model_path = None
    paths, index = study.load_index(args.data_dir)
    result = run_benchmark(paths, index, train_images=args.train_images, train_steps=args.train_steps,
                           train_rounds=args.train_rounds, infer_images=args.infer_images, model_path=model_path,
                           out=args.out)
    print(table(result).to_string())
    print(json.dumps({key: value for key, value in result.items() if key not in ("measurements", "full_profile")},
                     indent=2))
    print(f"Wrote {args.out}")
    if args.out.resolve() == (config.REPORTS_DIR / "bench.json").resolve():
        reporting.replace_section(config.PROJECT_ROOT / "README.md", BENCH_BEGIN, BENCH_END, bench_markdown(result))
        print("README speed section updated from the benchmark")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
