"""Batch-norm statistics: recomputing them, and the side check that compares them with Keras' running ones."""

import json

import keras
import numpy as np
import pandas as pd
import pytest

from marsrover import config, diagnostics, reporting
from marsrover.training import batch_norm_layers, recalibrate_batch_norm


def _two_norm_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3)(inputs))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(5, 3)(keras.layers.Activation("relu")(x)))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs)


def _inputs_of(model, layer, images):
    return np.asarray(keras.Model(model.input, layer.input)(images, training=False), dtype=np.float64)


def test_recomputed_statistics_are_each_layers_input_statistics_given_the_layers_before_it():
    model = _two_norm_model()
    images = np.random.default_rng(1).uniform(0, 5, (10, 8, 8, 3)).astype("float32")
    assert recalibrate_batch_norm(model, images, batch_size=3) == 2
    for layer in batch_norm_layers(model):  # the second layer's input depends on the first's new statistics
        values = _inputs_of(model, layer, images).reshape(-1, layer.moving_mean.shape[0])
        np.testing.assert_allclose(layer.moving_mean.numpy(), values.mean(0), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(layer.moving_variance.numpy(), values.var(0), rtol=1e-3, atol=1e-4)


def test_weights_count_images_so_a_zero_weight_leaves_an_image_out():
    model, alone = _two_norm_model(), _two_norm_model()
    images = np.random.default_rng(2).uniform(0, 5, (6, 8, 8, 3)).astype("float32")
    images[3:] *= 4  # a different population the zero weights must exclude
    recalibrate_batch_norm(model, images, np.array([1, 1, 1, 0, 0, 0]))
    recalibrate_batch_norm(alone, images[:3])
    for weighted, unweighted in zip(batch_norm_layers(model), batch_norm_layers(alone)):
        np.testing.assert_allclose(weighted.moving_mean.numpy(), unweighted.moving_mean.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(weighted.moving_variance.numpy(), unweighted.moving_variance.numpy(),
                                   rtol=1e-3, atol=1e-5)


def test_batch_norm_inside_a_nested_model_is_named_as_such_and_left_alone():
    from marsrover.training import batch_norm_description

    inner = _two_norm_model()
    inputs = keras.Input((8, 8, 3))
    outer = keras.Model(inputs, inner(inputs))
    assert batch_norm_layers(outer) == [] and batch_norm_description(outer).startswith("a nested model's own")
    assert recalibrate_batch_norm(outer, np.zeros((2, 8, 8, 3), "float32")) == 0
    assert batch_norm_description(inner) == "running (Keras' moving average)"


def test_recalibration_refuses_weights_that_do_not_match_the_images():
    images = np.zeros((4, 8, 8, 3), "float32")
    with pytest.raises(ValueError, match="one per image"):
        recalibrate_batch_norm(_two_norm_model(), images, np.ones(3))
    with pytest.raises(ValueError, match="positive weights"):
        recalibrate_batch_norm(_two_norm_model(), images, np.zeros(4))


def test_scoring_with_recomputed_statistics_puts_the_running_ones_back():
    model = _two_norm_model()
    before = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
              for layer in batch_norm_layers(model)]
    rng = np.random.default_rng(3)
    images = rng.uniform(0, 5, (6, 8, 8, 3)).astype("float32")
    scores = diagnostics.validation_scores_by_statistics(model, (images, np.array([0, 1] * 3)), images, np.ones(6))
    assert set(scores) == set(diagnostics.STATISTICS) and all(0 <= v <= 1 for v in scores.values())
    for layer, (mean, variance) in zip(batch_norm_layers(model), before):
        np.testing.assert_array_equal(layer.moving_mean.numpy(), mean)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), variance)


def test_a_trajectory_scores_every_epoch_and_its_running_column_repeats_the_runs_own_history(tiny_paths):
    from marsrover import study

    paths, index = study.load_index(tiny_paths.root)
    table, history = diagnostics.trajectory_check("quick_cnn", paths, index, image_size=32, epochs=2,
                                                  batch_size=2, sample_size=3)
    assert list(table.index) == [1, 2] and list(table.columns) == list(diagnostics.STATISTICS)
    # The probe scores the weights Keras validated, with the running statistics...
    np.testing.assert_allclose(table["running"], history, atol=1e-6)
    # ...and puts them back: the same run without it measures the same history.
    from marsrover.training import train

    images, labels = study.split_arrays(paths, index, "train", 32, progress=False)
    unprobed = train("quick_cnn", (images, labels), study.split_arrays(paths, index, "val", 32, progress=False),
                     image_size=32, epochs=2, batch_size=2, verbose=0)
    np.testing.assert_allclose(unprobed.history["val_balanced_accuracy"], history, atol=1e-6)
    summary = diagnostics.summarise_trajectory(table, last=2)
    assert summary["running"]["best"] == round(max(history), 3)



