import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from keras import layers

from marsrover import plots
from marsrover.gradcam import find_target_layer, grad_cam, overlay
from marsrover.models import MODEL_SPECS, build_model


def _brightness_model(size=8, scale=1.0, nested=False):
    """Feature map = mean brightness per pixel; Surface logit = scale * its spatial mean, Rover = minus that.

    Grad-CAM of Surface is then the brightness map scaled to a maximum of 1, and Grad-CAM of Rover is
    zero everywhere (only negative evidence). ``nested``: the convolution and pooling sit inside a
    nested model called "backbone", as in a transfer-learning model.
    """
    inputs = keras.Input((size, size, 3))
    brightness = layers.Conv2D(1, 1, use_bias=False, activation="relu", name="brightness")
    if nested:
        inner_inputs = keras.Input((size, size, 3))
        backbone = keras.Model(inner_inputs, layers.GlobalAveragePooling2D()(brightness(inner_inputs)),
                               name="backbone")
        pooled = backbone(inputs)
    else:
        pooled = layers.GlobalAveragePooling2D()(brightness(inputs))
    outputs = layers.Dense(2, activation="softmax", name="probabilities")(pooled)
    model = keras.Model(inputs, outputs)
    brightness.set_weights([np.full((1, 1, 3, 1), 1 / 765, dtype="float32")])
    model.get_layer("probabilities").set_weights([np.array([[-scale, scale]], dtype="float32"),
                                                   np.zeros(2, dtype="float32")])
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3)).astype("uint8")


@pytest.fixture(scope="module")
def improved():
    return build_model("improved", 32)


def test_grad_cam_of_a_known_model_is_its_feature_map(images):
    heatmaps = grad_cam(_brightness_model(), images, class_index=1)
    brightness = images.astype("float64").mean(axis=-1)
    expected = brightness / brightness.max(axis=(1, 2), keepdims=True)
    assert heatmaps.shape == (3, 8, 8) and heatmaps.dtype == np.float32
    np.testing.assert_allclose(heatmaps, expected, atol=1e-5)


