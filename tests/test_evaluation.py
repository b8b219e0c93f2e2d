import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from marsrover import plots
from marsrover.evaluation import (
    accuracy_by_training_coverage,
    accuracy_needed_on_rare,
    at_confidence,
    average_predictions,
    binary_metrics,
    bootstrap_ci,
    breakdown,
    correct_and_wrong,
    coverage_curve,
    curves,
    errors_against_training,
    majority_baseline,
    most_confident_errors,
    predict_surface_probability,
    rarely_trained,
    sol_ranges,
)

Y_TRUE = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1])
P_SURFACE = np.array([0.1, 0.2, 0.6, 0.3, 0.05, 0.4, 0.9, 0.7, 0.45, 0.8])


def test_binary_metrics_agree_with_scikit_learn():
    scores = binary_metrics(Y_TRUE, P_SURFACE)
    y_pred = (P_SURFACE >= 0.5).astype(int)
    assert scores["n"] == 10
    assert scores["accuracy"] == pytest.approx(0.8)
    assert scores["balanced_accuracy"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert scores["macro_f1"] == pytest.approx(skm.f1_score(Y_TRUE, y_pred, average="macro"))
    assert scores["roc_auc"] == pytest.approx(skm.roc_auc_score(Y_TRUE, P_SURFACE))
    assert scores["confusion_matrix"] == [[5, 1], [1, 3]]


def test_roc_auc_is_none_when_a_split_has_one_class():
    assert binary_metrics(np.zeros(4), np.array([0.1, 0.7, 0.2, 0.3]))["roc_auc"] is None


def test_the_majority_baseline_answers_the_commonest_label():
    baseline = majority_baseline(Y_TRUE)
    assert baseline["answer"] == "Rover"
    assert baseline["accuracy"] == pytest.approx(0.6) and baseline["balanced_accuracy"] == pytest.approx(0.5)


def test_prediction_is_one_batched_call():
    class CountingModel:
        calls = 0

        def predict_on_batch(self, images):
            CountingModel.calls += 1
            return np.stack([1 - images[:, 0, 0, 0] / 255, images[:, 0, 0, 0] / 255], axis=1)

    images = np.zeros((300, 2, 2, 3), dtype="uint8")
    images[:100] = 255
    p = predict_surface_probability(CountingModel(), images, batch_size=300)
    assert CountingModel.calls == 1 and p.shape == (300,)
    assert p[:100].min() == 1.0 and p[100:].max() == 0.0


def test_a_split_larger_than_a_batch_is_streamed_in_order_with_the_same_probabilities():
    from marsrover.models import build_model

    model = build_model("improved", 32)
    images = np.random.default_rng(0).integers(0, 255, (70, 32, 32, 3)).astype("uint8")
    streamed = predict_surface_probability(model, images, batch_size=16)
    direct = np.asarray(model.predict(images.astype("float32"), verbose=0), dtype="float64")[:, 1]
    np.testing.assert_allclose(streamed, direct, atol=1e-5)


# --- per-class scores, PR-AUC, Brier, bootstrap intervals ---------------------------------------


def test_per_class_precision_recall_f1_pr_auc_and_brier_agree_with_scikit_learn():
    scores = binary_metrics(Y_TRUE, P_SURFACE)
    y_pred = (P_SURFACE >= 0.5).astype(int)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(Y_TRUE, y_pred, labels=[0, 1])
    for position, name in enumerate(["Rover", "Surface"]):
        assert scores["precision"][name] == pytest.approx(precision[position])
        assert scores["recall"][name] == pytest.approx(recall[position])
        assert scores["f1"][name] == pytest.approx(f1[position])
    assert scores["recall"] == {"Rover": pytest.approx(5 / 6), "Surface": pytest.approx(3 / 4)}
    assert scores["pr_auc"] == pytest.approx(skm.average_precision_score(Y_TRUE, P_SURFACE))
    assert scores["brier"] == pytest.approx(np.mean((P_SURFACE - Y_TRUE) ** 2))
    assert "ci95" not in scores  # only when asked for


def test_metrics_are_plain_json_serialisable_values():
    scores = binary_metrics(Y_TRUE, P_SURFACE, n_boot=50)
    assert json.loads(json.dumps(scores)) == scores
    low, high = scores["ci95"]["accuracy"]
    assert isinstance(low, float) and low <= scores["accuracy"] <= high
    assert set(scores["ci95"]) == {"accuracy", "balanced_accuracy"}


def test_one_class_splits_have_no_pr_auc_but_a_brier_score():
    scores = binary_metrics(np.ones(3), np.array([0.9, 0.2, 0.6]))
    assert scores["pr_auc"] is None and scores["roc_auc"] is None
    assert scores["brier"] == pytest.approx(np.mean([0.01, 0.64, 0.16]))
    json.dumps(scores)


def _noisy_predictions(n, seed=0, accuracy=0.8):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, n)
    y_pred = np.where(rng.random(n) < accuracy, y_true, 1 - y_true)
    return y_true, y_pred


def test_bootstrap_is_deterministic_given_the_seed_and_brackets_the_estimate():
    y_true, y_pred = _noisy_predictions(200)
    first = bootstrap_ci(y_true, y_pred, skm.accuracy_score, n_boot=300, seed=7)
    assert bootstrap_ci(y_true, y_pred, skm.accuracy_score, n_boot=300, seed=7) == first
    assert bootstrap_ci(y_true, y_pred, skm.accuracy_score, n_boot=300, seed=8) != first
    low, high = first
    assert low < skm.accuracy_score(y_true, y_pred) < high


def test_bootstrap_intervals_narrow_with_more_data():
    small = bootstrap_ci(*_noisy_predictions(50), skm.accuracy_score, n_boot=300)
    large = bootstrap_ci(*_noisy_predictions(2000), skm.accuracy_score, n_boot=300)
    assert large[1] - large[0] < (small[1] - small[0]) / 2


