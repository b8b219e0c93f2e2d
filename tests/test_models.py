import gc
import weakref

import numpy as np
import pytest

from marsrover import models
from marsrover.training import instrument_balance_weights, make_dataset, release_models, train


@pytest.mark.parametrize("name", sorted(models.MODEL_SPECS))
def test_every_model_maps_images_to_two_class_probabilities(name):
    model = models.build_model(name, 32, weights=None)  # weights=None: nothing is downloaded
    batch = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3)).astype("float32")
    probabilities = np.asarray(model(batch, training=False))
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_an_average_of_models_takes_the_largest_size_and_averages_their_probabilities(tmp_path):
    import keras

    small, large = models.build_model("improved", 32, augment=False), models.build_model("seed_notebook", 48, augment=False)
    average = models.build_average([small, large], "improved+seed_notebook")
    assert average.input_shape == (None, 48, 48, 3) and average.name == "improved_and_seed_notebook"  # a scope name
    batch = np.random.default_rng(0).integers(0, 255, (2, 48, 48, 3)).astype("float32")
    resized = keras.layers.Resizing(32, 32, antialias=True)(batch)
    expected = (np.asarray(small(resized, training=False)) + np.asarray(large(batch, training=False))) / 2
    np.testing.assert_allclose(np.asarray(average(batch, training=False)), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(average.predict(batch, verbose=0), expected, rtol=1e-5, atol=1e-6)  # in a graph too
    assert [member.name for member in models.average_members(average)] == ["improved", "seed_notebook"]
    assert models.average_members(small) == []  # a single model is not an average
    average.save(tmp_path / "average.keras")
    loaded = keras.saving.load_model(tmp_path / "average.keras")
    np.testing.assert_allclose(np.asarray(loaded(batch, training=False)), expected, rtol=1e-5, atol=1e-6)
    assert len(models.average_members(loaded)) == 2
    with pytest.raises(ValueError, match="two or more"):
        models.build_average([small], "alone")


def test_models_default_to_their_published_input_size():
    assert models.build_model("seed_blog").input_shape == (None, 224, 224, 3)
    assert models.build_model("seed_notebook").input_shape == (None, 256, 256, 3)


def test_the_quick_cnn_is_the_improved_network_trained_plainly_and_matches_the_plain_recipe_ablation():
    from dataclasses import asdict

    from marsrover.ablation import variant_spec

    quick, improved = models.get_spec("quick_cnn"), models.get_spec("improved")
    assert quick.build_body is improved.build_body and quick.body_options == improved.body_options
    assert quick.image_size == 128  # as the brief describes it
    assert (quick.augmentation, quick.schedule, quick.loss_weighting, quick.restore_best) == (
        "flip", "constant", "none", False)  # no validation in its training: the last epoch is kept
    plain = variant_spec("plain_recipe")  # the same recipe, judged among the ablations on validation
    differing = {key for key, value in asdict(quick).items() if asdict(plain)[key] != value}
    assert differing == {"name", "description", "restore_best"}


def test_seed_blog_has_four_conv_pool_dropout_blocks_and_two_dense_layers():
    model = models.build_model("seed_blog", 64)
    kinds = [type(layer).__name__ for layer in model.layers]
    body = kinds[kinds.index("Rescaling") + 1:]
    assert body[:12] == ["Conv2D", "MaxPooling2D", "Dropout"] * 4
    assert body.count("Dense") == 2 and body[-1] == "Dense"
    assert [layer.name for layer in model.layers[1].layers] == [
        "random_rotation", "random_zoom", "random_flip"] or len(model.layers[1].layers) == 3


def test_augmentation_is_active_only_while_training():
    model = models.build_model("improved", 32)
    augmenter = model.get_layer("augmentation")
    batch = np.full((2, 32, 32, 3), 100.0, dtype="float32")
    batch[:, :, :16] = 200.0
    np.testing.assert_array_equal(np.asarray(augmenter(batch, training=False)), batch)
    assert not np.array_equal(np.asarray(augmenter(batch, training=True)), batch)


@pytest.mark.parametrize("recipe", ["photometric", "strong"])
def test_inference_leaves_the_training_augmentation_stream_untouched(recipe):
    # Otherwise the validation batch size would change what a model trains on.
    from marsrover.augmentation import build_augmentation

    batch = np.random.default_rng(0).integers(0, 255, (8, 16, 16, 3)).astype("float32")
    untouched, interrupted = build_augmentation(recipe, seed=3), build_augmentation(recipe, seed=3)
    first = np.asarray(untouched(batch, training=True))
    for _ in range(3):
        interrupted(batch, training=False)
    np.testing.assert_array_equal(np.asarray(interrupted(batch, training=True)), first)


def test_a_model_at_an_averages_input_size_computes_what_it_does_inside_that_average():
    small, large = models.build_model("improved", 32, augment=False), models.build_model("seed_notebook", 48, augment=False)
    average = models.build_average([small, large], "improved+seed_notebook")
    batch = np.random.default_rng(1).integers(0, 255, (3, 48, 48, 3)).astype("float32")
    parts = [np.asarray(models.at_input_size(model, 48)(batch, training=False)) for model in (small, large)]
    np.testing.assert_allclose(np.mean(parts, axis=0), np.asarray(average(batch, training=False)), rtol=1e-5, atol=1e-6)
    assert models.at_input_size(large, 48) is large and models.at_input_size(small, 48).input_shape == (None, 48, 48, 3)


def _two_runs_of_two_sizes(tiny_paths, output_dir):
    """quick_cnn at 32 px and seed_notebook at 48 px, one epoch each on the tiny set, saved in ``output_dir``."""
    from marsrover import study

    paths, index = study.load_index(tiny_paths.root)
    common = dict(fit_splits=["train"], val_split="val", epochs=1, batch_size=2, seed=42, jit_compile=False, weights=None)
    runs = {"quick_cnn": study._fit_and_save("quick_cnn", "quick_cnn", paths, index, output_dir, size=32, **common),
            "seed_notebook": study._fit_and_save("seed_notebook", "seed_notebook", paths, index, output_dir, size=48,
                                                 **common)}
    return paths, index, runs


def _saved_average_probabilities(paths, index, output_dir, runs, split):
    """P(Surface) on ``split`` of the average of ``runs`` as :func:`study.save_average` saves it, and the labels."""
    from marsrover import study
    from marsrover.evaluation import predict_surface_probability
    from marsrover.inference import load_model

    study.save_average(sorted(runs), "quick_cnn+seed_notebook", output_dir, runs)
    images, labels = study.split_arrays(paths, index, split, 48, progress=False)
    model = load_model(output_dir / "models" / "quick_cnn+seed_notebook.keras")
    return predict_surface_probability(model, images), labels


def test_validation_scores_an_average_of_models_of_two_sizes_as_the_saved_average_scores(tiny_paths, tmp_path):
    from sklearn.metrics import balanced_accuracy_score

    from marsrover import study

    paths, index, runs = _two_runs_of_two_sizes(tiny_paths, tmp_path)
    scores = study.validation_scores(runs, paths, index, tmp_path)
    saved, labels = _saved_average_probabilities(paths, index, tmp_path, runs, "val")
    assert scores["quick_cnn+seed_notebook"] == balanced_accuracy_score(labels, (saved >= 0.5).astype(int))
    # the probabilities themselves, not just the score of 2 validation images: the smaller model took the larger
    # model's 48 px decode, resized inside, as it does in the saved average (not its own 32 px decode)
    sizes = {"quick_cnn": 32, "seed_notebook": 48}
    probabilities, _ = study.validation_probabilities(sizes, paths, index, tmp_path)
    assert sorted(probabilities) == [("quick_cnn", 32), ("quick_cnn", 48), ("seed_notebook", 48)]
    np.testing.assert_allclose(study.average_probability(["quick_cnn", "seed_notebook"], sizes, probabilities), saved,
                               rtol=1e-5, atol=1e-6)


def test_notebook_06_scores_an_unsaved_average_as_selection_did_and_as_saving_it_would(tiny_paths, tmp_path):
    # Its table of averages must agree with the selection it reports on, whichever average validation chose.
    from marsrover import study

    paths, index, runs = _two_runs_of_two_sizes(tiny_paths, tmp_path)
    chosen = study.validation_scores(runs, paths, index, tmp_path)["quick_cnn+seed_notebook"]
    scores = study.score_study(paths, index, tmp_path, profile="smoke", seed=42, bootstrap_samples=0)
    average = scores.metrics["ensembles"]["quick_cnn+seed_notebook"]
    assert average["image_size"] == 48 and average["val"]["balanced_accuracy"] == chosen
    for split in ("val", "test"):
        saved, _ = _saved_average_probabilities(paths, index, tmp_path, runs, split)
        np.testing.assert_allclose(scores.ensemble_predictions["quick_cnn+seed_notebook"][split]["p_surface"], saved,
                                   rtol=1e-5, atol=1e-6)
        own_decodes = np.mean([scores.predictions[run][split]["p_surface"] for run in runs], axis=0)
        assert not np.allclose(own_decodes, saved, rtol=1e-5, atol=1e-6)  # so the check above can tell them apart


def test_validation_scores_every_average_of_the_single_runs_each_at_its_largest_models_size(monkeypatch):
    from marsrover import study

    sizes = {"a": 32, "b": 48, "c": 64}
    runs = {run: {"config": {"image_size": size, "kept_weights": "epoch 1 (last)"},
                  "history": {"val_balanced_accuracy": [0.5]}} for run, size in sizes.items()}
    labels = np.array([0, 1, 1, 0])
    # each run's P(Surface) depends on the size of the images it took: an average must use its largest model's
    probabilities = {(run, size): np.full(4, 0.9 if size == 64 else 0.1) * np.array([0, 1, 1, 1]) + 0.05
                     for run in sizes for size in sizes.values() if size >= sizes[run]}
    monkeypatch.setattr(study, "validation_probabilities", lambda *args: (probabilities, labels))
    scores = study.validation_scores(runs, None, None, None)
    assert sorted(scores) == ["a", "a+b", "a+b+c", "a+c", "b", "b+c", "c"]  # averages of single runs only
    assert scores["a+c"] == scores["a+b+c"] == 0.75 and scores["a+b"] == 0.5  # 64 px input: 3 of 4 right


def test_transfer_without_reachable_imagenet_weights_fails_clearly(monkeypatch):
    real = models.keras.applications.EfficientNetB0

    def offline(*args, weights=None, **kwargs):
        if weights is not None:
            raise OSError("URL fetch failure: no internet")
        return real(*args, weights=None, **kwargs)

    monkeypatch.setattr(models.keras.applications, "EfficientNetB0", offline)
    with pytest.raises(models.PretrainedWeightsUnavailable, match="Colab"):
        models.build_model("transfer", 64)
    table = models.model_table(["transfer"], 64, summaries=False)
    assert "unavailable" in table.loc["transfer", "note"]


def test_a_study_whose_transfer_weights_are_unreachable_records_it_as_skipped_and_trains_the_rest(tmp_path, monkeypatch,
                                                                                                   capsys):
    import json

    from marsrover import study

    def fit_and_save(name, run, *args, **kwargs):
        if name == "transfer":
            raise models.PretrainedWeightsUnavailable("could not load 'imagenet' weights. Run the study on Colab")
        return {"config": {"model": name, "run": run, "image_size": 32}}

    monkeypatch.setattr(study, "_fit_and_save", fit_and_save)
    runs = study.train_models(["transfer", "quick_cnn"], None, None, tmp_path, image_size=32, epochs=1, batch_size=2,
                              seed=42, refit=["transfer"])  # asked to refit it too: no crash, it was not trained
    assert runs["quick_cnn"]["config"]["run"] == "quick_cnn"  # the models after it still train
    assert "Colab" in runs["transfer"]["skipped"] and "transfer_refit" not in runs
    record = json.loads((tmp_path / "runs" / "transfer.json").read_text())
    assert record["skipped"] == runs["transfer"]["skipped"]  # notebook 06 reads it to skip the run with its reason
    assert "Skipping transfer: could not load 'imagenet' weights" in capsys.readouterr().out


def test_transfer_from_random_weights_trains_its_backbone():
    model = models.build_model("transfer", 32, weights=None)
    assert models.count_parameters(model)["trainable"] > 1_000_000


def test_unknown_model_names_list_the_known_ones():
    with pytest.raises(KeyError, match="seed_blog"):
        models.get_spec("resnet9000")


def test_parameter_counts_add_up():
    counts = models.count_parameters(models.build_model("improved", 32))
    assert counts["total"] == counts["trainable"] + counts["non_trainable"] > 0
    assert counts["non_trainable"] > 0  # batch-norm moving statistics


def _tiny_arrays(seed=0, n=16, size=32):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 80, (n, size, size, 3)).astype("uint8")
    images[labels == 1] += 120  # Surface images brighter: something to learn
    return images, labels


