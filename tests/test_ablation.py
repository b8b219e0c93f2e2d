"""Ablations change one choice of the improved recipe and are judged on validation only."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest

from marsrover import ablation, models, profiles
from marsrover.study import (best_on_validation, estimated_refit_seconds, forward_validation_index,
                             kept_val_balanced_accuracy, resolve_refit, within_refit_budget)


def test_the_profiles_know_every_ablation_by_name():
    assert profiles.ALL_ABLATIONS == list(ablation.ABLATIONS)
    for name in ("smoke", "full", "gpu"):
        assert set(profiles.get_profile(name)["ablations"]) <= set(ablation.ABLATIONS)


def test_the_full_profile_questions_five_choices_of_the_recipe_and_its_image_size_at_two_more_seeds():
    full = profiles.get_profile("full")
    questioned = [(field, option) if field == "body_options" else field
                  for name in full["ablations"] for field, value in ablation.ABLATIONS[name].changes.items()
                  for option in (value if field == "body_options" else [None])]
    assert set(questioned) == {"augmentation", ("body_options", "norm"), ("body_options", "head"),
                               "instrument_balance", "schedule", "image_size"}
    # one variant for each choice (the two-hour budget); the image size both ways, smaller and larger
    assert sorted(questioned, key=str) == sorted([*set(questioned), "image_size"], key=str)
    sizes = sorted(ablation.ABLATIONS[name].changes.get("image_size", 0) for name in full["ablations"])[-2:]
    assert sizes[0] < models.get_spec("improved").image_size < sizes[1]
    assert full["seed_repeats"] == [1, 2]
    # the gpu profile has the time for the alternatives and the seed the full one leaves out
    gpu = profiles.get_profile("gpu")
    assert set(gpu["ablations"]) == {*full["ablations"], "geometric_augmentation", "closeup_zoom", "label_weighting"}
    assert gpu["seed_repeats"] == [1, 2, 3]


@pytest.mark.parametrize("name", sorted(ablation.ABLATIONS))
def test_each_variant_differs_from_improved_in_exactly_what_it_names(name):
    base, variant = models.get_spec("improved"), ablation.variant_spec(name)
    changed = {field for field in ("augmentation", "input_scaling", "class_weighting", "schedule", "body_options",
                                   "ema_momentum", "instrument_balance", "image_size")
               if getattr(base, field) != getattr(variant, field)}
    assert changed == set(ablation.ABLATIONS[name].changes)
    assert (variant.epochs, variant.learning_rate) == (base.epochs, base.learning_rate)
    model = models.build_model(variant.name, 32)
    assert model.output_shape == (None, 2)


def test_a_recipe_weights_its_loss_one_way_only():
    with pytest.raises(ValueError, match="class_weighting and instrument_balance both weight the loss"):
        dataclasses.replace(models.get_spec("improved"), class_weighting=True)


def test_an_ablation_that_changes_nothing_is_refused_and_unknown_ones_are_named(monkeypatch):
    monkeypatch.setitem(ablation.ABLATIONS, "same", ablation.Ablation("same", "?", {"schedule": "cosine"}))
    with pytest.raises(ValueError, match="changes nothing"):
        ablation.variant_spec("same")
    with pytest.raises(KeyError, match="flip_only"):
        ablation.variant_spec("more_layers")


def test_run_ablations_writes_one_record_per_variant_and_the_table_compares_with_improved(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 32, 32, 3)).astype("uint8"), np.arange(12) % 2
    groups = np.array(["MAHLI · Rover", "Mastcam left · Surface"] * 6)
    records = ablation.run_ablations(["flip_only", "unweighted_loss"], (images, labels), (images[:6], labels[:6]),
                                     tmp_path, image_size=32, epochs=2, batch_size=4, seed=1, train_groups=groups)
    assert sorted(p.name for p in (tmp_path / "ablations").iterdir()) == ["flip_only.json", "unweighted_loss.json"]
    saved = json.loads((tmp_path / "ablations" / "flip_only.json").read_text())
    assert saved["config"]["augmentation"] == "flip" and len(saved["history"]["val_balanced_accuracy"]) == 2
    base = {"history": {"val_balanced_accuracy": [0.5, 0.75]}, "train_seconds": 3.0}
    table = ablation.ablation_table(base, records)
    assert list(table.index) == ["improved (as chosen)", "flip_only", "unweighted_loss"]
    for name, record in records.items():
        best = max(record["history"]["val_balanced_accuracy"])
        assert table.loc[name, "change vs improved"] == pytest.approx(best - 0.75)
    assert table.loc["improved (as chosen)", "mean of last 5 epochs"] == pytest.approx(0.625)


class _FixedAnswers:
    """A trained model's stand-in: P(Surface) given in advance, one per image."""

    def __init__(self, p_surface):
        self.p_surface = np.asarray(p_surface, dtype=float)

    def predict_on_batch(self, images):
        return np.stack([1 - self.p_surface[:len(images)], self.p_surface[:len(images)]], axis=1)