def test_bootstrap_skips_resamples_where_the_metric_is_undefined():
    y_true, p = np.array([0, 1]), np.array([0.2, 0.7])
    # Half the resamples of two images hold one class, where ROC-AUC raises ValueError.
    low, high = bootstrap_ci(y_true, p, skm.roc_auc_score, n_boot=40, seed=0)
    assert low == high == 1.0
    assert np.isnan(bootstrap_ci(np.zeros(3), p[:1].repeat(3), skm.roc_auc_score, n_boot=10)).all()


def test_a_cluster_of_one_image_each_is_the_image_bootstrap():
    y_true, y_pred = _noisy_predictions(200)
    assert bootstrap_ci(y_true, y_pred, skm.accuracy_score, n_boot=200, seed=3, clusters=np.arange(200)) \
        == bootstrap_ci(y_true, y_pred, skm.accuracy_score, n_boot=200, seed=3)


def test_copies_of_an_image_add_nothing_to_a_cluster_bootstrap_but_narrow_an_image_bootstrap():
    y_true, y_pred = _noisy_predictions(100)
    copies, clusters = np.repeat(y_true, 5), np.repeat(np.arange(100), 5)  # five frames of each scene
    predicted = np.repeat(y_pred, 5)
    alone = bootstrap_ci(y_true, y_pred, skm.accuracy_score, n_boot=300, seed=1)
    by_scene = bootstrap_ci(copies, predicted, skm.accuracy_score, n_boot=300, seed=1, clusters=clusters)
    by_image = bootstrap_ci(copies, predicted, skm.accuracy_score, n_boot=300, seed=1)
    np.testing.assert_allclose(by_scene, alone)
    assert by_image[1] - by_image[0] < (alone[1] - alone[0]) / 1.5


def test_clusters_are_found_wherever_their_images_lie_in_the_split():
    y_true, y_pred = _noisy_predictions(120, seed=5)
    sols = np.random.default_rng(1).integers(0, 12, 120)  # interleaved, unsorted
    order = np.random.default_rng(2).permutation(120)
    assert bootstrap_ci(y_true, y_pred, skm.accuracy_score, n_boot=200, seed=0, clusters=sols) \
        == bootstrap_ci(y_true[order], y_pred[order], skm.accuracy_score, n_boot=200, seed=0, clusters=sols[order])


def test_one_cluster_or_one_image_has_no_interval():
    y_true, y_pred = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    assert np.isnan(bootstrap_ci(y_true, y_pred, skm.accuracy_score, clusters=np.full(4, 7))).all()
    assert np.isnan(bootstrap_ci(y_true[:1], y_pred[:1], skm.accuracy_score)).all()


def test_clusters_must_name_one_per_image():
    with pytest.raises(ValueError, match="clusters has 3 entries, y_true 4"):
        bootstrap_ci(np.zeros(4), np.zeros(4), skm.accuracy_score, clusters=np.zeros(3))


def test_the_metrics_say_what_their_intervals_resampled():
    y_true, y_pred = _noisy_predictions(60)
    sols = np.arange(60) // 4
    by_sol = binary_metrics(y_true, y_pred.astype(float), n_boot=100, seed=0, clusters=sols, cluster_unit="sol")
    assert (by_sol["ci95_unit"], by_sol["ci95_clusters"]) == ("sol", 15)
    assert by_sol["ci95"]["accuracy"] == list(bootstrap_ci(y_true, y_pred, skm.accuracy_score, n_boot=100, seed=0,
                                                           clusters=sols))
    by_image = binary_metrics(y_true, y_pred.astype(float), n_boot=100, seed=0)
    assert (by_image["ci95_unit"], by_image["ci95_clusters"]) == ("image", 60)
    assert "ci95_unit" not in binary_metrics(y_true, y_pred.astype(float))  # no intervals, nothing resampled


def test_the_interval_table_widens_once_frames_of_one_scene_stop_counting_as_independent_and_ends_with_the_studys():
    from marsrover.study import interval_table

    y_true, y_pred = _noisy_predictions(240, seed=4)
    scene = np.arange(240) // 6  # six frames of one sequence, and of one answer: not independent draws
    y_true, y_pred = y_true[scene * 6], y_pred[scene * 6]
    sols = scene // 2
    rows = pd.DataFrame({"id": [f"{100 + sol:04d}MH{s:06d}00{i:03d}I01_DRCL" for i, (s, sol) in
                                enumerate(zip(scene, sols))], "sol": sols, "label": y_true, "p_surface": y_pred * 1.0})
    table = interval_table(rows, bootstrap_samples=200, seed=0)
    assert table.index.tolist() == ["image", "observation sequence", "sol (the study's)"]
    assert table["units"].tolist() == [240, 40, 20]
    width = table["accuracy CI width"]
    assert width.iloc[0] < width.iloc[1] / 1.5 and width.iloc[0] < width.iloc[2] / 1.5
    own = binary_metrics(y_true, y_pred * 1.0, n_boot=200, seed=0, clusters=sols)["ci95"]["accuracy"]
    assert table.loc["sol (the study's)", "accuracy 95% CI"] == f"{own[0]:.3f}–{own[1]:.3f}"


def test_a_paired_difference_cancels_what_both_share_and_is_zero_for_the_same_answers():
    from marsrover.evaluation import paired_difference

    y_true, y_pred = _noisy_predictions(300, seed=2, accuracy=0.7)
    sols = np.arange(300) // 10
    same = paired_difference(y_true, y_pred, y_pred, skm.accuracy_score, n_boot=200, seed=0, clusters=sols)
    assert same == {"difference": 0.0, "ci95": [0.0, 0.0]}
    better = np.where(np.arange(300) % 15 == 0, y_true, y_pred)  # right wherever y_pred was, and on a few more
    result = paired_difference(y_true, better, y_pred, skm.accuracy_score, n_boot=200, seed=0, clusters=sols)
    assert result["difference"] == pytest.approx(skm.accuracy_score(y_true, better) - skm.accuracy_score(y_true, y_pred))
    assert 0 < result["ci95"][0] < result["difference"] < result["ci95"][1]
    # unpaired, the two intervals overlap although every resample puts `better` ahead
    apart = [bootstrap_ci(y_true, p, skm.accuracy_score, n_boot=200, seed=0, clusters=sols) for p in (better, y_pred)]
    assert apart[0][0] < apart[1][1]