def test_grad_cam_reaches_into_a_nested_backbone(images):
    model = _brightness_model(nested=True)
    assert find_target_layer(model) == "backbone/brightness"
    brightness = images.astype("float64").mean(axis=-1)
    expected = brightness / brightness.max(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(grad_cam(model, images, class_index=1), expected, atol=1e-5)
    np.testing.assert_allclose(grad_cam(model, images, class_index=1, layer_name="backbone/brightness"),
                               expected, atol=1e-5)


def test_maps_without_positive_evidence_are_zero_not_nan(images):
    heatmaps = grad_cam(_brightness_model(), images, class_index=0)
    assert np.isfinite(heatmaps).all() and not heatmaps.any()


def test_saturated_softmax_still_gives_a_map(images):
    # P(Surface) is exactly 1.0 in float32 here; the map is taken on the logit, so it survives.
    model = _brightness_model(scale=1e4)
    assert np.asarray(model(images.astype("float32")))[:, 1].min() == 1.0
    heatmaps = grad_cam(model, images)  # the predicted class: Surface
    assert heatmaps.max(axis=(1, 2)).tolist() == pytest.approx([1.0] * 3)


def test_grad_cam_on_a_model_with_the_augmentation_block(improved):
    assert improved.layers[1].name == "augmentation"
    batch = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    target = improved.get_layer(find_target_layer(improved))
    assert len(target.output.shape) == 4 and type(target).__name__ == "Activation"  # the last ReLU
    heatmaps = grad_cam(improved, batch)
    assert heatmaps.shape == (2, 32, 32) and heatmaps.dtype == np.float32
    assert np.isfinite(heatmaps).all() and heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0


def test_grad_cam_with_an_explicit_layer_and_classes(improved):
    batch = np.random.default_rng(2).integers(0, 256, (2, 32, 32, 3)).astype("uint8")
    conv_names = [layer.name for layer in improved.layers if type(layer).__name__ == "Conv2D"]
    heatmaps = grad_cam(improved, batch, class_index=np.array([0, 1]), layer_name=conv_names[2])
    assert heatmaps.shape == (2, 32, 32) and np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    with pytest.raises(ValueError):
        grad_cam(improved, batch, layer_name="no_such_layer")


def test_overlay_blends_a_colour_map_into_the_image():
    image = np.full((16, 12, 3), 100, dtype="uint8")
    blended = overlay(image, np.linspace(0, 1, 16 * 12).reshape(16, 12))
    assert blended.shape == (16, 12, 3) and blended.dtype == np.uint8
    np.testing.assert_array_equal(overlay(image, np.ones((4, 3)), alpha=0.0), image)  # resized, not used
    assert overlay(image[..., 0], np.zeros((16, 12))).shape == (16, 12, 3)  # greyscale input


def test_gradcam_grid_shows_image_and_overlay_per_example(images):
    heatmaps = grad_cam(_brightness_model(), images, class_index=1)
    fig = plots.gradcam_grid(images, heatmaps, y_true=[1, 0, 1], p_surface=[0.9, 0.8, 0.3], columns=2)
    assert isinstance(fig, plt.Figure) and len(fig.axes) == 2 * 2 * 2  # 2 rows of 2 (image, overlay) pairs
    assert fig.axes[0].get_title(loc="left").startswith("true: Surface\npred: Surface (90%)")
    plt.close(fig)
    fig = plots.gradcam_grid(images, heatmaps, ["a", "b", "c"], columns=4, side_by_side=False)
    assert len(fig.axes) == 4 and fig.axes[1].get_title() == "b"
    plt.close(fig)


@pytest.mark.skipif("transfer" not in MODEL_SPECS, reason="no transfer-learning model in the zoo")
def test_grad_cam_explains_the_transfer_models_backbone():
    model = build_model("transfer", 64, weights=None)  # the architecture, random weights: no download
    assert find_target_layer(model) == "efficientnetb0/top_activation"
    batch = np.random.default_rng(3).integers(0, 256, (2, 64, 64, 3)).astype("uint8")
    heatmaps = grad_cam(model, batch)
    assert heatmaps.shape == (2, 64, 64) and np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0


def test_grad_cam_explains_a_model_trained_in_mixed_precision():
    import keras

    from marsrover.models import build_model

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model("seed_notebook", 32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype("float32")
    heatmaps = grad_cam(model, images)
    assert heatmaps.shape == (2, 32, 32) and np.isfinite(heatmaps).all()
    assert heatmaps.min() >= 0 and heatmaps.max() <= 1


def test_each_model_of_a_saved_average_is_explained_on_its_own(tmp_path):
    from marsrover.models import average_members, build_average

    average = build_average([build_model("improved", 32), build_model("seed_notebook", 48)], "improved+seed_notebook")
    average.save(tmp_path / "average.keras")
    loaded = keras.saving.load_model(tmp_path / "average.keras")
    members = average_members(loaded)
    assert [member.name for member in members] == ["improved", "seed_notebook"]
    for member in members:
        size = int(member.input_shape[1])
        batch = np.random.default_rng(1).integers(0, 255, (2, size, size, 3)).astype("float32")
        heatmaps = grad_cam(member, batch)
        assert heatmaps.shape == (2, size, size) and 0.0 <= heatmaps.min() and heatmaps.max() <= 1.0


def test_an_averages_models_are_explained_under_the_names_of_the_runs_they_are(tmp_path):
    from marsrover.models import build_average
    from marsrover.study import models_to_explain

    average = build_average([build_model("improved", 32), build_model("seed_notebook", 48)], "a+b")
    members = ["improved_refit", "seed_notebook_refit"]  # a refit's model carries its recipe's name
    explained = models_to_explain(average, "a+b", {"models": {"a+b": {"members": members}}})
    assert [name for _, name in explained] == members and [m.name for m, _ in explained] == ["improved", "seed_notebook"]
    unmatched = models_to_explain(average, "a+b", {"models": {"a+b": {"members": ["seed_blog", "quick_cnn"]}}})
    assert [name for _, name in unmatched] == ["improved", "seed_notebook"]  # records that disagree are not trusted
    reordered = models_to_explain(average, "a+b", {"models": {"a+b": {"members": members[::-1]}}})
    assert [name for _, name in reordered] == members  # matched by name, not by position
    lookalike = models_to_explain(average, "a+b", {"models": {"a+b": {"members": ["improved_random_split", "x"]}}})
    assert [name for _, name in lookalike][0] == "improved"  # only the run itself or its refit
    single = build_model("improved", 32)
    assert models_to_explain(single, "improved_refit", {}) == [(single, "improved_refit")]


def test_a_runs_gradcam_figure_reads_the_examples_images_at_the_models_size(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for name in ("a.jpg", "b.jpg", "c.jpg"):  # larger than the model's input: read at 8 px
        Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(tmp_path / name)
    examples = pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "label": [1, 0, 1], "p_surface": [0.9, 0.8, 0.3]})
    fig = plots.gradcam_figure(_brightness_model(), examples, tmp_path, suptitle="run: Grad-CAM")
    assert len(fig.axes) == 4 * 2 and fig._suptitle.get_text() == "run: Grad-CAM"  # one row: (image, overlay) x 4
    assert fig.axes[0].images[0].get_array().shape[:2] == (8, 8)
    assert fig.axes[2].get_title(loc="left").startswith("true: Rover\npred: Surface (80%)")
    plt.close(fig)