def test_a_record_keeps_the_validation_accuracy_per_group_of_the_weights_its_run_returns(tmp_path, monkeypatch):
    from marsrover import training

    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 32, 32, 3)).astype("uint8"), np.arange(12) % 2
    val_labels = np.array([0, 1, 0, 1, 0, 0])
    val_groups = np.array(["MAHLI · Rover", "MAHLI · Surface", "MAHLI · Rover", "Mastcam left · Surface",
                           "Mastcam left · Rover", "Mastcam left · Rover"])
    # the weights train() returns are the kept epoch's (restore_best_weights); these answer as given
    kept = _FixedAnswers([0.1, 0.9, 0.7, 0.2, 0.4, 0.6])
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: training.TrainingResult(
        kept, {"val_balanced_accuracy": [0.5]}, 1.0, {"seeds": {"seed": 1}}))
    common = dict(image_size=32, epochs=1, batch_size=4, seed=1, train_groups=np.array(["MAHLI · Rover"] * 12))
    with pytest.raises(ValueError, match="val_groups names 5 images; the validation split has 6"):
        ablation.run_ablations(["flip_only"], (images, labels), (images[:6], val_labels), tmp_path,
                               val_groups=val_groups[:5], **common)
    records = ablation.run_ablations(["flip_only"], (images, labels), (images[:6], val_labels), tmp_path,
                                     val_groups=val_groups, **common)
    saved = json.loads((tmp_path / "ablations" / "flip_only.json").read_text())
    assert saved["val_groups"] == records["flip_only"]["val_groups"] == [
        {"group": "MAHLI · Rover", "n": 2, "accuracy": 0.5, "errors": 1},
        {"group": "MAHLI · Surface", "n": 1, "accuracy": 1.0, "errors": 0},
        {"group": "Mastcam left · Rover", "n": 2, "accuracy": 0.5, "errors": 1},
        {"group": "Mastcam left · Surface", "n": 1, "accuracy": 0.0, "errors": 1}]
    without = ablation.run_ablations(["flip_only"], (images, labels), (images[:6], val_labels), tmp_path, **common)
    assert "val_groups" not in without["flip_only"]


def test_group_accuracies_count_surface_from_a_probability_of_one_half():
    rows = ablation.group_accuracies(np.array([0.5, 0.49, 0.9, 0.1]), np.array([1, 1, 0, 0]),
                                     np.array(["b", "b", "a", "a"]))
    assert rows == [{"group": "a", "n": 2, "accuracy": 0.5, "errors": 1},
                    {"group": "b", "n": 2, "accuracy": 0.5, "errors": 1}]
    diverged = ablation.group_accuracies(np.array([np.nan, 0.9, 0.1]), np.array([1, 1, 0]), np.array(["b", "b", "a"]))
    assert diverged[0]["accuracy"] == 1.0 and np.isnan(diverged[1]["accuracy"])  # no score, not "all Rover"