def test_improved_is_set_against_the_majority_answer_and_each_seed_model_on_the_same_test_images():
    from marsrover.evaluation import paired_difference
    from marsrover.study import differences_on_test

    def rows(predicted, ids="abcdef"):
        return {"test": pd.DataFrame({"id": list(ids), "sol": [1, 1, 2, 2, 3, 3], "label": [0, 0, 0, 0, 1, 1],
                                      "predicted": predicted})}

    predictions = {"improved": rows([0, 0, 0, 1, 1, 1]), "seed_blog": rows([0, 1, 1, 1, 1, 0]),
                   "seed_blog_refit": rows([0, 0, 0, 0, 1, 1])}
    scores = {"improved": {"kind": "train only"}, "seed_blog": {"kind": "train only"},
              "seed_blog_refit": {"kind": "refit on train+val"}}
    result = differences_on_test(predictions, {"answer": "Rover"}, scores, bootstrap_samples=50, seed=0)
    assert (result["model"], result["unit"], result["majority_answer"]) == ("improved", "sol", "Rover")
    assert list(result["against"]) == ["majority class", "seed_blog"]  # a refit is not a seed model trained on train
    assert result["against"]["majority class"]["difference"] == pytest.approx(5 / 6 - 4 / 6)
    assert result["against"]["seed_blog"]["difference"] == pytest.approx(5 / 6 - 2 / 6)
    # paired and by sol: the same resamples as paired_difference given the sols
    assert result["against"]["seed_blog"] == paired_difference(
        np.array([0, 0, 0, 0, 1, 1]), np.array([0, 0, 0, 1, 1, 1]), np.array([0, 1, 1, 1, 1, 0]), skm.accuracy_score,
        n_boot=50, seed=0, clusters=np.array([1, 1, 2, 2, 3, 3]))
    surface = differences_on_test(predictions, {"answer": "Surface"}, scores, bootstrap_samples=50, seed=0)
    assert surface["against"]["majority class"]["difference"] == pytest.approx(5 / 6 - 2 / 6)
    assert differences_on_test(predictions, {"answer": "Rover"}, scores, bootstrap_samples=0) == {}
    predictions["seed_blog"] = rows([0] * 6, ids="abcdeg")
    with pytest.raises(ValueError, match="seed_blog and improved were scored on different test images"):
        differences_on_test(predictions, {"answer": "Rover"}, scores, bootstrap_samples=50)


# --- curves, coverage -----------------------------------------------------------------------------


def test_curves_are_scikit_learn_roc_and_pr_curves():
    result = curves(Y_TRUE, P_SURFACE)
    fpr, tpr, _ = skm.roc_curve(Y_TRUE, P_SURFACE)
    precision, recall, _ = skm.precision_recall_curve(Y_TRUE, P_SURFACE)
    np.testing.assert_allclose(result["fpr"], fpr)
    np.testing.assert_allclose(result["tpr"], tpr)
    np.testing.assert_allclose(result["precision"], precision)
    np.testing.assert_allclose(result["recall"], recall)
    assert result["roc_auc"] == pytest.approx(skm.auc(fpr, tpr))


# Confident answers right, hesitant ones (confidence 0.55-0.6) half wrong.
COV_TRUE = np.array([0, 0, 1, 1, 0, 1, 0, 1])
COV_P = np.array([0.02, 0.05, 0.97, 0.92, 0.45, 0.4, 0.6, 0.55])


def test_threshold_one_half_keeps_every_image():
    table = coverage_curve(COV_TRUE, COV_P)
    first = table.iloc[0]
    assert first["threshold"] == 0.5 and first["coverage"] == 1.0 and first["n_kept"] == 8
    assert first["accuracy"] == pytest.approx(skm.accuracy_score(COV_TRUE, COV_P >= 0.5))
    assert len(table) == 51 and table["threshold"].iloc[-1] == 1.0


def test_higher_thresholds_keep_fewer_images_and_are_more_accurate():
    table = coverage_curve(COV_TRUE, COV_P, thresholds=[0.5, 0.7, 0.96, 0.99])
    assert table["coverage"].tolist() == [1.0, 0.5, 0.25, 0.0]
    assert table["accuracy"].iloc[0] == 0.75 and table["accuracy"].iloc[1] == 1.0
    assert table["balanced_accuracy"].iloc[1] == 1.0
    assert np.isnan(table["accuracy"].iloc[3])  # nothing kept
    assert table["coverage"].is_monotonic_decreasing


def test_at_confidence_reports_coverage_and_accuracy_at_the_threshold():
    result = at_confidence(COV_TRUE, COV_P, 0.9)
    assert result == {"threshold": 0.9, "n_kept": 4, "coverage": 0.5, "accuracy": 1.0, "balanced_accuracy": 1.0}
    assert at_confidence(COV_TRUE, COV_P, 0.999)["accuracy"] is None
    # A confidence equal to a linspace threshold counts as kept despite floating-point noise.
    assert coverage_curve([1], [0.9])["coverage"].iloc[40] == 1.0


# --- breakdown, sol ranges, confident errors ------------------------------------------------------


@pytest.fixture
def predictions():
    return pd.DataFrame({
        "id": list("abcdefg"),
        "instrument": ["MAHLI", "MAHLI", "MAHLI", "Mastcam left", "Mastcam left", "Mastcam right", "MAHLI"],
        "sol": [5, 99, 100, 250, 1234, 342, 101],
        "label": [0, 0, 1, 1, 1, 0, 0],
        "p_surface": [0.1, 0.8, 0.7, 0.3, 0.9, 0.95, 0.4],
    }).assign(predicted=lambda f: (f["p_surface"] >= 0.5).astype(int))


