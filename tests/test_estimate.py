"""The estimate of a profile's training time: the runs notebook 05 would make, each timed here in a few steps."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from marsrover import estimate
from marsrover.estimate import PlannedRun, StepCost
from marsrover.profiles import get_profile


def _index() -> pd.DataFrame:
    """20 train images, 10 validation images over 5 sols (2 each), 4 test images; labels alternate."""
    rows = [("train", 10 + i % 4) for i in range(20)] + [("val", 500 + i // 2) for i in range(10)]
    rows += [("test", 900)] * 4
    return pd.DataFrame({"split": [split for split, _ in rows], "sol": [sol for _, sol in rows],
                         "label": [i % 2 for i in range(len(rows))]})


def _runs_by_name(runs):
    return {run.run: run for run in runs}


def test_the_full_plan_lists_each_model_its_refits_the_leakage_run_the_ablations_and_the_seed_repeats():
    plan, candidates, notes = estimate.training_plan(get_profile("full"), _index())

    runs = _runs_by_name(plan)
    assert [run.run for run in plan if run.stage == "train"] == ["seed_notebook", "seed_blog", "improved", "quick_cnn"]
    assert "transfer: skipped" in notes[0]  # its ImageNet weights are not cached: the study skips it too
    seed_blog = runs["seed_blog"]
    assert (seed_blog.image_size, seed_blog.epochs, seed_blog.fit_images, seed_blog.val_images) == (224, 20, 20, 10)
    # improved is refitted whatever wins: forward validation first, on train + the earlier validation sols up
    # to the one that brings them to half the split (sols 500-502, 6 images), judged on the 4 after them
    assert (runs["improved_forward"].fit_images, runs["improved_forward"].val_images) == (26, 4)
    refit = runs["improved_refit"]
    assert (refit.fit_images, refit.val_images, refit.recomputes_batch_norm) == (30, 0, True)
    assert (runs["seed_notebook_random_split"].fit_images, runs["seed_notebook_random_split"].val_images) == (24, 6)
    ablations = [run for run in plan if run.stage == "ablation"]
    assert [run.run for run in ablations] == get_profile("full")["ablations"]
    assert _runs_by_name(ablations)["larger_images"].image_size == 192
    assert _runs_by_name(ablations)["smaller_images"].model == "improved-smaller_images"
    assert [run.run for run in plan if run.stage == "seed repeat"] == ["repeat_seed_1", "repeat_seed_2"]
    # what the refit of the winner on validation adds: nothing for improved, refitted anyway; a seed model has
    # no forward run (it keeps its last epoch)
    assert candidates["improved"] == [] and [run.run for run in candidates["seed_blog"]] == ["seed_blog_refit"]
    assert "only one whose refit fits 30 minutes competes" in notes[1]


def test_the_transfer_model_is_planned_when_its_weights_are_cached_or_it_trains_from_random_weights():
    cached, _, _ = estimate.training_plan(get_profile("full"), _index(), imagenet_weights_cached=True)
    smoke, _, notes = estimate.training_plan(get_profile("smoke"), _index())

    assert "transfer" in _runs_by_name(cached) and "transfer" in _runs_by_name(smoke)
    assert not any(note.startswith("transfer") for note in notes)
    assert {run.image_size for run in smoke if run.stage != "ablation"} == {64}  # smoke's one size
    assert {run.epochs for run in smoke} == {1}


def test_a_runs_time_counts_every_epochs_batches_and_validation_once_its_first_epochs_extra_and_a_batch_norm_pass():
    cost = StepCost(seconds_per_batch=2.0, seconds_per_val_image=0.01, first_epoch_overhead=5.0)
    trained = PlannedRun("r", "train", "improved", 128, epochs=3, batch_size=32, fit_images=65, val_images=100)
    refit = PlannedRun("r_refit", "refit", "improved", 128, epochs=3, batch_size=32, fit_images=65, val_images=0,
                       recomputes_batch_norm=True)

    assert estimate.run_seconds(trained, cost) == pytest.approx(3 * (3 * 2.0 + 100 * 0.01) + 5.0)
    assert estimate.run_seconds(refit, cost) == pytest.approx(3 * 3 * 2.0 + 5.0 + 65 * 0.01)


def test_an_average_adds_its_models_refits_and_competes_only_within_the_budget():
    refits = {"a": 10.0, "b": 25.0, "c": 0.0}

    assert sorted(estimate.averages_refit_minutes(refits, None)) == [10.0, 25.0, 35.0, 35.0]
    assert sorted(estimate.averages_refit_minutes(refits, 30)) == [10.0, 25.0]


def _fixed_timer(run, *, seed, jit_compile):
    # one second a batch, nothing else: a run's minutes are its batches / 60
    return StepCost(seconds_per_batch=1.0, seconds_per_val_image=0.0, first_epoch_overhead=0.0)


def test_the_estimate_times_each_kind_of_run_once_and_says_how_it_stands_against_the_budget(tmp_path, capsys):
    timed = []

    def timer(run, **kwargs):
        timed.append(run.cost_key)
        return _fixed_timer(run, **kwargs)

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "seed_blog.json").write_text(json.dumps({
        "config": {"epochs": 20}, "train_seconds": 900.0,
        "environment": {"cpu": {"model_name": "Intel(R) Xeon(R)", "flags": ["amx_bf16"]}}}))
    result = estimate.estimate(get_profile("full"), _index(), recorded_dir=tmp_path, timer=timer)

    assert len(timed) == len(set(timed))  # improved's repeats and refits share one timing
    rows = {row["run"]: row for row in result["rows"]}
    assert rows["seed_blog"]["seconds per epoch, last run"] == 45.0
    assert rows["seed_blog"]["last run's CPU"] == "Intel(R) Xeon(R) (native bfloat16)"
    assert rows["seed_blog"]["seconds per epoch here"] == 1.0  # 20 images, one batch of 32
    assert rows["seed_blog_refit"]["stage"] == "if seed_blog wins validation"
    assert result["planned_minutes"] == pytest.approx(sum(
        row["minutes here"] for row in result["rows"] if not row["stage"].startswith("if ")))
    assert result["refit_minutes"]["least"] == 0.0  # improved may win: it is refitted anyway
    assert result["budget_minutes"] == 120
    assert "inside the profile's budget of 120 minutes" in estimate.summary(result)
    slow = {**result, "planned_minutes": 150.0}
    assert "over the profile's budget" in estimate.summary(slow)
    close = {**result, "planned_minutes": 119.9, "refit_minutes": {"least": 0.0, "most": 20.0}}
    assert "depending on what validation picks" in estimate.summary(close)


def test_a_few_real_steps_are_timed_with_the_models_own_training():
    run = PlannedRun("improved", "train", "improved", 32, epochs=15, batch_size=4, fit_images=100, val_images=10)

    cost = estimate.time_steps(run, seed=1, batches=2)

    assert cost.seconds_per_batch > 0 and cost.seconds_per_val_image > 0 and cost.first_epoch_overhead >= 0