def test_the_groups_table_shows_each_run_by_group_and_places_variants_against_the_seeds():
    def groups(rover, surface):
        return [{"group": "MAHLI · Rover", "n": 4, "accuracy": rover}, {"group": "MAHLI · Surface", "n": 2,
                                                                        "accuracy": surface}]

    records = {"flip_only": {**_record([0.8]), "val_groups": groups(0.70, 0.90)},  # mean 0.80, worst 0.70
               "no_batch_norm": {**_record([0.6, 0.9]), "val_groups": groups(0.95, 0.85)},  # 0.90, 0.85
               "group_norm": {**_record([float("nan")]), "val_groups": groups(float("nan"), float("nan"))},
               "old_variant": _record([0.8]),  # written before groups were kept: left out
               "repeat_seed_1": {**_record([0.9], seed=1), "val_groups": groups(0.80, 0.90)}}  # 0.85, 0.80
    table = ablation.groups_table(groups(0.90, 0.84), 0.87, records)  # the study's run: mean 0.87, worst 0.84
    assert list(table.index) == ["improved (as chosen)", "improved, seed 1", "flip_only", "no_batch_norm",
                                 "group_norm"]
    assert table.loc["flip_only", ["mean of the groups", "worst group", "worst group's name"]].tolist() == [
        pytest.approx(0.80), 0.70, "MAHLI · Rover"]
    assert table.loc["no_batch_norm", "worst group's name"] == "MAHLI · Surface"
    assert table["best val balanced accuracy"].tolist()[:4] == [0.87, 0.9, 0.8, 0.9]  # the selection metric
    assert table["mean of the groups against the seeds"].tolist()[:4] == ["", "", "below every seed",
                                                                          "above every seed"]
    assert table["worst group against the seeds"].tolist()[2:4] == ["below every seed", "above every seed"]
    assert table["reading"].tolist()[2:] == [ablation.HELPS, ablation.HURTS, ablation.NO_SCORE]  # diverged: n/a
    assert table.loc["group_norm", "worst group's name"] == "n/a (no score)"
    alone = ablation.groups_table(groups(0.9, 0.84), 0.87, {"flip_only": records["flip_only"]})
    assert "reading" not in alone  # no repeat: no yardstick


def test_a_variant_of_the_image_size_trains_on_images_decoded_at_its_own_size_in_proportion(tmp_path):
    rng = np.random.default_rng(0)
    labels, groups = np.arange(12) % 2, np.array(["MAHLI · Rover", "Mastcam left · Surface"] * 6)

    def images_at(size):
        return rng.integers(0, 255, (12, size, size, 3)).astype("uint8")

    asked = []

    def data_at(size):
        asked.append(size)
        images = images_at(size)
        return (images, labels), (images[:6], labels[:6])

    # improved's 128 px to 96 and 192: in a profile that trains at 48 px, 36 and 72
    assert [ablation.variant_image_size(name, 48) for name in ("smaller_images", "larger_images", "flip_only")] == [
        36, 72, 48]
    common = dict(image_size=48, epochs=1, batch_size=4, seed=1, train_groups=groups)
    images = images_at(48)
    with pytest.raises(ValueError, match="need data_at"):
        ablation.run_ablations(["flip_only", "larger_images"], (images, labels), (images[:6], labels[:6]), tmp_path,
                               **common)
    assert not list((tmp_path / "ablations").glob("*.json")), "refused before any training"
    records = ablation.run_ablations(["flip_only", "smaller_images", "larger_images"], (images, labels),
                                     (images[:6], labels[:6]), tmp_path, data_at=data_at, **common)
    assert asked == [36, 72]
    assert [records[name]["config"]["image_size"] for name in records] == [48, 36, 72]
    assert [records[name]["changes"].get("image_size") for name in records] == [None, 36, 72]  # as trained
    with pytest.raises(ValueError, match="too small for improved's network.*smaller_images at 24 px"):
        ablation.run_ablations(["flip_only", "smaller_images"], (images_at(32), labels), (images[:6], labels[:6]),
                               tmp_path, data_at=data_at, **{**common, "image_size": 32})
    assert asked == [36, 72], "refused before any training"