def test_breakdown_counts_images_labels_and_errors_per_group(predictions):
    table = breakdown(predictions, "instrument")
    assert list(table.index) == ["MAHLI", "Mastcam left", "Mastcam right"] and table.index.name == "instrument"
    mahli = table.loc["MAHLI"]
    assert (mahli["n"], mahli["n_rover"], mahli["n_surface"], mahli["errors"]) == (4, 3, 1, 1)
    assert mahli["accuracy"] == pytest.approx(0.75)
    assert mahli["predicted_surface_share"] == pytest.approx(0.5)
    assert (mahli["false_surface"], mahli["false_rover"]) == (1, 0)
    assert table.loc["Mastcam left", "errors"] == 1 and table.loc["Mastcam left", "false_rover"] == 1
    assert table.loc["Mastcam right", "accuracy"] == 0.0
    assert table["n"].sum() == len(predictions) and table["errors"].sum() == 3


def test_errors_are_grouped_by_class_and_instrument_beside_the_images_trained_on(predictions):
    test = predictions.assign(msl_name=["wheel", "wheel", "ground", "ground", "ground", "wheel", "drill"])
    training = pd.DataFrame({"msl_name": ["wheel", "wheel", "ground", "ground", "ground"],
                             "instrument": ["MAHLI", "MAHLI", "MAHLI", "Mastcam left", "Mastcam right"]})
    table = errors_against_training(test, training)
    assert table.index.name == "group" and table["n"].sum() == len(test)
    assert table["errors"].tolist() == [1, 1, 1, 0, 0] and table.index[2] == "wheel · Mastcam right"  # most first, then bigger
    assert table.loc["wheel · MAHLI"].to_dict() == {"n": 2, "errors": 1, "accuracy": 0.5,
                                                    "share_of_errors": pytest.approx(1 / 3), "trained_on": 2}
    assert table.loc["wheel · Mastcam right", "trained_on"] == 0  # never seen in training
    assert table.loc["drill · MAHLI", "errors"] == 0 and table["share_of_errors"].sum() == pytest.approx(1)
    no_errors = errors_against_training(test.assign(predicted=test["label"]), training.head(0))
    assert (no_errors["share_of_errors"] == 0).all() and (no_errors["trained_on"] == 0).all()
    unnamed = errors_against_training(test.assign(instrument=None), training, by="instrument")
    assert list(unnamed.index) == ["unknown"] and unnamed.loc["unknown", "errors"] == 3  # a missing value is a group
    assert errors_against_training(test.head(0), training).empty


def test_rarely_trained_counts_the_evaluated_images_of_groups_training_barely_holds():
    def frames(groups):
        names, instruments = zip(*(group.split(" · ") for group in groups))
        return pd.DataFrame({"msl_name": names, "instrument": instruments})

    training = frames(["wheel · MAHLI"] * 3 + ["ground · Mastcam left"] * 2 + ["drill · MAHLI"])
    evaluated = frames(["wheel · MAHLI"] * 2 + ["ground · MAHLI"] * 4 + ["drill · MAHLI"] * 1
                       + ["wheel · Mastcam left"] * 3)
    coverage = rarely_trained(evaluated, training, fewer_than=2)
    # drill · MAHLI has 1 training image (< 2); ground · MAHLI and wheel · Mastcam left none; wheel · MAHLI 3
    assert coverage["groups"] == [{"group": "ground · MAHLI", "n": 4, "trained_on": 0},
                                  {"group": "wheel · Mastcam left", "n": 3, "trained_on": 0},
                                  {"group": "drill · MAHLI", "n": 1, "trained_on": 1}]  # most images first
    assert (coverage["n"], coverage["rare"], coverage["share"], coverage["fewer_than"]) == (10, 8, 0.8, 2)
    assert rarely_trained(evaluated, training, fewer_than=4)["rare"] == 10  # 3 wheel · MAHLI images are now few
    assert rarely_trained(evaluated, training.head(0))["rare"] == 10  # no training at all: every group is rare
    assert rarely_trained(evaluated, evaluated, by="instrument", fewer_than=1)["groups"] == []
    nothing = rarely_trained(evaluated.head(0), training)
    assert (nothing["n"], nothing["rare"], nothing["share"]) == (0, 0, None)  # JSON has no NaN
    assert json.loads(json.dumps(coverage)) == coverage  # plain values for training_coverage.json


def test_the_accuracy_needed_on_rarely_trained_images_follows_from_the_errors_a_target_allows():
    # 98% of 1000 images allows 20 errors; if 400 images are rare, at least 380 of them must be right
    assert accuracy_needed_on_rare(0.98, 0.4) == pytest.approx(0.95)
    assert accuracy_needed_on_rare(0.98, 1.0) == pytest.approx(0.98)  # everything rare: the target itself
    assert accuracy_needed_on_rare(0.98, 0.01) == 0.0  # fewer rare images than allowed errors
    assert accuracy_needed_on_rare(0.98, 0.0) == accuracy_needed_on_rare(0.98, None) == 0.0


def test_a_runs_accuracy_is_split_between_rarely_trained_groups_and_the_rest(predictions):
    test = predictions.assign(msl_name=["wheel", "wheel", "ground", "ground", "ground", "wheel", "drill"])
    training = pd.DataFrame({"msl_name": ["wheel", "wheel", "ground"], "instrument": ["MAHLI", "MAHLI", "MAHLI"]})
    table = errors_against_training(test, training)  # only wheel · MAHLI (2) and ground · MAHLI (1) were trained on
    split = accuracy_by_training_coverage(table, fewer_than=2)
    assert split["fewer_than"] == 2
    assert split["rest"] == {"n": 2, "accuracy": 0.5}  # wheel · MAHLI: one of its two images wrong
    assert split["rare"]["n"] == 5 and split["rare"]["accuracy"] == pytest.approx(3 / 5)
    everything_rare = accuracy_by_training_coverage(table, fewer_than=100)
    assert everything_rare["rest"] == {"n": 0, "accuracy": None}
    assert everything_rare["rare"]["accuracy"] == pytest.approx(4 / 7)