def test_a_forward_trajectory_is_the_run_that_sets_the_refits_length(tiny_paths):
    from marsrover import study
    from marsrover.training import train

    paths, index = study.load_index(tiny_paths.root)
    table, history = diagnostics.trajectory_check("quick_cnn", paths, index, image_size=32, epochs=2,
                                                  batch_size=2, sample_size=3, forward=True)
    np.testing.assert_allclose(table["running"], history, atol=1e-6)
    # fitted on train + validation's earlier sols, scored on its later ones, as study.refit_epochs trains it
    forward = study.forward_validation_index(index)
    *fit_data, groups = study.fit_arrays(paths, forward, ["train", "val_early"], 32, progress=False)
    assert len(fit_data[0]) == 5  # 4 train images and validation's first sol
    run = train("quick_cnn", tuple(fit_data), study.split_arrays(paths, forward, "val", 32, progress=False),
                image_size=32, epochs=2, batch_size=2, train_groups=groups, verbose=0)
    np.testing.assert_allclose(run.history["val_balanced_accuracy"], history, atol=1e-6)


def test_a_forward_trajectory_needs_validation_sols_to_cut(tiny_paths):
    from marsrover import study

    paths, index = study.load_index(tiny_paths.root)
    one_sol = index[~((index["split"] == "val") & (index["sol"] == index.loc[index["split"] == "val", "sol"].max()))]
    with pytest.raises(ValueError, match="too few sols"):
        diagnostics.trajectory_check("quick_cnn", paths, one_sol, image_size=32, epochs=1, forward=True)

def test_the_side_check_scores_a_runs_saved_models_and_writes_its_json(tiny_paths, tmp_path):
    from marsrover import study

    paths, index = study.load_index(tiny_paths.root)
    run_dir = tmp_path / "reports" / "smoke"
    common = dict(batch_size=2, seed=42, jit_compile=False, weights=None, size=32, epochs=1)
    study._fit_and_save("quick_cnn", "quick_cnn", paths, index, run_dir, fit_splits=["train"], val_split="val",
                        **common)
    study._fit_and_save("quick_cnn", "quick_cnn_refit", paths, index, run_dir, fit_splits=["train", "val"],
                        val_split=None, **common)
    study._fit_and_save("seed_notebook", "seed_notebook", paths, index, run_dir, fit_splits=["train"],
                        val_split="val", **common)
    study._fit_and_save("quick_cnn", "quick_cnn_recomputed_refit", paths, index, run_dir,
                        fit_splits=["train", "val"], val_split=None, recompute_batch_norm=True, **common)
    (run_dir / "metrics.json").write_text(json.dumps({"profile": "smoke", "commit": "abc123"}))
    out = tmp_path / "side_checks" / "batch_norm.json"
    keras.mixed_precision.set_global_policy("mixed_bfloat16")  # whatever the caller had, it gets back
    try:
        result = diagnostics.batch_norm_side_check(run_dir, data_dir=tiny_paths.root, out=out, image_size=32)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # The seed model has no batch normalisation; the refit says it was fitted on validation too.
    assert set(result["saved_models"]) == {"quick_cnn", "quick_cnn_refit", "quick_cnn_recomputed_refit"}
    assert result["saved_models"]["quick_cnn_refit"]["fit on"] == "train+val"
    # Each row names the statistics its model was saved with: the column "running" scores with those.
    assert result["saved_models"]["quick_cnn_refit"]["saved statistics"].startswith("running")
    assert result["saved_models"]["quick_cnn_recomputed_refit"]["saved statistics"].startswith("recomputed")
    assert json.loads(out.read_text())["environment"]["commit"] == result["environment"]["commit"]
    assert result["run_commit"] == "abc123"  # the models scored come from that run, which the JSON names


def test_the_saved_models_check_says_where_a_missing_model_comes_from(tiny_paths, tmp_path):
    from marsrover import study

    (tmp_path / "run" / "runs").mkdir(parents=True)
    (tmp_path / "run" / "runs" / "improved.json").write_text(json.dumps({"config": {"image_size": 32}}))
    paths, index = study.load_index(tiny_paths.root)
    with pytest.raises(FileNotFoundError, match="notebook 05"):
        diagnostics.saved_models_check(tmp_path / "run", paths, index)