TINY_GROUPS = np.array(["MAHLI · Rover", "Mastcam left · Surface"] * 8)  # one per image of _tiny_arrays()


def test_the_input_pipeline_batches_float_images_with_int_labels():
    images, labels = _tiny_arrays()
    batches = list(make_dataset(images, labels, batch_size=5, shuffle=True, seed=1))
    assert [len(y) for _, y in batches] == [5, 5, 5, 1]
    assert batches[0][0].dtype.name == "float32" and batches[0][1].dtype.name == "int32"


def test_the_input_pipeline_yields_every_image_once_per_epoch_with_its_own_label():
    images, labels = _tiny_arrays(n=23)
    images[:, 0, 0, 0] = np.arange(23)  # a pixel that names each image
    dataset = make_dataset(images, labels, batch_size=4, shuffle=True, seed=7)
    epochs = [[(int(x[0, 0, 0]), int(y)) for xs, ys in dataset for x, y in zip(xs.numpy(), ys.numpy())]
              for _ in range(2)]
    for seen in epochs:
        assert sorted(position for position, _ in seen) == list(range(23))
        assert all(label == labels[position] for position, label in seen)
    assert epochs[0] != epochs[1], "reshuffled every epoch"
    again = [int(x[0, 0, 0]) for xs, _ in make_dataset(images, labels, batch_size=4, shuffle=True, seed=7)
             for x in xs.numpy()]
    assert again == [position for position, _ in epochs[0]], "the same order given the same seed"