def test_metrics_json_keeps_the_largest_error_groups_that_have_errors_as_plain_rounded_values(predictions):
    from marsrover.study import largest_error_groups

    test = predictions.assign(msl_name=["wheel", "wheel", "ground", "ground", "ground", "wheel", "drill"])
    table = errors_against_training(test, test.head(2))
    kept = largest_error_groups(table, kept=5)
    assert [group["group"] for group in kept] == list(table.index[:3])  # the two error-free groups are left out
    assert kept[2] == {"group": "wheel · Mastcam right", "n": 1, "errors": 1, "accuracy": 0.0,
                       "share_of_errors": 0.3333, "trained_on": 0}
    assert {group["group"]: group["trained_on"] for group in kept}["wheel · MAHLI"] == 2
    assert json.loads(json.dumps(kept)) == kept  # plain ints, floats and strings
    assert largest_error_groups(table, kept=1) == kept[:1]
    assert largest_error_groups(errors_against_training(test.assign(predicted=test["label"]), test)) == []


def test_one_runs_worst_groups_are_shown_with_every_runs_accuracy_on_them(predictions):
    from marsrover.study import error_groups_across_runs

    test = predictions.assign(msl_name=["wheel", "wheel", "ground", "ground", "ground", "wheel", "drill"])
    index = pd.concat([test.assign(split="test"), test.head(3).assign(split="train"), test.head(1).assign(split="val")])
    perfect = test.assign(predicted=test["label"])
    tables = {"a": errors_against_training(test, test), "b": errors_against_training(perfect, test)}
    table = error_groups_across_runs(tables, "a", index, kept=5)
    assert list(table.index) == list(tables["a"].index[:3])  # a's groups with errors, most first
    assert list(table.columns) == ["train images", "val images", "test images", "a accuracy", "b accuracy"]
    assert table.loc["wheel · MAHLI"].tolist() == [2, 1, 2, 0.5, 1.0]
    assert table.loc["wheel · Mastcam right"].tolist() == [0, 0, 1, 0.0, 1.0]  # no train or val image: zeros
    assert error_groups_across_runs(tables, "a", index, kept=1).index.tolist() == table.index[:1].tolist()
    assert error_groups_across_runs(tables, "b", index).empty  # a perfect run has no groups to show


def test_validation_groups_show_per_group_accuracy_of_train_only_runs_beside_balanced_accuracy(predictions):
    from marsrover.study import StudyScores, validation_groups_table

    val = predictions.assign(label_name=predictions["label"].map({0: "Rover", 1: "Surface"}))
    always_rover = val.assign(predicted=0)
    metrics = {"headline": "a_refit", "models": {
        "a": {"kind": "train only", "val": {"balanced_accuracy": 0.7}},
        "a_refit": {"kind": "refit on train+val", "val": {"balanced_accuracy": 1.0}},
        "b": {"kind": "train only", "val": {"balanced_accuracy": 0.5}}}}
    scores = StudyScores(metrics, {"a": {"val": val}, "a_refit": {"val": val}, "b": {"val": always_rover}}, {}, {})
    table = validation_groups_table(scores)
    assert list(table.columns) == ["n", "a", "b"]  # the refit trained on validation: left out
    assert table.loc["MAHLI · Rover", ["n", "a", "b"]].tolist() == [3, 2 / 3, 1.0]
    assert table.loc["Mastcam left · Surface", ["n", "a", "b"]].tolist() == [2, 0.5, 0.0]
    assert table.loc["mean of the groups", "b"] == pytest.approx((1 + 0 + 0 + 1) / 4)
    assert table.loc["worst group", "a"] == 0.0  # Mastcam right · Rover: its one image called Surface
    assert table.loc["balanced accuracy (selection metric)"].tolist()[1:] == [0.7, 0.5]
    assert table["n"].dtype == "Int64" and table["n"].isna().sum() == 3  # counts stay whole; summaries have none


def test_the_ablations_are_read_by_validation_group_beside_the_studys_improved_run(predictions, tmp_path, capsys):
    from marsrover.study import StudyScores, ablation_groups_table, instrument_label_groups

    val = predictions.assign(label_name=predictions["label"].map({0: "Rover", 1: "Surface"}))
    scored = {"balanced_accuracy": 0.7, "by_instrument_and_label": instrument_label_groups(val)}  # as score_study
    scores = StudyScores({"models": {"improved": {"val": scored}}}, {"improved": {"val": val}}, {}, {})
    assert ablation_groups_table(scores, tmp_path).empty  # no ablation records
    folder = tmp_path / "ablations"
    folder.mkdir()
    record = {"history": {"val_balanced_accuracy": [0.5]}, "question": "?", "config": {"seeds": {"seed": 42}}}
    (folder / "flip_only.json").write_text(json.dumps(record))
    assert ablation_groups_table(scores, tmp_path).empty  # written before groups were kept
    assert "rerun notebook 05" in capsys.readouterr().out  # an empty table says why
    (folder / "flip_only.json").write_text(json.dumps(
        {**record, "val_groups": [{"group": "MAHLI · Rover", "n": 3, "accuracy": 1.0}]}))
    table = ablation_groups_table(scores, tmp_path)
    assert list(table.index) == ["improved (as chosen)", "flip_only"]
    # improved's own groups from its validation predictions: MAHLI · Rover 2 of 3 right
    assert table.loc["improved (as chosen)", "MAHLI · Rover"] == pytest.approx(2 / 3)
    assert table.loc["improved (as chosen)", "worst group's name"] == "Mastcam right · Rover"
    assert table.loc["improved (as chosen)", "best val balanced accuracy"] == 0.7
    assert "rerun notebook 05" not in capsys.readouterr().out
    assert ablation_groups_table(StudyScores({"models": {}}, {}, {}, {}), tmp_path).empty  # no improved run
    assert "No improved run" in capsys.readouterr().out  # an empty table says why