def test_seed_repeats_train_improved_itself_at_other_seeds_after_the_variants(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 32, 32, 3)).astype("uint8"), np.arange(12) % 2
    groups = np.array(["MAHLI · Rover", "Mastcam left · Surface"] * 6)
    common = dict(image_size=32, epochs=1, batch_size=4, seed=42, train_groups=groups)
    records = ablation.run_ablations(["flip_only"], (images, labels), (images[:6], labels[:6]), tmp_path,
                                     seed_repeats=[1, 2], **common)
    assert list(records) == ["flip_only", "repeat_seed_1", "repeat_seed_2"]
    for seed in (1, 2):
        saved = json.loads((tmp_path / "ablations" / f"repeat_seed_{seed}.json").read_text())
        assert saved["config"]["model"] == "improved" and saved["config"]["seeds"]["seed"] == seed
        assert saved["changes"] == {}  # the recipe is improved's own
    assert records["flip_only"]["config"]["seeds"]["seed"] == 42  # the variants keep the study's seed
    # The study's own seed is its improved run already, and a seed named twice is one run: each trained once.
    again = ablation.run_ablations([], (images, labels), (images[:6], labels[:6]), tmp_path,
                                   seed_repeats=[42, 1, 1], **common)
    assert list(again) == ["repeat_seed_1"]


def test_no_ablation_can_be_mistaken_for_a_seed_repeat():
    assert not any(ablation.is_repeat(name) for name in ablation.ABLATIONS)


def _record(scores, seed=42, question="?"):
    return {"history": {"val_balanced_accuracy": scores}, "train_seconds": 1.0, "question": question,
            "config": {"seeds": {"seed": seed}}}


def test_the_table_places_each_variant_on_both_views_and_reads_a_hint_only_when_they_agree():
    base = _record([0.80, 0.92])  # best 0.92, settled (mean of its last epochs) 0.86
    records = {"flip_only": _record([0.85]), "no_batch_norm": _record([0.90]), "group_norm": _record([0.95]),
               "per_image_scaling": _record([0.70, 0.95]),  # a lucky best epoch, a poor settled score
               "repeat_seed_1": _record([0.88], seed=1), "repeat_seed_2": _record([0.93], seed=2)}
    table = ablation.ablation_table(base, records)
    assert list(table.index) == ["improved (as chosen)", "improved, seed 1", "improved, seed 2",
                                 "flip_only", "no_batch_norm", "group_norm", "per_image_scaling"]
    assert ablation.seed_range(base, records) == (0.88, 0.93)
    assert ablation.seed_range(base, records, "settled") == pytest.approx((0.86, 0.93))
    assert table["best against the seeds"].tolist() == [
        "", "", "", "below every seed", "within the seeds", "above every seed", "above every seed"]
    assert table["last 5 against the seeds"].tolist()[3:] == [
        "below every seed", "within the seeds", "above every seed", "below every seed"]
    assert table["reading"].tolist()[3:] == [ablation.HELPS, ablation.NO_EVIDENCE, ablation.HURTS, ablation.MIXED]
    assert table.loc["no_batch_norm", "change vs improved"] == pytest.approx(-0.02)  # a change, yet within chance
    without_repeats = ablation.ablation_table(base, {"flip_only": records["flip_only"]})
    assert "reading" not in without_repeats and ablation.seed_range(base, {}) is None
    only_repeats = ablation.ablation_table(base, {"repeat_seed_1": records["repeat_seed_1"]})
    assert only_repeats["reading"].tolist() == ["", ""]  # nothing to place
    diverged = ablation.ablation_table(base, {**records, "flip_only": _record([float("nan"), float("nan")])})
    assert diverged.loc["flip_only", ["best against the seeds", "reading"]].tolist() == [ablation.NO_SCORE] * 2
    assert ablation.ablation_table(_record([0.7, float("nan"), 0.9]), {}).loc["improved (as chosen)", "at epoch"] == 3