def test_the_input_pipeline_keeps_order_without_shuffling_and_rejects_mismatched_labels():
    images, labels = _tiny_arrays(n=10)
    images[:, 0, 0, 0] = np.arange(10)
    order = [int(x[0, 0, 0]) for xs, _ in make_dataset(images, labels, batch_size=3, shuffle=False) for x in xs]
    assert order == list(range(10))
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        make_dataset(images, labels[:9], batch_size=3, shuffle=False)


def test_the_input_pipeline_does_not_autotune_so_ending_an_epoch_never_waits_for_the_tuner():
    images, labels = _tiny_arrays(n=10)
    dataset = make_dataset(images, labels, batch_size=3, shuffle=True)
    assert dataset.options().autotune.enabled is False
    assert dataset.map(lambda x, y: (x, y)).options().autotune.enabled is False  # kept by derived datasets


    images, labels = _tiny_arrays(n=12)
    images[:, 0, 0, 0] = np.arange(12)
    # Only the derived dataset refers to the arrays: reading it must still work.
    derived = make_dataset(images.copy(), labels, batch_size=5, shuffle=False).repeat(2).take(4)
    assert [int(x[0, 0, 0]) for xs, _ in derived for x in xs] == list(range(12)) + [0, 1, 2, 3, 4]

    # TensorFlow keeps the gather function alive for the process; the images must not outlive the dataset.
    alive = weakref.ref(images)
    dataset = make_dataset(images, labels, batch_size=5, shuffle=True)
    next(iter(dataset))
    del images, dataset
    gc.collect()
    assert alive() is None, "a finished run's images stay in memory for the rest of the study"

