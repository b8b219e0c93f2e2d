"""The benchmark runs end to end on tiny data and writes its JSON (timings are never asserted)."""

import json

from conftest import write_tiny_set
from marsrover import bench, config, dataset


def test_the_benchmark_measures_every_path_and_writes_its_json(tmp_path):
    paths = config.data_paths(tmp_path / "data")
    write_tiny_set(paths.images_root)
    index = dataset.build_index(paths.images_root, progress=False)
    report = tmp_path / "reports" / "full"
    report.mkdir(parents=True)
    (report / "run_log.json").write_text(json.dumps({
        "total_seconds": 1800, "peak_rss_gib": 3.5, "commit": "abc",
        "notebooks": [{"name": "05_training.ipynb", "status": "ok", "seconds": 1500.0}]}))
    out = tmp_path / "bench.json"
    result = bench.run_benchmark(paths, index, train_images=4, train_steps=2, infer_images=2, train_size=32,
                                 batch_size=2, infer_batch_size=2, infer_size=32, train_rounds=2,
                                 full_report=report, out=out)
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    for key in ("train_pipeline_ratio", "train_pipeline_ceiling_ratio", "inference_ratio", "inference_images_per_s",
                "cpu_count", "commit", "machine", "platform"):
        assert written[key], key
    assert written["full_profile_minutes"] == 30.0 and written["peak_rss_gib"] == 3.5
    for measurement in written["measurements"].values():
        assert measurement["images_per_s"] > 0 and measurement["peak_rss_gib"] > 0.1
    assert written["measurements"]["infer_batched"]["failed"] == 0
    # Training pipelines are measured once per round, in alternating order; the median round is reported.
    assert len(written["measurements"]["train_seed_pipeline"]["rounds_images_per_s"]) == 2
    assert written["settings"]["train_rounds"] == 2
    if "train_project_pipeline_bfloat16" in written["measurements"]:  # CPUs with native bfloat16 only
        assert written["measurements"]["train_project_pipeline_bfloat16"]["policy"] == "mixed_bfloat16"
        assert written["train_setup_ratio_bfloat16"] > 0
    else:
        assert written["train_setup_ratio_bfloat16"] is None
    # The ceiling of any input pipeline: the same model trained without input work, beside the two pipelines.
    assert written["train_pipeline_ceiling_ratio"] == round(
        written["measurements"]["train_input_free"]["images_per_s"]
        / written["measurements"]["train_seed_pipeline"]["images_per_s"], 2)
    for name in ("train_seed_pipeline", "train_project_pipeline"):  # up to the last step, and until fit returned
        assert 0 < written["measurements"][name]["seconds"] <= written["measurements"][name]["seconds_with_teardown"]
    assert list(bench.table(result).columns) == ["images/s", "seconds", "seconds incl. iterator deletion",
                                              "peak RSS (GiB)"]


