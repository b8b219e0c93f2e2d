"""The estimate of a profile's training time: the runs notebook 05 would make, each kind timed here in a few steps."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from marsrover import estimate, models
from marsrover.estimate import PlannedRun, StepCost
from marsrover.profiles import get_profile


def _index() -> pd.DataFrame:
    """20 train images, 10 validation images over 5 sols (2 each), 4 test images; labels alternate."""
    rows = [("train", 10 + i % 4) for i in range(20)] + [("val", 500 + i // 2) for i in range(10)]
    rows += [("test", 900)] * 4
    return pd.DataFrame({"split": [split for split, _ in rows], "sol": [sol for _, sol in rows],
                         "label": [i % 2 for i in range(len(rows))]})


def _by_name(runs):
    return {run.run: run for run in runs}


def test_the_full_plan_lists_each_model_its_refits_the_leakage_run_the_ablations_and_the_seed_repeats():
    plan, candidates, notes = estimate.training_plan(get_profile("full"), _index())

    runs = _by_name(plan)
    assert [run.run for run in plan if run.stage == "train"] == ["seed_notebook", "seed_blog", "improved", "quick_cnn"]
    assert notes[0].startswith("transfer is not estimated: its imagenet weights are not in Keras' cache")
    seed_blog = runs["seed_blog"]
    assert (seed_blog.image_size, seed_blog.epochs, seed_blog.fit_images, seed_blog.val_images) == (224, 20, 20, 10)
    # improved is refitted whatever wins: forward validation first, on train + the earlier validation sols up
    # to the one that brings them to half the split (sols 500-502, 6 images), judged on the 4 after them
    assert (runs["improved_forward"].fit_images, runs["improved_forward"].val_images) == (26, 4)
    refit = runs["improved_refit"]
    assert (refit.fit_images, refit.val_images, refit.recomputes_batch_norm) == (30, 0, True)
    assert (runs["seed_notebook_random_split"].fit_images, runs["seed_notebook_random_split"].val_images) == (24, 6)
    ablations = _by_name(run for run in plan if run.stage == "ablation")
    assert list(ablations) == get_profile("full")["ablations"]
    assert (ablations["larger_images"].image_size, ablations["smaller_images"].image_size) == (192, 96)
    assert ablations["smaller_images"].model == "improved-smaller_images"
    assert [run.run for run in plan if run.stage == "seed repeat"] == ["repeat_seed_1", "repeat_seed_2"]
    # what the refit of the winner on validation adds: nothing for improved, refitted anyway; a seed model has
    # no forward run (it keeps its last epoch)
    assert candidates["improved"] == [] and [run.run for run in candidates["seed_blog"]] == ["seed_blog_refit"]
    assert "only if notebook 05 estimates that refit at 30 minutes at most" in notes[1]


def test_the_profiles_own_size_epochs_and_batch_override_each_recipes_ablations_included():
    gpu, _, _ = estimate.training_plan(get_profile("gpu"), _index())
    smoke, _, notes = estimate.training_plan(get_profile("smoke"), _index())

    assert {run.batch_size for run in gpu} == {64}
    assert {run.image_size for run in smoke if run.stage != "ablation"} == {64}
    assert _by_name(smoke)["larger_images"].image_size == 96  # 1.5 times smoke's 64, as the study trains it
    assert {run.epochs for run in smoke} == {1}
    # smoke builds the transfer model from random weights, so it is trained and estimated, backbone and all
    assert _by_name(smoke)["transfer"].weights is None and not any(note.startswith("transfer") for note in notes)


def test_the_transfer_model_is_timed_with_its_frozen_imagenet_backbone_when_the_weights_are_cached():
    plan, candidates, _ = estimate.training_plan(get_profile("full"), _index(), imagenet_weights_cached=True)

    assert _by_name(plan)["transfer"].weights == "imagenet" and _by_name(plan)["seed_blog"].weights is None
    assert _by_name(candidates["transfer"])["transfer_refit"].weights == "imagenet"


def test_a_model_not_trained_is_not_refitted_and_a_seed_repeat_is_trained_once_and_not_at_the_studys_seed():
    profile = {**get_profile("full"), "refit": ["transfer"], "seed_repeats": [2, 42, 2]}

    plan, candidates, _ = estimate.training_plan(profile, _index())

    assert not any(run.run.startswith("transfer") for run in plan) and candidates == {}
    assert [run.run for run in plan if run.stage == "seed repeat"] == ["repeat_seed_2"]


def test_the_weights_are_found_in_keras_cache_under_keras_home(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    cached = models.imagenet_weights_cached()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / models.TRANSFER_WEIGHTS_FILE).write_bytes(b"weights")

    assert models.imagenet_weights_cached() and (cached == (Path("/tmp/.keras/models")
                                                            / models.TRANSFER_WEIGHTS_FILE).is_file())


def test_a_runs_time_counts_every_epochs_batches_fixed_part_and_validation_its_first_epoch_and_a_recomputation():
    cost = StepCost(seconds_per_batch=2.0, seconds_per_epoch=0.5, seconds_per_val_image=0.01,
                    seconds_per_batch_norm_image=0.1, first_epoch_overhead=5.0)
    trained = PlannedRun("r", "train", "improved", 128, epochs=3, batch_size=32, fit_images=65, val_images=100)
    refit = PlannedRun("r_refit", "refit", "improved", 128, epochs=3, batch_size=32, fit_images=65, val_images=0,
                       recomputes_batch_norm=True)

    assert estimate.run_seconds(trained, cost) == pytest.approx(3 * (3 * 2.0 + 0.5 + 100 * 0.01) + 5.0)
    assert estimate.run_seconds(refit, cost) == pytest.approx(3 * (3 * 2.0 + 0.5) + 5.0 + 65 * 0.1)


def test_an_average_adds_its_models_refits_and_competes_only_as_notebook_05_would_let_it():
    run = PlannedRun("x", "refit", "seed_blog", 224, 20, 32, 30, 0)
    candidates = {"seed_blog": [run], "seed_notebook": [PlannedRun("y", "refit", "seed_notebook", 256, 15, 32, 30, 0)],
                  "improved": []}  # improved: refitted anyway
    seconds = {"x": 600.0, "y": 300.0, "seed_blog": 900.0, "seed_notebook": 200.0, "improved": 100.0}

    unlimited = estimate.average_refit_seconds(candidates, seconds, _index(), None)
    # notebook 05 prices a refit from the train-only time, scaled to train+val (30 of 20 images): 1350 s for
    # seed_blog, 300 s for seed_notebook; improved costs an average nothing
    within_25_minutes = estimate.average_refit_seconds(candidates, seconds, _index(), 25)

    assert sorted(unlimited) == [300.0, 600.0, 900.0, 900.0]
    assert sorted(within_25_minutes) == [300.0, 600.0]  # seed_blog and seed_notebook together, 1650 s, do not compete


def _fixed_timer(run, *, seed, jit_compile):
    # one second a batch, nothing else: a run's minutes are its batches / 60
    return StepCost(seconds_per_batch=1.0, seconds_per_epoch=0.0, seconds_per_val_image=0.0,
                    seconds_per_batch_norm_image=0.0, first_epoch_overhead=0.0)


def test_the_estimate_times_each_kind_of_run_once_and_sets_it_beside_the_last_runs_records(tmp_path):
    timed = []

    def timer(run, **kwargs):
        timed.append(run.cost_key)
        return _fixed_timer(run, **kwargs)

    intel = {"cpu": {"model_name": "Intel(R) Xeon(R)", "flags": ["amx_bf16"]}}
    for folder, name, seconds, epochs in [("runs", "seed_blog", 900.0, 20), ("selection", "improved_forward", 60.0, 15),
                                          ("ablations", "flip_only", 30.0, 15)]:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"{name}.json").write_text(json.dumps(
            {"config": {"epochs": epochs}, "train_seconds": seconds, "environment": intel}))
    result = estimate.estimate(get_profile("full"), _index(), recorded_dir=tmp_path, timer=timer)

    plan, candidates, _ = estimate.training_plan(get_profile("full"), _index())
    assert sorted(timed) == sorted({run.cost_key for run in plan + [r for runs in candidates.values() for r in runs]})
    rows = {row["run"]: row for row in result["rows"]}
    assert (rows["seed_blog"]["seconds per epoch, last run"], rows["seed_blog"]["last run's CPU"]) == (
        45.0, "Intel(R) Xeon(R) (native bfloat16)")
    assert rows["improved_forward"]["seconds per epoch, last run"] == 4.0
    assert rows["flip_only"]["seconds per epoch, last run"] == 2.0
    assert rows["seed_blog"]["seconds per epoch here"] == 1.0  # 20 images, one batch of 32
    assert rows["seed_blog_refit"]["stage"] == "if seed_blog wins validation"
    assert rows["improved"]["seconds per epoch, last run"] is None  # no record of it
    assert result["planned_minutes"] == round(sum(run.epochs for run in plan) / 60, 1)  # one batch an epoch each
    assert result["refit_minutes"]["least"] == 0.0  # improved may win: it is refitted anyway
    assert result["budget_minutes"] == 120


def test_the_summary_says_whether_training_alone_fits_the_budget_or_may_not_depending_on_validation():
    result = {"profile": "full", "cpu": "AMD EPYC (no native bfloat16)", "planned_minutes": 60.0,
              "refit_minutes": {"least": 0.0, "most": 30.0}, "budget_minutes": 120, "notes": ["a note"]}

    assert "about 60 to 90 minutes" in estimate.summary(result)
    assert "fits the profile's budget of 120 minutes for the whole study, with 30 minutes left" in estimate.summary(
        result)
    assert "is over the profile's budget" in estimate.summary({**result, "planned_minutes": 150.0})
    assert "may go over the profile's budget of 120 minutes for the whole study, depending on what validation picks" \
        in estimate.summary({**result, "planned_minutes": 100.0})
    assert estimate.summary(result).endswith("Note: a note.")
    assert "budget" not in estimate.summary({**result, "budget_minutes": None})


def test_a_few_real_steps_are_timed_with_the_models_own_training():
    run = PlannedRun("improved", "train", "improved", 32, epochs=15, batch_size=4, fit_images=100, val_images=10)

    cost = estimate.time_steps(run, seed=1, batches=3)

    assert cost.seconds_per_batch > 0 and cost.seconds_per_val_image > 0
    assert cost.seconds_per_batch_norm_image > 0  # improved has batch normalisation: its recomputation is timed