@pytest.mark.parametrize("model, statistics", [
    ("improved", "recomputed over the training images, weighted by instrument x label group"),
    ("quick_cnn", "recomputed over the training images, weighted by instrument x label group"),  # whatever its loss
])
def test_a_run_asked_to_recompute_its_statistics_ends_with_those_of_its_images_weighted_by_group(
        tiny_paths, model, statistics):
    from marsrover import study
    from marsrover.training import instrument_balance_weights, train

    paths, index = study.load_index(tiny_paths.root)
    images, labels = study.split_arrays(paths, index, "train", 32, progress=False)
    groups = np.array(["a", "a", "a", "b"])  # uneven, so group weights differ from counting each image once
    result = train(model, (images, labels), image_size=32, epochs=1, batch_size=2, train_groups=groups,
                   recompute_batch_norm=True, verbose=0)
    assert result.config["batch_norm_statistics"] == statistics and result.config["batch_norm_seconds"] >= 0
    kept = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
            for layer in batch_norm_layers(result.model)]
    recalibrate_batch_norm(result.model, images, instrument_balance_weights(groups))
    for layer, (mean, variance) in zip(batch_norm_layers(result.model), kept):  # recomputing again changes nothing
        np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.moving_variance.numpy(), variance, rtol=1e-5, atol=1e-6)
    recalibrate_batch_norm(result.model, images)  # counting each image once gives other statistics
    assert not np.allclose(batch_norm_layers(result.model)[0].moving_mean.numpy(), kept[0][0], rtol=1e-4, atol=1e-5)


def test_a_model_without_batch_norm_says_so_whatever_it_was_asked(tiny_paths):
    from marsrover import study
    from marsrover.training import train

    paths, index = study.load_index(tiny_paths.root)
    data = study.split_arrays(paths, index, "train", 32, progress=False)
    for recompute in (False, True):
        result = train("seed_notebook", data, image_size=32, epochs=1, batch_size=2, verbose=0,
                       recompute_batch_norm=recompute)
        assert result.config["batch_norm_statistics"] == "none (no batch normalisation)"


def test_without_the_option_a_run_keeps_keras_running_statistics(tiny_paths):
    from marsrover import study
    from marsrover.training import train

    paths, index = study.load_index(tiny_paths.root)
    data = study.split_arrays(paths, index, "train", 32, progress=False)
    result = train("quick_cnn", data, image_size=32, epochs=1, batch_size=2, verbose=0)
    assert result.config["batch_norm_statistics"] == "running (Keras' moving average)"
    result = train("quick_cnn", data, image_size=32, epochs=1, batch_size=2, verbose=0, recompute_batch_norm=True)
    assert result.config["batch_norm_statistics"] == "recomputed over the training images"  # no groups given


def test_only_refits_recompute_their_statistics_and_every_profile_asks_for_it(tmp_path, monkeypatch):
    from marsrover import profiles, study

    calls = {}

    def fake_fit_and_save(name, run_name, *args, recompute_batch_norm=False, **kwargs):
        calls[run_name] = recompute_batch_norm
        return {"config": {"image_size": 32, "epochs": 1, "kept_weights": "epoch 1 (last)"}, "train_seconds": 1.0}

    monkeypatch.setattr(study, "_fit_and_save", fake_fit_and_save)
    study.train_models(["quick_cnn"], None, None, tmp_path, image_size=32, epochs=1, batch_size=2, seed=42,
                       refit=["quick_cnn"], refit_recomputes_batch_norm=True)
    assert calls == {"quick_cnn": False, "quick_cnn_refit": True}
    # the committed full report is trained with it, and CI's smoke run exercises it end to end
    for name in profiles.PROFILES:
        assert profiles.get_profile(name)["refit_recomputes_batch_norm"] is True, name


@pytest.mark.parametrize("arguments, written", [
    ([], "batch_norm.json"),
    (["--trajectory", "improved", "--forward"], "batch_norm_forward.json"),  # keeps the train-only check's file
    # the names of the committed forward checks at another length and seed
    (["--trajectory", "improved", "--forward", "--epochs", "6"], "batch_norm_forward_6_epochs.json"),
    (["--trajectory", "improved", "--forward", "--seed", "1"], "batch_norm_forward_seed1.json"),
    (["--trajectory", "improved", "--forward", "--epochs", "6", "--seed", "2"], "batch_norm_forward_6_epochs_seed2.json"),
    # without the saved models' rows it must not replace batch_norm.json or batch_norm_forward.json
    (["--trajectory", "improved", "--trajectory-only"], "batch_norm_trajectory_only.json"),
    (["--trajectory", "improved", "--forward", "--trajectory-only"], "batch_norm_forward_trajectory_only.json"),
])
def test_the_command_writes_each_kind_of_check_to_its_own_file(monkeypatch, arguments, written):
    calls = {}
    monkeypatch.setattr(diagnostics, "batch_norm_side_check", lambda run_dir, **kwargs: calls.update(kwargs))
    assert diagnostics.main(["batch-norm", *arguments]) == 0
    assert calls["out"] == config.SIDE_CHECKS_DIR / written and calls["forward"] == ("--forward" in arguments)
    assert calls["saved_models"] == ("--trajectory-only" not in arguments)  # scored unless asked not to