def test_the_seed_evidence_lists_every_seed_study_first_and_places_every_variant(tmp_path):
    records = {"repeat_seed_2": _record([0.88], seed=2), "flip_only": _record([0.85], question="flip?"),
               "repeat_seed_1": _record([0.93], seed=1), "no_batch_norm": _record([0.90])}
    folder = tmp_path / "ablations"
    folder.mkdir()
    for name, saved in records.items():
        (folder / f"{name}.json").write_text(json.dumps(saved))
    assert ablation.load_records(tmp_path) == records and ablation.load_records(tmp_path / "none") == {}
    evidence = ablation.seed_evidence(_record([0.92]), ablation.load_records(tmp_path))
    assert evidence["seeds"] == [{"seed": 42, "best": 0.92, "settled": 0.92}, {"seed": 1, "best": 0.93, "settled": 0.93},
                                 {"seed": 2, "best": 0.88, "settled": 0.88}]
    assert evidence["ranges"] == {"best": [0.88, 0.93], "settled": [0.88, 0.93]}
    assert evidence["variants"] == [
        {"variant": "flip_only", "question": "flip?", "best": 0.85, "settled": 0.85,
         "best_against_seeds": "below every seed", "settled_against_seeds": "below every seed",
         "reading": ablation.HELPS},
        {"variant": "no_batch_norm", "question": "?", "best": 0.90, "settled": 0.90,
         "best_against_seeds": "within the seeds", "settled_against_seeds": "within the seeds",
         "reading": ablation.NO_EVIDENCE}]
    assert ablation.seed_evidence(_record([0.9]), {"flip_only": records["flip_only"]}) is None  # no yardstick
    diverged = {"repeat_seed_1": _record([float("nan")], seed=1), "flip_only": records["flip_only"]}
    nothing_scored = ablation.seed_evidence(_record([float("nan")]), diverged)
    assert nothing_scored["variants"][0]["reading"] == ablation.NO_SCORE  # no seed scored: nothing to place


def test_a_study_without_ablations_or_repeats_leaves_no_earlier_records(tmp_path):
    from marsrover import study

    (tmp_path / "ablations").mkdir()
    (tmp_path / "ablations" / "flip_only.json").write_text("{}")
    assert study.run_ablations([], None, None, tmp_path, image_size=32, epochs=1, batch_size=4, seed=1) == {}
    assert ablation.load_records(tmp_path) == {}


def _run(val_scores, kept="epoch 2 (best on val)"):
    return {"history": {"val_balanced_accuracy": val_scores}, "config": {"kept_weights": kept}}


def test_the_kept_weights_are_scored_by_their_own_epoch():
    assert kept_val_balanced_accuracy(_run([0.7, 0.9, 0.8])) == 0.9
    assert kept_val_balanced_accuracy(_run([0.7, 0.9, 0.8], kept="epoch 3 (last)")) == 0.8
    assert kept_val_balanced_accuracy({"skipped": "no weights"}) is None


def test_best_on_val_refits_the_winner_on_validation_and_ties_go_to_the_first_name():
    runs = {"seed_notebook": _run([0.9], kept="epoch 1 (last)"), "improved": _run([0.8, 0.95]),
            "transfer": {"skipped": "offline"}}
    assert resolve_refit(["best_on_val"], runs) == (["improved"], [])
    assert resolve_refit(["best_on_val", "improved", "seed_notebook"], runs) == (["improved", "seed_notebook"], [])
    assert resolve_refit([], runs) == ([], [])
    assert best_on_validation({"seed_blog": 0.5, "improved": 0.5, "transfer": 0.4}) == "improved"


def _index(val_sols):
    rows = [("train", 1), ("train", 2)] + [("val", sol) for sol in val_sols] + [("test", 99)]
    return pd.DataFrame(rows, columns=["split", "sol"])