def test_an_ensemble_averages_p_surface_over_runs_on_the_same_images(predictions):
    other = predictions.assign(p_surface=[0.3, 0.0, 0.5, 0.9, 0.7, 0.05, 0.4])
    averaged = average_predictions([predictions, other])
    np.testing.assert_allclose(averaged["p_surface"], [0.2, 0.4, 0.6, 0.6, 0.8, 0.5, 0.4])
    assert averaged["predicted"].tolist() == [0, 0, 1, 1, 1, 1, 0]  # 0.5 counts as Surface, as for a run
    assert averaged["instrument"].tolist() == predictions["instrument"].tolist()
    assert predictions["p_surface"].iloc[0] == 0.1  # the members' rows are left as they were
    with pytest.raises(ValueError, match="same images in the same order"):
        average_predictions([predictions, other.iloc[::-1]])
    with pytest.raises(ValueError, match="no predictions"):
        average_predictions([])


def test_every_average_of_train_only_runs_is_scored_and_ranked_on_validation_beside_the_runs(predictions):
    from marsrover.study import StudyScores, ensembles_table, score_ensembles

    val = predictions.assign(label_name=predictions["label"].map({0: "Rover", 1: "Surface"}))
    truth = val["label"].to_numpy()
    # a and b each get a different image wrong with confidence 0.6; their average gets both right
    a = val.assign(p_surface=np.where(truth == 1, 0.9, 0.1))
    b = a.copy()
    a.loc[0, "p_surface"], b.loc[2, "p_surface"] = 0.6, 0.4
    c = val.assign(p_surface=0.9)  # always Surface
    runs = {name: {"val": frame.assign(predicted=(frame["p_surface"] >= 0.5).astype(int)),
                   "test": frame.assign(predicted=(frame["p_surface"] >= 0.5).astype(int))}
            for name, frame in {"a": a, "b": b, "c": c}.items()}
    sizes = {"a": 64, "b": 64, "c": 64}
    ensembles, averaged = score_ensembles(["b", "a", "c"], runs, sizes, {}, bootstrap_samples=20, seed=0)
    assert list(ensembles) == ["a+b", "a+c", "b+c", "a+b+c"]
    assert ensembles["a+b"]["members"] == ["a", "b"] and ensembles["a+b"]["kind"] == "average of train-only runs"
    assert ensembles["a+b"]["val"]["accuracy"] == 1.0 and ensembles["a+b"]["test"]["n"] == len(val)
    assert set(averaged["a+b+c"]) == {"val", "test"}
    assert list(score_ensembles(["a", "b"], runs, sizes, {}, bootstrap_samples=20, skip={"a+b"})[0]) == []  # saved

    # A smaller member takes the larger one's decode resized: its P(Surface) at that size, not on its own decode.
    resized = {("a", 128): {split: np.where(truth == 1, 0.9, 0.1) for split in ("val", "test")}}
    mixed, mixed_rows = score_ensembles(["a", "c"], runs, {"a": 64, "c": 128}, resized, bootstrap_samples=0)
    np.testing.assert_allclose(mixed_rows["a+c"]["val"]["p_surface"], (resized["a", 128]["val"] + 0.9) / 2)
    assert mixed["a+c"]["image_size"] == 128 and runs["a"]["val"]["p_surface"].iloc[0] == 0.6  # rows left alone

    models = {name: {"kind": "train only", **{split: binary_metrics(frame[split]["label"], frame[split]["p_surface"],
                                                                       n_boot=20) for split in ("val", "test")}}
              for name, frame in runs.items()}
    models["a_refit"] = {**models["a"], "kind": "refit on train+val"}
    scores = StudyScores({"headline": "a_refit", "models": models, "ensembles": ensembles},
                         {**runs, "a_refit": runs["a"]}, {}, {}, averaged)
    table = ensembles_table(scores)
    assert "a_refit" not in table.index  # it trained on validation, which ranks the candidates
    assert table.index[0] == "a+b" and table["val balanced accuracy"].is_monotonic_decreasing
    assert table.loc["a", "models averaged"] == 1 and table.loc["a+b+c", "models averaged"] == 3
    assert table.loc["c", "val worst group"] == 0.0  # every Rover group called Surface
    assert table.loc["a+b", ["val mean of the groups", "test accuracy"]].tolist() == [1.0, 1.0]
    # the notebook's words come from the same table: only a+b, whose models err apart, beats its models
    from marsrover.study import ensemble_findings

    words = ensemble_findings(scores)
    assert words.startswith("Of the 4 averages, 1 scored a higher validation balanced accuracy than each of their "
                            "models, and 1 a higher test accuracy and test balanced accuracy")
    assert "Validation put the average `a+b` first (1.000, against 0.875 for `a` alone)" in words
    assert "By the study's rule the headline is `a_refit` (refit on train+val)." in words
    single = StudyScores({"headline": "a", "models": {"a": models["a"]}, "ensembles": {}}, {"a": runs["a"]}, {}, {}, {})
    assert "Of the 0 averages" in ensemble_findings(single) and "a single model first, `a`" in ensemble_findings(single)
    # a tie (common on tiny data) is said as one, not as a win over every average
    tie = StudyScores({"headline": "a", "models": {"a": models["a"], "a2": models["a"]}, "ensembles": {}},
                      {"a": runs["a"], "a2": runs["a"]}, {}, {}, {})
    assert "a single model first, `a` (0.875, tied with 1 other (`a2`); ties go to the first name A-Z)." in \
        ensemble_findings(tie)
    # the table ranks ties as the headline's rule does, a last bit of floating point aside
    near = StudyScores({"headline": "b", "models": {"b": models["a"], "a+c": {**models["a"], "members": ["a", "c"], "val": {
        **models["a"]["val"], "balanced_accuracy": models["a"]["val"]["balanced_accuracy"] + 1e-12}}}, "ensembles": {}},
        {"b": runs["a"], "a+c": runs["a"]}, {}, {}, {})
    assert ensembles_table(near).index.tolist() == ["a+c", "b"]