def test_the_readme_section_shows_the_table_ratios_and_machine():
    result = {
        "commit": "abc", "cpu_count": 2, "machine": "riscv64", "platform": "Linux-9.9-test",
        "train_pipeline_ratio": 2.5, "inference_ratio": 9.1,
        "inference_images_per_s": 420.0, "settings": {"inference_model": "models/improved.keras"},
        "full_profile": {"total_minutes": 41.0, "peak_rss_gib": 3.1},
        "measurements": {name: {"images_per_s": 10.0, "seconds": 1.0, "peak_rss_gib": 1.0}
                         for name in ("train_seed_pipeline", "train_project_pipeline", "infer_per_image",
                                      "infer_batched")},
    }
    text = bench.bench_markdown(result)
    assert "| train_seed_pipeline | 10.0 | 1.0 | – | 1.0 |" in text
    assert "ceiling" not in text  # benchmarks from before the ceiling was measured still render
    text_with_ceiling = bench.bench_markdown({**result, "train_pipeline_ceiling_ratio": 1.1})
    assert "the ceiling, the same model fed one batch already in memory: **1.1×**" in text_with_ceiling
    assert "**2.5×**" in text and "**420.0 images/s**" in text and "41.0 minutes" in text and "2 CPU cores" in text
    assert "on riscv64 with 2 CPU cores (Linux-9.9-test)" in text  # the machine it ran on, not the reader's
    assert "bfloat16" not in text  # a record from before the bfloat16 row says nothing of it
    named = bench.bench_markdown({**result, "cpu_model": "Some CPU", "train_setup_ratio_bfloat16": None,
                                  "full_profile": {**result["full_profile"], "cpu_model": "Other CPU"}})
    assert "on Some CPU (riscv64) with 2 CPU cores" in named and "41.0 minutes, peak kernel memory 3.1 GiB (on Other CPU" in named
    assert "no bfloat16 row: this CPU has no native bfloat16" in named
    assert "as saved" not in named  # no headline timed as saved: no ratio to give
    emulated = bench.bench_markdown({**result, "headline_float32_ratio": 2.1,
                                     "measurements": {**result["measurements"], "infer_batched_headline": {
                                         "images_per_s": 50.0, "seconds": 20.0, "peak_rss_gib": 1.0}},
                                     "headline_inference_images_per_s": 50.0,
                                     "settings": {**result["settings"], "headline_model": "models/a+b.keras"}})
    assert "(models/a+b.keras): **50.0 images/s**, **2.1×** the same model as saved, whose mixed precision" in emulated


def test_the_last_full_run_is_read_with_the_cpu_its_study_ran_on(tmp_path):
    assert bench.last_full_run(tmp_path) == {}  # no study run there yet
    (tmp_path / "run_log.json").write_text(json.dumps({"total_seconds": 600, "peak_rss_gib": 2.0, "commit": "abc",
                                                       "notebooks": [{"name": "05.ipynb", "seconds": 500,
                                                                      "status": "ok"}]}))
    assert bench.last_full_run(tmp_path)["cpu_model"] is None  # a run log without metrics names no CPU
    (tmp_path / "metrics.json").write_text(json.dumps({"cpu": {"model_name": "Intel(R) Xeon(R) Processor"}}))
    full = bench.last_full_run(tmp_path)
    assert full["cpu_model"] == "Intel(R) Xeon(R) Processor" and full["total_minutes"] == 10.0 and full["all_ok"]


def test_paths_inside_the_project_are_recorded_relative_to_it(tmp_path):
    from marsrover import config

    assert config.display_path(config.PROJECT_ROOT / "models" / "improved.keras") == "models/improved.keras"
    assert config.display_path(tmp_path / "elsewhere.keras") == str(tmp_path / "elsewhere.keras")


def test_an_average_headline_is_timed_beside_the_improved_model(tmp_path):
    from marsrover.models import build_average, build_model

    paths = config.data_paths(tmp_path / "data")
    write_tiny_set(paths.images_root)
    index = dataset.build_index(paths.images_root, progress=False)
    headline = tmp_path / "models" / "improved+seed_notebook_refit-abc.keras"
    headline.parent.mkdir()
    build_average([build_model("improved", 32), build_model("seed_notebook", 32)], "average").save(headline)
    result = bench.run_benchmark(paths, index, train_images=4, train_steps=2, infer_images=2, train_size=32,
                                 batch_size=2, infer_batch_size=2, infer_size=32, train_rounds=1,
                                 model_path=str(headline), full_report=tmp_path / "none")
    assert result["settings"]["inference_model"] == "improved (untrained weights) at 32px"  # the targets' model
    assert result["settings"]["headline_model"].endswith("improved+seed_notebook_refit-abc.keras")
    assert result["headline_inference_images_per_s"] == round(
        result["measurements"]["infer_batched_headline"]["images_per_s"], 1) > 0
    assert "the headline, an average of runs" in bench.bench_markdown(result)