def test_forward_validation_trains_on_the_earlier_validation_sols_and_judges_on_the_later_ones():
    index = _index([10, 10, 11, 12, 12, 12, 13, 14])
    forward = forward_validation_index(index)
    # Half of validation's 8 images is reached within sol 12, so sols 10-12 train and 13-14 judge.
    assert list(forward.loc[forward["split"] == "val_early", "sol"]) == [10, 10, 11, 12, 12, 12]
    assert list(forward.loc[forward["split"] == "val", "sol"]) == [13, 14]
    assert (forward["split"] == "train").sum() == 2 and (forward["split"] == "test").sum() == 1
    assert list(index["split"]).count("val") == 8, "the study's own index is left as it was"


def test_forward_validation_needs_at_least_two_validation_sols():
    assert forward_validation_index(_index([10, 10, 10])) is None
    assert forward_validation_index(_index([])) is None


def test_improved_weights_each_image_by_its_training_group_and_the_label_only_variant_by_its_label(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (12, 32, 32, 3)).astype("uint8"), (np.arange(12) % 3 == 0).astype(int)
    groups = np.array(["Mastcam left · Surface"] * 9 + ["MAHLI · Surface"] * 3)
    records = ablation.run_ablations(["flip_only", "label_weighting", "unweighted_loss"], (images, labels),
                                     (images[:6], labels[:6]), tmp_path, image_size=32, epochs=1, batch_size=4,
                                     seed=1, train_groups=groups)
    weights = records["flip_only"]["config"]["group_weights"]  # flip_only keeps improved's loss
    assert weights["MAHLI · Surface"] == pytest.approx(3 ** 0.5 * weights["Mastcam left · Surface"], rel=1e-3)
    assert records["flip_only"]["config"]["class_weight"] is None  # the group weights replace it
    assert records["label_weighting"]["config"]["class_weight"] == {0: 0.75, 1: 1.5}  # 8 Rover, 4 Surface
    assert "group_weights" not in records["label_weighting"]["config"]
    assert records["unweighted_loss"]["config"]["class_weight"] is None
    assert "group_weights" not in records["unweighted_loss"]["config"]
    with pytest.raises(ValueError, match="pass train_groups, one group per training image"):
        ablation.run_ablations(["flip_only"], (images, labels), (images[:6], labels[:6]), tmp_path,
                               image_size=32, epochs=1, batch_size=4, seed=1)


def test_when_an_average_wins_on_validation_each_of_its_models_is_refitted():
    runs = {"seed_blog": _run([0.89], kept="epoch 1 (last)"), "improved": _run([0.8, 0.95])}
    scores = {"improved": 0.95, "seed_blog": 0.89, "improved+seed_blog": 0.96}
    assert resolve_refit(["best_on_val"], runs, scores) == (["improved", "seed_blog"], ["improved+seed_blog"])
    assert resolve_refit(["best_on_val", "seed_blog"], runs, {**scores, "improved": 0.97}) == \
        (["improved", "seed_blog"], [])  # a single model won; seed_blog is refitted because it was named
    assert resolve_refit(["seed_blog+improved"], runs) == (["improved", "seed_blog"], ["improved+seed_blog"])
    with pytest.raises(ValueError, match="twice"):
        resolve_refit(["improved+improved"], runs)


def _sized_index(n_train, val_sols):
    return pd.DataFrame([("train", 1)] * n_train + [("val", sol) for sol in val_sols], columns=["split", "sol"])


def test_a_refit_is_estimated_from_the_train_only_time_scaled_by_the_images_it_fits_on():
    index = _sized_index(100, [10] * 25 + [11] * 25)  # 50 validation images; sol 10 is the earlier half
    runs = {"seed_blog": {"train_seconds": 600.0}, "improved": {"train_seconds": 200.0}}
    assert estimated_refit_seconds(["seed_blog"], runs, index) == pytest.approx(600 * 150 / 100)
    # improved keeps its best epoch, so its refit also pays a forward run on train + the earlier 25 images.
    assert estimated_refit_seconds(["improved"], runs, index) == pytest.approx(200 * 150 / 100 + 200 * 125 / 100)
    assert estimated_refit_seconds(["improved", "seed_blog"], runs, index) == pytest.approx(900 + 550)
    no_forward = _sized_index(100, [10] * 50)  # one validation sol: no forward run, the train-only best epoch
    assert estimated_refit_seconds(["improved"], runs, no_forward) == pytest.approx(300)