def test_one_training_step_runs_and_records_history_and_config():
    result = train("seed_notebook", _tiny_arrays(0), _tiny_arrays(1, n=8), image_size=32, epochs=1,
                   batch_size=8, seed=3, verbose=0)
    assert set(result.history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(result.history["loss"]) == 1 and np.isfinite(result.history["loss"][0])
    assert result.config["seeds"]["seed"] == 3 and result.config["seeds"]["op_determinism"] is True
    assert result.config["train_images"] == 16 and result.seconds > 0


def test_training_is_deterministic_on_cpu_given_a_seed():
    def weights(seed):
        result = train("improved", _tiny_arrays(0), _tiny_arrays(1, n=8), image_size=32, epochs=2,
                       batch_size=8, seed=seed, verbose=0, train_groups=TINY_GROUPS)
        return [w.copy() for w in result.model.get_weights()]

    first, second, other = weights(7), weights(7), weights(8)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


def test_weight_averaging_returns_the_averaged_weights_not_the_last_step():
    from marsrover.ablation import variant_spec

    spec = variant_spec("weight_averaging")
    result = train(spec.name, _tiny_arrays(0), None, image_size=32, epochs=2, batch_size=8, seed=5, verbose=0,
                   train_groups=TINY_GROUPS)
    averages = result.model.optimizer._model_variables_moving_average
    assert result.config["ema_momentum"] == 0.99
    for weight, average in zip(result.model.trainable_weights, averages):
        np.testing.assert_array_equal(np.asarray(weight), np.asarray(average))


def test_per_image_standardisation_survives_saving_and_ignores_exposure(tmp_path):
    from marsrover.ablation import variant_spec
    from marsrover.inference import load_model

    spec = variant_spec("per_image_scaling")
    model = models.build_model(spec.name, 32)
    images = np.random.default_rng(0).integers(0, 120, (2, 32, 32, 3)).astype("float32")
    brighter = images * 1.5 + 40  # the same scene, exposed differently
    np.testing.assert_allclose(model(images, training=False), model(brighter, training=False), atol=1e-4)
    model.save(tmp_path / "m.keras")
    np.testing.assert_allclose(load_model(tmp_path / "m.keras")(images, training=False), model(images, training=False),
                               atol=1e-6)


def test_freeing_finished_runs_keeps_the_chosen_numeric_policy():
    import keras

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        release_models()
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_the_input_pipeline_carries_each_images_own_sample_weight_when_given_one():
    images, labels = _tiny_arrays(n=10)
    images[:, 0, 0, 0] = np.arange(10)
    weights = np.arange(10, dtype="float32") / 10
    batches = list(make_dataset(images, labels, batch_size=4, shuffle=True, seed=3, sample_weights=weights))
    assert all(len(batch) == 3 for batch in batches)
    for xs, _, ws in batches:
        np.testing.assert_allclose(ws.numpy(), xs.numpy()[:, 0, 0, 0] / 10)
    with pytest.raises(ValueError, match="10 labels but 9 sample weights"):
        make_dataset(images, labels, batch_size=4, shuffle=False, sample_weights=weights[:9])


def test_instrument_balance_weights_are_the_square_root_of_group_balancing_with_mean_one():
    groups = np.array(["MAHLI · Surface"] * 1 + ["Mastcam left · Surface"] * 4 + ["MAHLI · Rover"] * 4)
    weights = instrument_balance_weights(groups)
    assert weights.mean() == pytest.approx(1.0)
    assert weights[0] == pytest.approx(2 * weights[1])  # 4x rarer group: sqrt(4) = 2x the weight
    np.testing.assert_allclose(weights[1:5], weights[5:])  # same-sized groups weigh the same