@pytest.mark.parametrize("option", [["--forward"], ["--epochs", "6"], ["--trajectory-only"]])
def test_options_that_only_shape_trajectories_are_refused_without_one(monkeypatch, capsys, option):
    # else `batch-norm --forward` would score the saved models into the committed forward trajectory's file
    monkeypatch.setattr(diagnostics, "batch_norm_side_check", lambda run_dir, **kwargs: pytest.fail("ran"))
    with pytest.raises(SystemExit) as stopped:
        diagnostics.main(["batch-norm", *option])
    assert stopped.value.code == 2 and f"{option[0]} needs --trajectory MODEL" in capsys.readouterr().err


def test_a_trajectory_only_check_does_not_score_the_saved_models(tiny_paths, tmp_path, monkeypatch):
    calls = {}
    with monkeypatch.context() as patched:  # undone on leaving: the autouse offline guard stays
        patched.setattr(diagnostics, "batch_norm_side_check", lambda run_dir, **kwargs: calls.update(kwargs))
        diagnostics.main(["batch-norm", "--trajectory", "improved", "--trajectory-only"])
        assert calls["saved_models"] is False and calls["trajectories"] == ["improved"]
        with pytest.raises(SystemExit):  # nothing to train, nothing to score
            diagnostics.main(["batch-norm", "--trajectory-only"])

    monkeypatch.setattr(diagnostics, "saved_models_check", lambda *args, **kwargs: pytest.fail("saved models scored"))
    run_dir = tmp_path / "reports" / "smoke"  # no saved models at all: the trajectory alone is trained
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps({"profile": "smoke"}))
    try:
        result = diagnostics.batch_norm_side_check(run_dir, data_dir=tiny_paths.root, image_size=32, sample_size=3,
                                                   trajectories=["quick_cnn"], saved_models=False)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert "saved_models" not in result and result["trajectories"]["quick_cnn"]["epochs_trained"] == 1


def test_the_flip_command_writes_its_own_file(monkeypatch):
    calls = {}
    monkeypatch.setattr(diagnostics, "flip_side_check", lambda run_dir, **kwargs: calls.update(kwargs))
    assert diagnostics.main(["flip"]) == 0 and calls["out"] == config.SIDE_CHECKS_DIR / "flip.json"



@pytest.mark.parametrize(("command", "run", "said"), [
    ("flip", "lost", ["error: no saved train-only model of", "(lost missing)"]),  # its model file is gone
    ("batch-norm", "seed_notebook", ["has batch normalisation to score"]),  # no saved model has batch norm
])
def test_a_side_check_with_nothing_to_score_keeps_the_record_there_is(command, run, said, tiny_paths, tmp_path,
                                                                      monkeypatch, capsys):
    run_dir = tmp_path / "run"
    (run_dir / "runs").mkdir(parents=True)
    (run_dir / "runs" / f"{run}.json").write_text(json.dumps({"config": {"image_size": 32, "fit_on": "train"}}))
    monkeypatch.setattr(diagnostics, "saved_models_check", lambda *args, **kwargs: pd.DataFrame())
    out = tmp_path / "check.json"
    out.write_text("an earlier, committed record")
    try:
        code = diagnostics.main([command, "--run-dir", str(run_dir), "--data-dir", str(tiny_paths.root),
                                 "--out", str(out)])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert code == 1 and out.read_text() == "an earlier, committed record"
    error = capsys.readouterr().err
    assert all(part in error for part in said) and f"{out} was not written" in error