def test_an_average_whose_refit_overruns_the_budget_cannot_win_but_a_single_model_always_can(capsys):
    index = _sized_index(100, [10] * 50)
    runs = {"seed_blog": {"train_seconds": 1200.0}, "seed_notebook": {"train_seconds": 300.0},
            "improved": {"train_seconds": 240.0}}  # refits: 30, 7.5 and 6 minutes
    scores = {"seed_blog": 0.85, "seed_notebook": 0.88, "improved": 0.90, "improved+seed_notebook": 0.93,
              "improved+seed_blog": 0.96, "improved+seed_blog+seed_notebook": 0.97}
    kept = within_refit_budget(scores, runs, index, budget_minutes=20)
    assert kept == {"seed_blog": 0.85, "seed_notebook": 0.88, "improved": 0.90, "improved+seed_notebook": 0.93}
    printed = capsys.readouterr().out
    assert "20-minute budget" in printed
    assert printed.index("improved+seed_blog+seed_notebook: validation balanced accuracy 0.970, refit about 44 min") \
        < printed.index("improved+seed_blog: validation balanced accuracy 0.960, refit about 36 min")
    assert resolve_refit(["best_on_val"], runs, kept) == (["improved", "seed_notebook"], ["improved+seed_notebook"])
    assert within_refit_budget(scores, runs, index, budget_minutes=None) == scores
    assert within_refit_budget(scores, runs, index, budget_minutes=0) == \
        {"seed_blog": 0.85, "seed_notebook": 0.88, "improved": 0.90}


def test_a_model_the_profile_refits_anyway_costs_an_average_nothing(tmp_path, capsys):
    index = _sized_index(100, [10] * 50)
    runs = {"seed_blog": {"train_seconds": 1200.0}, "improved": {"train_seconds": 240.0}}  # refits: 30 and 6 min
    scores = {"improved": 0.90, "improved+seed_blog": 0.96}
    record = tmp_path / "refit_budget.json"
    assert "improved+seed_blog" not in within_refit_budget(scores, runs, index, budget_minutes=32)
    kept = within_refit_budget(scores, runs, index, budget_minutes=32, record_to=record, refitted_anyway=["improved"])
    assert kept == scores  # only seed_blog's 30 minutes are the average's own
    saved = json.loads(record.read_text())
    assert saved["refitted_anyway"] == ["improved"] and saved["averages"]["improved+seed_blog"]["estimated_refit_minutes"] == 30.0


def test_the_estimate_of_every_average_is_kept_with_whether_it_competed(tmp_path):
    index = _sized_index(100, [10] * 50)
    runs = {"seed_blog": {"train_seconds": 1200.0}, "improved": {"train_seconds": 240.0},
            "seed_notebook": {"train_seconds": None}}
    scores = {"improved": 0.9, "improved+seed_blog": 0.96, "seed_blog+seed_notebook": 0.91}
    record = tmp_path / "refit_budget.json"
    within_refit_budget(scores, runs, index, budget_minutes=40, record_to=record)
    assert json.loads(record.read_text()) == {"budget_minutes": 40, "averages": {
        "improved+seed_blog": {"val_balanced_accuracy": 0.96, "competes": True, "estimated_refit_minutes": 36.0},
        "seed_blog+seed_notebook": {"val_balanced_accuracy": 0.91, "competes": False,
                                    "estimated_refit_minutes": None}}}  # unknown: a model has no training time
    record.unlink()
    within_refit_budget(scores, runs, index, budget_minutes=None, record_to=record)
    assert not record.exists()  # no budget, nothing estimated


def test_a_study_leaves_no_budget_record_of_an_earlier_run(tmp_path, monkeypatch):
    from marsrover import study

    (tmp_path / study.REFIT_BUDGET_FILE).write_text("{}")
    monkeypatch.setattr(study, "_fit_and_save", lambda *args, **kwargs: {"config": {"image_size": 32}})
    study.train_models(["quick_cnn"], None, None, tmp_path, image_size=32, epochs=1, batch_size=2, seed=42)
    assert not (tmp_path / study.REFIT_BUDGET_FILE).exists()


