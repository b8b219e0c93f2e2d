"""End to end: `run_all.py --profile smoke` executes every notebook on the real data (from the mirror)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from marsrover import config, reporting
from marsrover.runner import discover_notebooks

pytestmark = pytest.mark.e2e


STALE_FIGURES = ("confusion_matrix_vanished_run.png", "gradcam_vanished_model.jpg", "gradcam_of_vanished_run.jpg",
                 "confident_errors_vanished_run.jpg", "reliability_vanished_run.png")
# records an earlier study's notebook 05 wrote for runs this one does not train (a forward run included)
STALE_RECORDS = ("runs/vanished_run.json", "selection/vanished_forward.json")


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory):
    paths = config.data_paths()
    if not (config.mirror_dir() or paths.archive.exists()):
        message = f"needs ${config.MIRROR_ENV} (a folder with msl-images.zip) or {paths.archive}; tests never download"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path_factory.mktemp("smoke-report")
    (out / "figures").mkdir()  # figures of runs an earlier study had, which this one does not
    for stale in STALE_FIGURES:
        (out / "figures" / stale).write_bytes(b"an earlier study's figure")
    for stale in STALE_RECORDS:
        (out / stale).parent.mkdir(exist_ok=True)
        (out / stale).write_text(json.dumps({"config": {"model": "improved"}, "train_seconds": 600.0}))
    completed = subprocess.run([sys.executable, str(config.PROJECT_ROOT / "run_all.py"), "--profile", "smoke",
                                "--output-dir", str(out)], capture_output=True, text=True, timeout=1800)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return out


def test_every_notebook_is_executed_without_errors_and_rendered(smoke_report):
    for notebook in discover_notebooks():
        executed = nbformat.read(smoke_report / notebook.name, as_version=4)
        code_cells = [cell for cell in executed.cells if cell.cell_type == "code"]
        assert all(cell.execution_count for cell in code_cells), f"{notebook.name} has unexecuted cells"
        assert not any(out.output_type == "error" for cell in code_cells for out in cell.outputs)
        html = (smoke_report / notebook.with_suffix(".html").name).read_text()
        assert len(html) > 50_000 and notebook.stem.split("_", 1)[1].replace("_", " ")[:5] in html.lower()


def test_the_html_shows_the_confusion_matrix_and_example_predictions(smoke_report):
    html = (smoke_report / "06_error_analysis.html").read_text()
    assert html.count("data:image/png;base64") >= 3  # charts: confusion matrices, curves
    assert html.count("data:image/jpeg;base64") >= 3  # photographs: examples, errors, Grad-CAM
    assert "Confusion matrices" in html and "Example predictions" in html
    index = (smoke_report / "index.html").read_text()
    assert 'src="figures/confusion_matrix.png"' in index and 'src="figures/example_predictions.jpg"' in index
    charts = ("confusion_matrix", "training_history", "roc_pr_curves", "reliability", "reliability_no_temperature",
              "coverage", "breakdown_msl_class")
    photographs = ("example_predictions", "sample_images", "contact_sheet", "augmentation_strong", "confident_errors",
                   "gradcam", "new_images_uncertain")
    for figure in charts:
        assert (smoke_report / "figures" / f"{figure}.png").stat().st_size > 5_000, figure
    for figure in photographs:
        assert (smoke_report / "figures" / f"{figure}.jpg").stat().st_size > 5_000, figure
        assert not (smoke_report / "figures" / f"{figure}.png").exists(), figure


def test_per_run_figures_are_those_of_this_studys_runs_only(smoke_report):
    metrics = json.loads((smoke_report / "metrics.json").read_text())
    confusion = {path.stem for path in (smoke_report / "figures").glob("confusion_matrix*")}
    assert confusion == {"confusion_matrix", "confusion_matrix_normalised"} | {
        f"confusion_matrix_{run}" for run in metrics["models"] if run != metrics["headline"]}
    others = [run for run in metrics["models"] if run != metrics["headline"]]
    errors = {path.stem for path in (smoke_report / "figures").glob("confident_errors*")}
    assert errors == {"confident_errors" if run == metrics["headline"] else f"confident_errors_{run}"
                      for run in metrics["models"] if metrics["models"][run]["test"]["accuracy"] < 1}
    gradcam = {path.stem for path in (smoke_report / "figures").glob("gradcam*")}
    singles = {f"gradcam_of_{run}" for run in others if not metrics["models"][run].get("members")}
    assert "gradcam" in gradcam and singles <= gradcam and not any(name.startswith("gradcam_of_") for name in
                                                                   gradcam - singles)
    assert not any((smoke_report / "figures" / stale).exists() for stale in STALE_FIGURES)
    assert not any((smoke_report / stale).exists() for stale in STALE_RECORDS)  # nor timed as this study's


TRAIN_ONLY = {"seed_notebook", "seed_blog", "improved", "quick_cnn", "transfer"}
SMOKE_AVERAGE = "improved+seed_notebook"  # named in the smoke profile's refit list


def _averages(metrics):
    return {name for name in metrics["models"] if "+" in name and not name.endswith("_refit")}


def _runs(metrics):
    """Every model, the named average and the winner on validation (a model or an average) are refitted."""
    refitted = {metrics["best_on_val"]} | _averages(metrics)
    members = {member for name in refitted for member in name.split("+")}
    return (TRAIN_ONLY | {"seed_notebook_random_split"} | _averages(metrics)
            | {name + "_refit" for name in refitted | members})


def test_metrics_cover_every_run_on_val_and_test(smoke_report):
    metrics = json.loads((smoke_report / "metrics.json").read_text())
    assert metrics["profile"] == "smoke" and metrics["headline"] in metrics["models"]
    averages = _averages(metrics)
    assert SMOKE_AVERAGE in averages and len(averages) <= 2  # the named average, and 05's winner if an average won
    assert metrics["best_on_val"] in TRAIN_ONLY | averages
    assert set(metrics["models"]) == _runs(metrics), "only the models best on validation or named are refitted"
    assert metrics["headline"] == metrics["best_on_val"] + "_refit"
    for name, splits in metrics["models"].items():
        assert splits["train_seconds"] > 0, name
        if "+" in name:  # an average: its models' epochs, and their summed training time
            assert splits["members"] == [member + ("_refit" if name.endswith("_refit") else "")
                                         for member in name.removesuffix("_refit").split("+")], name
        else:
            assert splits["epochs"] == 1, name  # the smoke profile's one epoch
        for split in ("val", "test"):
            scores = splits[split]
            assert scores["n"] >= (10 if name.endswith("random_split") and split == "val" else 30), (name, split)
            for key in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc", "brier"):
                assert 0.0 <= scores[key] <= 1.0, (name, split, key)
            low, high = scores["ci95"]["balanced_accuracy"]
            assert low <= scores["balanced_accuracy"] <= high
            assert sum(map(sum, scores["confusion_matrix"])) == scores["n"]
            by_group = scores["by_instrument_and_label"]  # the shift, group by group (the model card's table)
            assert sum(group["n"] for group in by_group) == scores["n"], (name, split)
            assert sum(group["errors"] for group in by_group) == round(scores["n"] * (1 - scores["accuracy"]))
        groups = splits["test"]["largest_error_groups"]  # where the test errors are, beside training support
        assert bool(groups) == (splits["test"]["accuracy"] < 1), name  # only groups with errors are listed
        assert all(group["errors"] > 0 and group["trained_on"] >= 0 and " · " in group["group"]
                   for group in groups), name
        assert [group["errors"] for group in groups] == sorted((group["errors"] for group in groups), reverse=True)
        coverage = splits["test"]["by_training_coverage"]  # its accuracy where its training barely reached, and elsewhere
        assert coverage["rare"]["n"] + coverage["rest"]["n"] == splits["test"]["n"], name
        if splits["kind"] == "train only":  # and on validation, which such a run has not seen
            val = splits["val"]["by_training_coverage"]
            assert val["rare"]["n"] + val["rest"]["n"] == splits["val"]["n"], name
        else:
            assert "by_training_coverage" not in splits["val"], name
    assert metrics["baselines"]["majority class"]["test"]["answer"] == "Rover"
    assert set(metrics["notebook_seconds"]) == {nb.name for nb in discover_notebooks()}
    assert metrics["versions"]["tensorflow"]


def test_notebook_01_records_what_training_covers_of_the_whole_data_set_for_the_model_card(smoke_report):
    views = json.loads((smoke_report / "training_coverage.json").read_text())
    assert [(view["training"], view["evaluated"]) for view in views] == [("train", "val"), ("train", "test"),
                                                                        ("train+val", "test")]
    # notebook 01 sees every image whatever the profile: the official split's sizes
    assert [view["n"] for view in views] == [config.EXPECTED_SPLIT_SIZES["val"], *[config.EXPECTED_SPLIT_SIZES["test"]] * 2]
    train_only, refit = views[1], views[2]
    assert 0 < refit["rare"] < train_only["rare"] < train_only["n"]  # validation's images cover some of test's groups
    # the official split's best-known gap: Mastcam's left-eye wheel frames, common in test, a handful in train
    assert {"group": "wheel · Mastcam left", "n": 156, "trained_on": 4} in train_only["groups"]
    assert "What the test split asks." in (smoke_report / "01_acquisition.html").read_text()


def test_each_run_is_saved_with_its_record(smoke_report):
    metrics = json.loads((smoke_report / "metrics.json").read_text())
    for name in _runs(metrics):
        assert (smoke_report / "models" / f"{name}.keras").stat().st_size > 10_000
        run = json.loads((smoke_report / "runs" / f"{name}.json").read_text())
        assert run["config"]["image_size"] == 64 and run["environment"]["commit"]
        if "+" in name:
            assert run["config"]["model"] == "average" and "history" not in run  # nothing trained
        else:
            assert run["config"]["epochs"] == 1 and len(run["history"]["loss"]) == 1
    refit = json.loads((smoke_report / "runs" / f"{metrics['best_on_val']}_refit.json").read_text())
    assert refit["config"]["fit_on"] == "train+val"
    average_refit = json.loads((smoke_report / "runs" / f"{SMOKE_AVERAGE}_refit.json").read_text())
    assert average_refit["config"]["members"] == ["improved_refit", "seed_notebook_refit"]


def test_the_refit_length_comes_from_forward_validation_or_the_recipe_and_is_never_scored_on_test(smoke_report):
    metrics = json.loads((smoke_report / "metrics.json").read_text())
    forward = json.loads((smoke_report / "selection" / "improved_forward.json").read_text())
    assert forward["config"]["fit_on"] == "train+val_early" and forward["config"]["val_images"] >= 10
    refit = json.loads((smoke_report / "runs" / "improved_refit.json").read_text())
    assert refit["config"]["epochs_chosen_by"].startswith("best epoch of forward validation")
    assert refit["config"]["val_images"] == 0
    assert "improved_forward" not in metrics["models"] and not (smoke_report / "models" / "improved_forward.keras").exists()
    # a seed model keeps its last epoch, as published: refitted for its own epochs, no forward run
    seed_refit = json.loads((smoke_report / "runs" / "seed_notebook_refit.json").read_text())
    assert seed_refit["config"]["epochs_chosen_by"].startswith("recipe's own number of epochs")
    assert not (smoke_report / "selection" / "seed_notebook_forward.json").exists()


def test_the_time_estimate_plans_the_very_runs_notebook_05_trained(smoke_report):
    from marsrover import estimate, study
    from marsrover.profiles import get_profile

    profile = get_profile("smoke")
    _, index = study.load_index(max_images_per_split=profile["max_images_per_split"], seed=profile["seed"])
    plan, candidates, _ = estimate.training_plan(profile, index)
    winner = json.loads((smoke_report / "metrics.json").read_text())["best_on_val"]
    planned = {run.run: run for run in plan}
    planned.update({run.run: run for member in study.average_members_of(winner) for run in candidates[member]})
    trained = {path.stem: json.loads(path.read_text())["config"]
               for folder in ("runs", "selection", "ablations") for path in (smoke_report / folder).glob("*.json")}
    trained = {name: config for name, config in trained.items() if config.get("model") != "average"}

    assert sorted(planned) == sorted(trained)
    for name, run in planned.items():
        config = trained[name]
        assert (config["image_size"], config["epochs"], config["batch_size"]) == (run.image_size, run.epochs,
                                                                                  run.batch_size), name
        assert (config["train_images"], config["val_images"]) == (run.fit_images, run.val_images), name


def test_the_estimate_of_every_average_is_in_the_metrics_and_within_smokes_budget_every_one_competes(smoke_report):
    metrics = json.loads((smoke_report / "metrics.json").read_text())
    budget = metrics["refit_budget"]
    assert budget["budget_minutes"] == 60 and len(budget["averages"]) >= 10  # two or more of smoke's five models
    assert all(average["competes"] and average["estimated_refit_minutes"] < 60 for average in budget["averages"].values())


def test_smoke_refits_end_with_batch_norm_statistics_recomputed_by_group_and_train_only_runs_keep_keras_own(
        smoke_report):
    records = {name: json.loads((smoke_report / "runs" / f"{name}.json").read_text())["config"]
               for name in ("improved", "improved_refit", "seed_notebook_refit")}
    assert records["improved_refit"]["batch_norm_statistics"] == \
        "recomputed over the training images, weighted by instrument x label group"
    assert records["improved"]["batch_norm_statistics"] == "running (Keras' moving average)"
    assert records["seed_notebook_refit"]["batch_norm_statistics"] == "none (no batch normalisation)"


def test_every_run_records_the_numeric_policy_it_trained_under_and_the_metrics_repeat_it(smoke_report):
    metrics = json.loads((smoke_report / "metrics.json").read_text())
    for run, scores in metrics["models"].items():
        record = json.loads((smoke_report / "runs" / f"{run}.json").read_text())["config"]
        if record.get("members"):  # an average trains nothing
            continue
        assert record["numeric_policy"] == "float32", run  # smoke asks for no mixed precision
        assert scores["numeric_policy"] == record["numeric_policy"], run


def test_every_ablation_is_trained_on_train_and_judged_on_val(smoke_report):
    from marsrover.profiles import get_profile

    for name in get_profile("smoke")["ablations"]:
        record = json.loads((smoke_report / "ablations" / f"{name}.json").read_text())
        assert record["config"]["model"] == f"improved-{name}" and record["config"]["val_images"] >= 30
        assert len(record["history"]["val_balanced_accuracy"]) == 1
        assert sum(group["n"] for group in record["val_groups"]) == record["config"]["val_images"]
        # the groups are of the weights the run kept: their balanced accuracy is its best epoch's
        recalls = [sum(g["n"] * g["accuracy"] for g in record["val_groups"] if g["group"].endswith(label))
                   / sum(g["n"] for g in record["val_groups"] if g["group"].endswith(label))
                   for label in ("Rover", "Surface")]
        assert np.mean(recalls) == pytest.approx(max(record["history"]["val_balanced_accuracy"]), abs=1e-4)
    for seed in get_profile("smoke")["seed_repeats"]:  # improved itself at another seed: chance's yardstick
        record = json.loads((smoke_report / "ablations" / f"repeat_seed_{seed}.json").read_text())
        assert record["config"]["model"] == "improved" and record["config"]["seeds"]["seed"] == seed
        assert record["val_groups"]
    # notebook 06 reads them by group, beside the study's improved run
    analysis = (smoke_report / "06_error_analysis.html").read_text()
    assert "worst group against the seeds" in analysis
    assert (smoke_report / "figures" / "ablations.png").stat().st_size > 5_000
    # what the model card reads back from the report folder: every seed, and every variant placed against them
    evidence = reporting.design_evidence(smoke_report)
    assert [run["seed"] for run in evidence["seeds"]] == [get_profile("smoke")["seed"],
                                                          *get_profile("smoke")["seed_repeats"]]
    assert sorted(v["variant"] for v in evidence["variants"]) == sorted(get_profile("smoke")["ablations"])


def test_the_targets_section_shows_the_threshold_check_and_the_side_checks_from_their_records(smoke_report):
    analysis = (smoke_report / "06_error_analysis.html").read_text()
    assert "balanced accuracy at the threshold" in analysis  # computed from this run's improved
    for record in ("flip.json", "batch_norm.json", "ablation_larger_images_seeds1_2.json"):
        assert f"reports/side_checks/{record}" in analysis  # each named, read back or said to be missing


def test_new_images_are_classified_from_a_sample_laid_out_like_fetch_raw(smoke_report):
    import pandas as pd

    table = pd.read_csv(smoke_report / "new_images_predictions.csv")
    assert len(table) == 24 and table["label"].isin(["Rover", "Surface"]).all()
    assert set(table["instrument"]) <= {"MAHLI", "Mastcam left", "Mastcam right"}
    headline = json.loads((smoke_report / "metrics.json").read_text())["headline"]
    assert [Path(model).name for model in table["model"].unique()] == [f"{headline}.keras"]  # the file, not its Keras name
    assert not (smoke_report / "new_images_sample").exists()  # archive images never go into reports/