def test_a_tie_on_validation_names_the_runs_it_ties_with_and_the_rule_that_broke_it():
    from marsrover.study import best_on_validation, tie_words, tied_with

    scores = {"seed_blog": 0.5, "improved": 0.5, "quick_cnn": 0.5000001, "a": 0.4, "b": 0.5, "c": 0.5}
    assert best_on_validation(scores) == "b"
    assert tied_with(scores, "b") == ["c", "improved", "quick_cnn", "seed_blog"]  # equal to 6 places, as chosen
    assert tie_words(tied_with(scores, "b")) == ", tied with 4 others (c, improved, quick_cnn, ...); ties go to the " \
                                                "first name A-Z"
    assert tie_words(["x"], quote="`") == ", tied with 1 other (`x`); ties go to the first name A-Z"
    assert tie_words(tied_with(scores, "a")) == ""



def test_sol_ranges_label_blocks_of_sols(predictions):
    ranges = sol_ranges(predictions["sol"])
    assert ranges.tolist() == ["0000-0099", "0000-0099", "0100-0199", "0200-0299", "1200-1299",
                               "0300-0399", "0100-0199"]
    assert sol_ranges(pd.Series([342]), width=50).tolist() == ["0300-0349"]
    table = breakdown(predictions.assign(sol_range=ranges), "sol_range")
    assert table.loc["0100-0199", "n"] == 2 and list(table.index) == sorted(table.index)


def test_most_confident_errors_come_first(predictions):
    errors = most_confident_errors(predictions, 2)
    assert errors["id"].tolist() == ["f", "b"]  # Rover at 95% and 80% Surface
    np.testing.assert_allclose(errors["confidence"], [0.95, 0.8])
    assert len(most_confident_errors(predictions, 10)) == 3
    assert most_confident_errors(predictions.drop(columns="predicted"), 1)["id"].tolist() == ["f"]


def test_examples_to_explain_are_half_random_correct_predictions_then_the_most_confident_errors(predictions):
    chosen = correct_and_wrong(predictions, 4, seed=0)
    assert len(chosen) == 4 and set(chosen["id"][:2]) <= {"a", "c", "e", "g"} and chosen["id"][2:].tolist() == ["f", "b"]
    assert correct_and_wrong(predictions, 4, seed=0)["id"].tolist() == chosen["id"].tolist()  # seeded
    assert len(correct_and_wrong(predictions, 20, seed=0)) == 4 + 3  # every correct one, every error
    assert correct_and_wrong(predictions[predictions["label"] != predictions["predicted"]], 4, seed=0)["id"].tolist() \
        == ["f", "b"]  # no correct prediction to draw


def test_a_gallery_of_errors_can_keep_one_per_sequence_and_count_the_errors_it_stands_for(predictions):
    sequences = pd.Series(["s1", "k", "s3", "d", "s5", "k", "s7"], index=predictions.index)  # b and f: one scene
    errors = most_confident_errors(predictions, 10, one_per=sequences)
    assert errors["id"].tolist() == ["f", "d"] and errors["errors_like_it"].tolist() == [2, 1]
    assert most_confident_errors(predictions, 1, one_per=sequences)["id"].tolist() == ["f"]


def test_examples_to_explain_can_keep_one_per_sequence_on_either_side(predictions):
    sequences = pd.Series(["ac", "k", "ac", "d", "eg", "k", "eg"], index=predictions.index)
    for seed in range(6):
        chosen = correct_and_wrong(predictions, 8, seed=seed, one_per=sequences)
        assert sequences[chosen.index].is_unique and len(chosen) == 2 + 2
        assert chosen["id"][2:].tolist() == ["f", "d"]


def _examples_pool(n_sequences=12, per_sequence=4):
    """Test predictions in sequences of near-copies that share a label: in every third sequence (a focus stack
    with one bad frame) the first frame alone is answered wrong, the rest right."""
    rows = []
    for sequence in range(n_sequences):
        label = sequence % 2
        for frame in range(per_sequence):
            wrong = sequence % 3 == 0 and frame == 0
            rows.append({"id": f"{sequence:04d}MH{sequence:06d}{frame:03d}", "label": label,
                         "predicted": 1 - label if wrong else label, "p_surface": 0.5})
    return pd.DataFrame(rows, index=range(100, 100 + len(rows)))


def test_example_figure_mixes_right_and_wrong_answers_for_both_labels():
    from marsrover.study import pick_examples

    pool = _examples_pool()
    examples = pick_examples(pool, 8, seed=3)
    assert len(examples) == 8 and examples.index.is_unique
    wrong = examples["predicted"] != examples["label"]
    assert wrong.sum() == 2
    assert set(examples.loc[~wrong, "label"]) == {0, 1}


def test_example_figure_can_show_each_observation_sequence_once_at_most():
    from marsrover.dataset import observation_sequences
    from marsrover.study import pick_examples

    pool = _examples_pool()
    sequences = observation_sequences(pool["id"])
    assert sequences.nunique() == 12
    for seed in range(5):
        examples = pick_examples(pool, 8, seed=seed, one_per=sequences)
        assert len(examples) == 8 and sequences.loc[examples.index].is_unique
        assert (examples["predicted"] != examples["label"]).sum() == 2
    # asked for more than there are sequences, it stops at one image of each
    assert len(pick_examples(pool, 20, seed=0, one_per=sequences)) == 12


# --- figures --------------------------------------------------------------------------------------


def test_roc_pr_and_coverage_figures_have_two_panels():
    fig = plots.roc_pr_curves({"a": curves(Y_TRUE, P_SURFACE), "b": curves(COV_TRUE, COV_P)})
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
    plt.close(fig)
    fig = plots.coverage_plot({"a": coverage_curve(Y_TRUE, P_SURFACE), "b": coverage_curve(COV_TRUE, COV_P)})
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2
    plt.close(fig)