def test_bad_input_to_a_side_check_is_one_line_and_a_failing_exit_not_a_traceback(tmp_path, capsys):
    assert diagnostics.main(["ablation", "no_such_ablation", "--seeds", "1", "--run-dir", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("python -m marsrover.diagnostics: error: unknown ablation 'no_such_ablation'")
    assert "Traceback" not in error
    out = tmp_path / "batch_norm.json"
    for command in ("batch-norm", "flip"):  # a folder without run records: nothing to score, nothing written
        assert diagnostics.main([command, "--run-dir", str(tmp_path / "nothing here"), "--out", str(out)]) == 1
        assert "nothing here holds no run records (runs/*.json)" in capsys.readouterr().err
    assert not out.exists()


def test_an_unexpected_error_in_a_side_check_keeps_its_traceback(monkeypatch):
    def broken(run_dir, **kwargs):
        raise KeyError("image_size")  # a bug, not bad input: hiding it behind one line would help nobody

    monkeypatch.setattr(diagnostics, "flip_side_check", broken)
    with pytest.raises(KeyError, match="image_size"):
        diagnostics.main(["flip"])

class _MirrorDetector(keras.layers.Layer):
    """P(Surface) 1 when an image's left half is the brighter one: right as it is, wrong once mirrored."""

    def call(self, images):
        left = keras.ops.mean(images[:, :, : images.shape[2] // 2], axis=(1, 2, 3))
        right = keras.ops.mean(images[:, :, images.shape[2] // 2:], axis=(1, 2, 3))
        surface = keras.ops.cast(left > right, "float32")
        return keras.ops.stack([1 - surface, surface], axis=1)


def test_the_flip_check_scores_train_only_models_as_they_are_mirrored_and_averaged(tiny_paths, tmp_path, monkeypatch):
    from marsrover import inference, study

    paths, index = study.load_index(tiny_paths.root)
    run_dir = tmp_path / "run"
    (run_dir / "runs").mkdir(parents=True)
    records = {"sided": {"image_size": 32, "fit_on": "train"},
               "sided_refit": {"image_size": 32, "fit_on": "train+val"},  # fitted on validation: not scored
               "lost": {"image_size": 32, "fit_on": "train"}}  # its model file is gone: a row says so
    for run, conf in records.items():
        (run_dir / "runs" / f"{run}.json").write_text(json.dumps({"config": conf}))
    (run_dir / "models").mkdir()
    (run_dir / "models" / "sided.keras").touch()
    images, labels = study.split_arrays(paths, index, "val", 32, progress=False)
    # validation's labels written into its images' brightness, left half for Surface, right for Rover
    sided = images.copy()
    half = sided.shape[2] // 2
    sided[labels == 1, :, :half], sided[labels == 1, :, half:] = 250, 5
    sided[labels == 0, :, :half], sided[labels == 0, :, half:] = 5, 250
    monkeypatch.setattr(study, "split_arrays", lambda *args, **kwargs: (sided, labels))
    inputs = keras.Input((32, 32, 3))
    monkeypatch.setattr(inference, "load_model", lambda path: keras.Model(inputs, _MirrorDetector()(inputs)))
    table = diagnostics.flip_check(run_dir, paths, index)
    assert set(table.index) == {"sided", "lost"} and table.loc["lost", "missing"].endswith("lost.keras")
    row = table.loc["sided"]
    assert row["as_is balanced accuracy"] == 1.0 and row["mirrored balanced accuracy"] == 0.0
    assert row["averaged balanced accuracy"] == 0.5  # P(Surface) 0.5 everywhere: every image called Surface


def test_a_trajectory_at_another_seed_or_length_has_no_record_to_repeat(tiny_paths, tmp_path):
    from marsrover import study

    paths, index = study.load_index(tiny_paths.root)
    run_dir = tmp_path / "reports" / "smoke"
    study._fit_and_save("quick_cnn", "quick_cnn", paths, index, run_dir, fit_splits=["train"], val_split="val",
                        batch_size=None, seed=42, jit_compile=False, weights=None, size=32, epochs=1)
    (run_dir / "metrics.json").write_text(json.dumps({"profile": "smoke"}))
    check = dict(data_dir=tiny_paths.root, image_size=32, trajectories=["quick_cnn"], sample_size=3)
    try:
        assert diagnostics.batch_norm_side_check(run_dir, **check)["trajectories"]["quick_cnn"][
            "committed_history_matches"] is True  # the smoke profile's seed and one epoch, as recorded
        for other in ({"seed": 7}, {"epochs": 2}):
            result = diagnostics.batch_norm_side_check(run_dir, **check, **other)["trajectories"]["quick_cnn"]
            assert result["committed_history_matches"] is None
        assert result["epochs_trained"] == 2
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _improved_run(run_dir, seed, scores):
    folder = run_dir / ("runs" if seed == 42 else "ablations")
    folder.mkdir(parents=True, exist_ok=True)
    name = "improved" if seed == 42 else f"repeat_seed_{seed}"
    (folder / f"{name}.json").write_text(json.dumps({"history": {"val_balanced_accuracy": scores}, "question": "?",
                                                     "config": {"seeds": {"seed": seed}}, "train_seconds": 1.0}))


def test_an_ablation_is_trained_again_at_other_seeds_and_each_run_placed_against_improveds_seeds(tiny_paths, tmp_path,
                                                                                               capsys):
    from marsrover import study

    run_dir = tmp_path / "reports" / "smoke"
    _improved_run(run_dir, 42, [0.4, 0.6])
    _improved_run(run_dir, 1, [0.5, 0.7])
    (run_dir / "metrics.json").write_text(json.dumps({"profile": "smoke", "commit": "abc123"}))
    paths, index = study.load_index(tiny_paths.root)
    # the study's own run of the variant, as notebook 05 writes it (its other records are kept)
    committed = study.run_ablations(["flip_only"], paths, index, tmp_path / "study", image_size=64, epochs=1,
                                    batch_size=None, seed=42)["flip_only"]
    (run_dir / "ablations" / "flip_only.json").write_text(json.dumps(committed))
    out = tmp_path / "side_checks" / "ablation.json"
    result = diagnostics.ablation_side_check(run_dir, "flip_only", [1], data_dir=tiny_paths.root, out=out)
    assert list(result["runs"]) == ["1", "42"]
    assert result["runs"]["42"]["trained_here"] is False and result["runs"]["1"]["trained_here"] is True
    assert result["runs"]["42"]["val_balanced_accuracy"] == [
        round(value, 4) for value in committed["history"]["val_balanced_accuracy"]]
    assert sum(group["n"] for group in result["runs"]["1"]["val_groups"]) == int((index["split"] == "val").sum())
    assert [run["seed"] for run in result["improved_seeds"]] == [42, 1]
    assert result["improved_ranges"] == {"best": [0.6, 0.7], "settled": [0.5, 0.6]}
    assert [(placed["seed"], placed["variant"]) for placed in result["placed"]] == [
        (1, "flip_only at seed 1"), (42, "flip_only at seed 42")]
    assert result["runs"]["42"]["commit"] == committed["environment"]["commit"]  # each run names its code
    assert result["means"]["improved"] == {"best": pytest.approx(0.65), "settled": pytest.approx(0.55)}
    assert json.loads(out.read_text())["environment"]["commit"] == result["environment"]["commit"]
    # trained again at the study's seed, it must repeat the study's record (same CPU type); without a seed
    # repeat of improved in the run, it is trained but not placed, and the run says so before training
    (run_dir / "ablations" / "repeat_seed_1.json").unlink()
    again = diagnostics.ablation_side_check(run_dir, "flip_only", [42, 42], data_dir=tiny_paths.root)
    assert again["committed_history_matches"] is True and list(again["runs"]) == ["42"]
    assert again["placed"] == [] and again["improved_ranges"] is None
    assert "no seed repeat of improved" in capsys.readouterr().out


def test_a_paired_ablation_check_trains_improved_here_at_the_same_seeds_and_places_the_variant_against_those(
        tiny_paths, tmp_path, capsys):
    run_dir = tmp_path / "reports" / "smoke"
    _improved_run(run_dir, 42, [0.4, 0.6])
    _improved_run(run_dir, 1, [0.5, 0.7])
    (run_dir / "metrics.json").write_text(json.dumps({"profile": "smoke", "commit": "abc123"}))
    record_path = run_dir / "runs" / "improved.json"  # the run's improved, trained on another machine
    record = json.loads(record_path.read_text())
    another_machine = {"cpu": {"model_name": "Another CPU", "flags": ["avx2", "amx_bf16"]}}
    record_path.write_text(json.dumps({**record, "environment": another_machine}))
    # the run's own flip_only at seed 1, from that machine: its last bits need not repeat here, so none is compared
    (run_dir / "ablations" / "flip_only.json").write_text(json.dumps({
        "history": {"val_balanced_accuracy": [0.1]}, "config": {"seeds": {"seed": 1}}, "question": "?",
        "train_seconds": 1.0, "environment": another_machine}))
    with pytest.raises(diagnostics.TooFewSeeds, match="at least two seeds"):  # before any training
        diagnostics.ablation_side_check(run_dir, "flip_only", [1, 1], data_dir=tiny_paths.root, paired=True)
    out = tmp_path / "side_checks" / diagnostics.ablation_file_name("flip_only", [2, 1], paired=True)
    result = diagnostics.ablation_side_check(run_dir, "flip_only", [2, 1], data_dir=tiny_paths.root, out=out,
                                             paired=True)
    assert out.name == "ablation_flip_only_seeds1_2_paired.json"
    assert result["paired"] is True and result["machines_differ"] is True
    assert "mixes machines" not in capsys.readouterr().out  # --paired is the remedy, so no warning
    # only runs trained here take part: the variant's and improved's, at the same seeds
    assert list(result["runs"]) == ["1", "2"] and all(run["trained_here"] for run in result["runs"].values())
    assert [run["seed"] for run in result["improved_seeds"]] == [2, 1]
    assert all(run["trained_here"] and run["train_seconds"] > 0 for run in result["improved_seeds"])
    assert "committed_history_matches" not in result  # the run's record at seed 1 is another machine's
    improved_here = {run["seed"]: run for run in result["improved_seeds"]}
    bests = [run["best"] for run in result["improved_seeds"]]
    assert result["improved_ranges"]["best"] == [min(bests), max(bests)]  # not the run's 0.6 to 0.7
    for difference in result["paired_differences"]:
        seed = difference["seed"]
        for view in ("best", "settled"):
            assert difference[view] == pytest.approx(result["runs"][str(seed)][view] - improved_here[seed][view])
    assert {run["numeric_policy"] for run in result["runs"].values()} == {"float32"}
    # the table and caption say so
    table = diagnostics.side_check_table(out)
    assert table.loc[("improved", 1), "trained by this check"] == True  # noqa: E712 (a numpy bool)
    assert table.loc[("flip_only", 1), "best minus improved's"] == pytest.approx(
        result["paired_differences"][0]["best"])
    caption = diagnostics.side_check_caption(out)
    assert "paired with `improved` trained at the same seeds on" in caption and "(float32)" in caption
    # the model card's paragraph reads what the check writes
    card_paragraph = reporting._side_check_markdown(out, json.loads(out.read_text()), "Another CPU").replace("\n", " ")
    assert "A side check questions the photometric augmentation, outside this run" in card_paragraph
    assert f"--seeds 1 2 --paired --run-dir {config.display_path(run_dir)}`" in card_paragraph
    assert "This run trained on Another CPU, so the check's scores compare with one another only" in card_paragraph
    # without --paired, the check trains the variant alone and says that the machines differ, as does its caption
    unpaired_out = tmp_path / "side_checks" / "unpaired.json"
    unpaired = diagnostics.ablation_side_check(run_dir, "flip_only", [2], data_dir=tiny_paths.root, out=unpaired_out)
    assert unpaired["machines_differ"] is True and "paired_differences" not in unpaired
    assert "mixes machines; --paired trains improved here at the same seeds" in capsys.readouterr().out
    assert "another machine than the run's, and placed against the run's seeds: the placement mixes machines" in (
        diagnostics.side_check_caption(unpaired_out))
    assert "mixes machines" not in caption


def test_an_ablation_check_needs_a_known_ablation_and_a_run_with_improved(tiny_paths, tmp_path):
    with pytest.raises(KeyError, match="larger_images"):
        diagnostics.ablation_side_check(tmp_path, "bigger_images", [1], data_dir=tiny_paths.root)
    with pytest.raises(FileNotFoundError, match="notebook 05"):
        diagnostics.ablation_side_check(tmp_path, "larger_images", [1], data_dir=tiny_paths.root)


def test_the_ablation_command_names_its_file_after_the_variant_and_the_seeds(monkeypatch):
    calls = {}
    monkeypatch.setattr(diagnostics, "ablation_side_check",
                        lambda run_dir, name, seeds, **kwargs: calls.update(name=name, seeds=seeds, **kwargs))
    assert diagnostics.main(["ablation", "larger_images", "--seeds", "2", "1", "2"]) == 0
    assert calls["seeds"] == [2, 1, 2]  # the check trains a seed named twice once
    # one file for one set of seeds, however they were named
    assert calls["out"] == config.SIDE_CHECKS_DIR / "ablation_larger_images_seeds1_2.json"
    assert calls["paired"] is False
    assert diagnostics.main(["ablation", "larger_images", "--seeds", "1", "--paired"]) == 0
    assert calls["paired"] is True
    assert calls["out"] == config.SIDE_CHECKS_DIR / "ablation_larger_images_seeds1_paired.json"


def test_each_kind_of_side_check_reads_back_as_a_table_with_a_caption_naming_its_run(tmp_path):
    flip = tmp_path / "flip.json"
    flip.write_text(json.dumps({"profile": "full", "run_commit": "abc", "environment": {"commit": "def"},
                                "models": {"improved": {"as_is accuracy": 0.9, "as_is balanced accuracy": 0.95,
                                                        "mirrored balanced accuracy": 0.96,
                                                        "averaged balanced accuracy": 0.955}}}))
    assert diagnostics.side_check_table(flip).loc["improved"].tolist() == [0.95, 0.96, 0.955]
    assert diagnostics.side_check_caption(flip).endswith(
        "test-time flipping, on the `full` run at commit abc, written by code at def; validation only.")
    summary = {"best": 0.95, "best_epoch": 9, "mean_last_5": 0.88, "last": 0.85}
    saved_models = {"improved": {"fit on": "train", "running": 0.95, "recomputed": 0.9}}
    batch_norm = tmp_path / "batch_norm.json"
    batch_norm.write_text(json.dumps({"profile": "full", "saved_models": saved_models, "trajectories": {
        "improved": {"summary": {"running": summary}, "epochs": {"running": [0.5, 0.95, 0.85]}}}}))
    trajectories = diagnostics.side_check_table(batch_norm)  # the trajectories, when it trained any
    assert trajectories.loc[("improved", "running"), ["best_epoch", "lowest"]].tolist() == [9, 0.5]
    assert "run at commit not recorded" in diagnostics.side_check_caption(batch_norm)
    assert diagnostics.side_check_table(batch_norm, saved_models=True).loc["improved", "recomputed"] == 0.9
    batch_norm.write_text(json.dumps({"saved_models": saved_models, "trajectories": {}}))
    assert diagnostics.side_check_table(batch_norm).loc["improved", "recomputed"] == 0.9  # else its saved models
    seeds = tmp_path / "ablation_larger_images_seeds1_2.json"
    seeds.write_text(json.dumps({
        "ablation": "larger_images",
        "runs": {"1": {"best": 0.92, "settled": 0.88, "train_seconds": 465.0, "trained_here": True},
                 "42": {"best": 0.95, "settled": 0.89, "train_seconds": 485.0, "trained_here": False}},
        "improved_seeds": [{"seed": 42, "best": 0.948, "settled": 0.869}, {"seed": 1, "best": 0.93, "settled": 0.82}],
        "placed": [{"seed": 1, "variant": "larger_images at seed 1", "best_against_seeds": "below every seed",
                    "settled_against_seeds": "above every seed", "reading": "mixed: the two views disagree"},
                   {"seed": 42, "variant": "larger_images at seed 42", "best_against_seeds": "above every seed",
                    "settled_against_seeds": "above every seed", "reading": "a hint that the choice hurts"}]}))
    table = diagnostics.side_check_table(seeds)
    assert table.index.tolist() == [("larger_images", 1), ("larger_images", 42), ("improved", 42), ("improved", 1)]
    assert table.loc[("larger_images", 1), "last 5 against improved's seeds"] == "above every seed"
    assert table.loc[("improved", 1), "reading"] == ""  # improved's own seeds are the yardstick, not placed
    assert "`larger_images` at more seeds" in diagnostics.side_check_caption(seeds)
    missing = tmp_path / "ablation_other.json"
    assert diagnostics.side_check_table(missing).empty and "not found" in diagnostics.side_check_caption(missing)


def test_the_forward_runs_at_each_seed_and_length_read_back_as_one_table_naming_their_run_and_code(tmp_path,
                                                                                                  monkeypatch):
    monkeypatch.setattr(config, "SIDE_CHECKS_DIR", tmp_path)
    summary = {"running": {"best": 0.98, "best_epoch": 6, "mean_last_5": 0.94, "last": 0.94}}
    for seed, epochs, commit in ((42, None, "aaa"), (1, 6, "bbb")):
        name = diagnostics.batch_norm_file_name(forward=True, epochs=epochs, seed=None if seed == 42 else seed)
        (tmp_path / name).write_text(json.dumps({
            "seed": seed, "run_commit": "run1", "environment": {"commit": commit},
            "trajectories": {"improved_forward": {"summary": summary, "epochs": {"running": [0.5, 0.98]}}}}))

    table = diagnostics.batch_norm_forward_table()

    assert table.index.tolist() == [(42, "recipe's", "improved_forward", "running"),
                                    (1, 6, "improved_forward", "running")]  # missing files are left out
    assert table["written_at"].tolist() == ["aaa", "bbb"] and set(table["run"]) == {"run1"}
    assert table["lowest"].tolist() == [0.5, 0.5]
    monkeypatch.setattr(config, "SIDE_CHECKS_DIR", tmp_path / "none")
    assert diagnostics.batch_norm_forward_table().empty