def test_an_average_with_a_model_of_unknown_training_time_is_left_out_and_no_budget_drops_a_single_model(capsys):
    index = _sized_index(100, [10] * 50)
    runs = {"seed_blog": {"train_seconds": None}, "improved": {"train_seconds": 240.0}}
    assert estimated_refit_seconds(["improved", "seed_blog"], runs, index) == float("inf")
    scores = {"seed_blog": 0.8, "improved": 0.9, "improved+seed_blog": 0.95}
    assert within_refit_budget(scores, runs, index, budget_minutes=-1) == {"seed_blog": 0.8, "improved": 0.9}
    assert "improved+seed_blog: validation balanced accuracy 0.950, refit unknown" in capsys.readouterr().out


def test_only_recipes_that_keep_their_best_epoch_train_a_forward_run_before_their_refit(tmp_path):
    from marsrover.study import chooses_refit_length, refit_epochs

    assert [name for name in profiles.ALL_MODELS if chooses_refit_length(name)] == ["improved", "transfer"]
    run = {"config": {"epochs": 15, "best_epoch_on_val": 4, "kept_weights": "epoch 15 (last)"}}
    assert refit_epochs("quick_cnn", run, None, None, tmp_path, size=32, epochs=None)[2] is None


def test_full_refits_improved_whatever_wins_on_validation_since_the_targets_are_set_for_it(capsys):
    from marsrover.study import resolve_refit

    refit = profiles.get_profile("full")["refit"]
    assert profiles.get_profile("gpu")["refit"] == refit
    names, averages = resolve_refit(refit, {}, scores={"improved": 0.94, "quick_cnn+seed_blog": 0.95})
    assert names == ["quick_cnn", "seed_blog", "improved"] and averages == ["quick_cnn+seed_blog"]
    assert resolve_refit(refit, {}, scores={"improved": 0.96, "seed_blog": 0.95}) == (["improved"], [])  # once
    # smoke names an average that includes improved: CI refits it either way
    assert "improved" in profiles.get_profile("smoke")["refit"][1].split("+")


def test_full_caps_the_refit_of_an_average_and_smoke_names_a_cap_its_tiny_runs_never_reach():
    assert profiles.get_profile("full")["average_refit_budget_minutes"] == 30
    assert profiles.get_profile("smoke")["average_refit_budget_minutes"] == 60
    assert profiles.get_profile("gpu")["average_refit_budget_minutes"] is None


def test_a_recipe_that_keeps_its_last_epoch_is_refitted_for_its_own_epochs_without_a_forward_run(tmp_path):
    from marsrover.study import refit_epochs

    seed_blog_run = {"config": {"epochs": 20, "best_epoch_on_val": 7, "kept_weights": "epoch 20 (last)"}}
    epochs, how, forward = refit_epochs("seed_blog", seed_blog_run, None, None, tmp_path, size=32, epochs=None)
    assert (epochs, forward) == (20, None) and "own number of epochs" in how
    assert not list(tmp_path.iterdir())  # nothing was trained


def test_every_ablation_questions_a_named_choice_of_the_recipe_and_the_unquestioned_ones_are_listed():
    questioned = {name for names in ablation.DESIGN_CHOICES.values() for name in names}
    assert questioned == set(ablation.ABLATIONS) - {"plain_recipe"}  # plain_recipe undoes three at once
    assert ablation.unquestioned_choices(ablation.ABLATIONS) == [
        "four blocks of 32 to 256 filters", "dropout of 0.3 before the head",
        "Adam at a learning rate of 0.001 in batches of 32", "15 epochs with the best validation epoch kept"]
    full = ablation.unquestioned_choices(profiles.get_profile("full")["ablations"])
    assert "the cosine learning-rate decay" not in full and "a stride-2 stem" in full