def test_breakdown_bars_is_one_panel_sorted_by_accuracy(predictions):
    fig = plots.breakdown_bars(breakdown(predictions, "instrument"), title="by instrument")
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 1
    shown = [label.get_text() for label in fig.axes[0].get_yticklabels()]
    assert shown == ["MAHLI", "Mastcam left", "Mastcam right"]  # accuracy 0.75, 0.5, 0
    plt.close(fig)


def test_the_targets_table_reports_the_improved_runs_against_the_issue_targets():
    from marsrover.study import targets_table

    def run(kind, accuracy, balanced):
        return {"kind": kind, "test": {"accuracy": accuracy, "balanced_accuracy": balanced}}

    metrics = {"models": {"improved": run("train only", 0.95, 0.96), "improved_refit": run("refit", 0.985, 0.97),
                          "seed_blog": run("train only", 0.99, 0.99), "improved-flip_only": run("x", 1, 1)}}
    table = targets_table(metrics)
    assert list(table.index) == ["improved", "improved_refit"]
    assert not table.loc["improved", "accuracy reached"] and table.loc["improved_refit", "accuracy reached"]
    assert table.loc["improved_refit", "balanced accuracy reached"]  # 0.97 meets a target of 0.97
    assert targets_table({"models": {"seed_blog": run("train only", 1, 1)}}).empty
    average = {**run("refit", 0.99, 0.98), "members": ["improved_refit", "seed_blog_refit"]}
    others = {**run("refit", 0.99, 0.98), "members": ["seed_blog_refit", "seed_notebook_refit"]}
    table = targets_table({"models": {**metrics["models"], "improved+seed_blog_refit": average,
                                      "seed_blog+seed_notebook_refit": others}})
    assert list(table.index) == ["improved", "improved_refit", "improved+seed_blog_refit"]  # averages with improved


def test_the_comparison_table_sets_the_claims_the_report_carries_above_every_run_and_the_majority_answer():
    from marsrover.study import comparison_table

    run = {"kind": "train only", "val": {"accuracy": 0.9}, "test": {"accuracy": 0.8, "balanced_accuracy": 0.7}}
    metrics = {"models": {"quick_cnn": run}, "baselines": {"majority class": {"test": {"answer": "Rover", "accuracy": 0.75}}},
               "seed_claim": {"val": {"accuracy": 0.98}, "test": {"accuracy": 0.97}},
               "quick_cnn_claim": {"test": {"accuracy": 0.95, "balanced_accuracy": 0.93}}}
    table = comparison_table(metrics)
    assert list(table.index) == ["seed claim (blog), random 80/20 split", "quick CNN claim (brief), train only",
                                 "quick_cnn (train only)", "always 'Rover' (test majority)"]
    assert table.iloc[1]["test balanced accuracy"] == 0.93 and pd.isna(table.iloc[1]["val accuracy"])
    assert pd.isna(table.iloc[0]["test balanced accuracy"])  # the blog gave no balanced accuracy
    older = {key: value for key, value in metrics.items() if key != "quick_cnn_claim"}  # a report from before the row
    assert len(comparison_table(older)) == 3


def test_the_best_threshold_maximises_balanced_accuracy_and_ties_go_to_the_one_nearest_one_half():
    from marsrover.evaluation import balanced_accuracy_at, best_threshold

    labels, p_surface = np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.7, 0.9])
    assert balanced_accuracy_at(labels, p_surface) == 0.75  # 0.6 is called Surface at 0.5
    assert best_threshold(labels, p_surface) == 0.61  # 0.61 to 0.70 all separate them: the nearest to 0.5
    assert best_threshold(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 0.5  # 0.5 itself is as good as any
    assert np.isnan(balanced_accuracy_at(labels, p_surface, float("nan")))  # no threshold chosen: no score
    with pytest.raises(ValueError, match="both labels"):
        best_threshold(np.array([1, 1]), np.array([0.2, 0.9]))


def test_the_threshold_check_chooses_on_validation_and_across_the_halves_of_its_sols(predictions, capsys):
    from marsrover.study import StudyScores, threshold_table

    # earlier sols (10, 11) and later ones (20, 21): at 0.5 the later half calls one Rover image Surface
    val = pd.DataFrame({"split": "val", "sol": [10, 10, 11, 11, 20, 20, 21, 21], "label": [0, 1, 0, 1, 0, 1, 0, 1],
                        "p_surface": [0.1, 0.9, 0.2, 0.8, 0.6, 0.9, 0.1, 0.7]})
    table = threshold_table(StudyScores({}, {"improved": {"val": val}}, {}, {}), "improved")
    assert table[["chosen on", "scored on", "images scored"]].values.tolist() == [
        ["all of validation", "all of validation", 8], ["earlier sols", "later sols", 4],
        ["later sols", "earlier sols", 4]]
    assert table["threshold"].tolist() == [0.61, 0.5, 0.61]
    assert table["balanced accuracy at 0.5"].tolist() == [0.875, 0.75, 1.0]
    assert table["balanced accuracy at the threshold"].tolist() == [1.0, 0.75, 1.0]
    assert threshold_table(StudyScores({}, {}, {}, {}), "improved").empty
    assert "No improved run" in capsys.readouterr().out



def test_each_kind_of_run_is_compared_with_the_images_it_was_fitted_on():
    from marsrover.study import training_rows

    index = pd.DataFrame({"split": ["train", "train", "val", "test"], "id": ["a", "b", "c", "d"]})
    assert training_rows(index, "improved")["id"].tolist() == ["a", "b"]  # train only
    assert training_rows(index, "improved_refit")["id"].tolist() == ["a", "b", "c"]  # train + validation
    assert training_rows(index, "quick_cnn+seed_blog_refit")["id"].tolist() == ["a", "b", "c"]  # an average of refits
    redrawn = index.assign(split=["train", "val", "train", "test"])  # the random 80/20 split's own index
    assert training_rows(redrawn, "seed_notebook_random_split")["id"].tolist() == ["a", "c"]
