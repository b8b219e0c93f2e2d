"""Grad-CAM (Selvaraju et al., 2017): which parts of an image drove the model's answer.

For a target class c and a 4-D feature map A (the last convolutional block by default), the map is
``relu(sum_k alpha_k A_k)`` with ``alpha_k`` the spatial mean of d score_c / d A_k, scaled to
[0, 1] per image and resized to the input size. The score is the pre-softmax logit when the
model ends in a softmax ``Dense`` layer (ours do), so saturated probabilities do not flatten the
gradients; otherwise it is the model output itself.

TensorFlow is imported inside :func:`grad_cam`, so :func:`overlay` is cheap to import.
"""

from __future__ import annotations

import numpy as np

# Layers whose 4-D output is not a feature map worth explaining (auto-detection skips them).
_SKIPPED_KINDS = ("Pooling", "Dropout", "Rescaling", "Normalization", "Random", "Resizing",
                  "Cropping", "ZeroPadding", "InputLayer", "Flatten")


def _is_feature_layer(layer) -> bool:
    kind = type(layer).__name__
    if kind == "BatchNormalization":
        return True
    return not any(skipped in kind for skipped in _SKIPPED_KINDS)


def _is_preprocessing_block(layer) -> bool:
    """A nested block of preprocessing only, such as our ``augmentation`` Sequential."""
    inner = [sub for sub in layer.layers if type(sub).__name__ != "InputLayer"]
    return layer.name == "augmentation" or all(not _is_feature_layer(sub) for sub in inner)


def _output_rank(layer) -> int | None:
    try:
        return len(layer.output.shape)
    except (AttributeError, ValueError):  # a layer not (or more than once) in the graph
        return None


def _find_path(model) -> list:
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.Model):
            if not _is_preprocessing_block(layer):  # a backbone: look inside it
                inner = _find_path(layer)
                if inner:
                    return [layer, *inner]
        elif _output_rank(layer) == 4 and _is_feature_layer(layer):
            return [layer]
    return []


def find_target_layer(model) -> str:
    """The name of the layer Grad-CAM explains by default: the last layer with a 4-D output that
    is a feature map (convolution, activation, batch norm), skipping pooling, dropout,
    preprocessing and the nested ``augmentation`` block. A nested backbone (e.g. a
    ``keras.applications`` model) is searched inside, giving a path such as
    ``"efficientnetb0/top_activation"``."""
    path = _find_path(model)
    if not path:
        raise ValueError(f"model {model.name!r} has no convolutional feature map to explain")
    return "/".join(layer.name for layer in path)


def _resolve(model, layer_name: str) -> list:
    path, container = [], model
    for part in layer_name.split("/"):
        layer = container.get_layer(part)  # ValueError names the missing layer
        path.append(layer)
        container = layer
    if len(path) > 2:
        raise ValueError(f"layer {layer_name!r} is nested more than one model deep; not supported")
    return path


def _softmax_dense_head(model):
    """The final Dense layer when it applies a softmax (so its logits can be recomputed)."""
    import keras

    head = model.layers[-1]
    activation = getattr(head, "activation", None)
    if isinstance(head, keras.layers.Dense) and getattr(activation, "__name__", "") == "softmax":
        return head
    return None


def _forward(model, path, head):
    """A function batch -> (feature map, head input or model output) for the target ``path``."""
    import keras

    if len(path) == 1:
        explainer = keras.Model(model.inputs, [path[0].output, head.input if head is not None else model.output])
        return lambda batch: explainer(batch, training=False)

    # A layer inside a nested backbone is not connected to the outer inputs: run the outer
    # layers one after the other (our models are chains) with the backbone swapped for a
    # copy that also returns the feature map.
    backbone, target = path
    inner = keras.Model(backbone.inputs, [target.output, backbone.output])
    chain = [layer for layer in model.layers if type(layer).__name__ != "InputLayer"]

    def run(batch):
        x, features = batch, None
        for layer in chain:
            if layer is head:
                break
            if layer is backbone:
                features, x = inner(x, training=False)
            else:
                x = layer(x, training=False)
        return features, x

    return run


def grad_cam(model, images: np.ndarray, *, class_index: int | np.ndarray | None = None,
             layer_name: str | None = None, batch_size: int = 32) -> np.ndarray:
    """Grad-CAM heatmaps of ``images`` (N, H, W, C), as float32 (N, H, W) in [0, 1].

    ``class_index``: None explains each image's predicted class; an int (0 Rover, 1 Surface)
    explains that class for every image; an array gives one class per image. ``layer_name``: the
    feature layer to explain, ``"backbone/layer"`` for a layer inside a nested model (default:
    :func:`find_target_layer`). Maps that are zero everywhere (no positive evidence) come back as
    zeros, never NaN.
    """
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W, C), got {images.shape}")
    n, height, width = images.shape[:3]
    path = _resolve(model, layer_name or find_target_layer(model))
    head = _softmax_dense_head(model)
    forward = _forward(model, path, head)

    if class_index is None:
        classes = None
    else:
        classes = np.broadcast_to(np.asarray(class_index, dtype="int64"), (n,))

    heatmaps = np.zeros((n, height, width), dtype="float32")
    for start in range(0, n, batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], dtype=tf.float32)
        with tf.GradientTape() as tape:
            # Gradients are taken against the layer's own output: under a mixed-precision policy
            # (bfloat16 on a CPU, float16 on a GPU) a cast copy would not be on the gradient path.
            features, last = forward(batch)
            last = tf.cast(last, tf.float32)
            if head is not None:
                scores = tf.matmul(last, tf.cast(head.kernel, tf.float32))
                if head.use_bias:
                    scores = scores + tf.cast(head.bias, tf.float32)
            else:
                scores = last
            if start == 0 and len(path) > 1:
                expected = np.asarray(model(batch, training=False), dtype="float32")
                got = tf.nn.softmax(scores).numpy() if head is not None else scores.numpy()
                if not np.allclose(got, expected, atol=1e-4):
                    raise ValueError(f"cannot reach nested layer {'/'.join(l.name for l in path)!r}: the "
                                     "model is not a simple "
                                     "chain of layers; choose an outer layer")
            if classes is None:
                chosen = tf.argmax(scores, axis=1)
            else:
                chosen = tf.constant(classes[start:start + batch_size])
            score = tf.gather(scores, chosen, axis=1, batch_dims=1)
        gradients = tape.gradient(score, features)
        if gradients is None:
            raise ValueError(f"the output does not depend on layer {path[-1].name!r}")
        features, gradients = tf.cast(features, tf.float32), tf.cast(gradients, tf.float32)
        weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
        cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))[..., None]
        cams = tf.image.resize(cams, (height, width), method="bilinear")[..., 0].numpy()
        cams = np.where(np.isfinite(cams), cams, 0.0)
        peaks = cams.reshape(len(cams), -1).max(axis=1)
        scaled = np.zeros_like(cams)
        nonzero = peaks > 0
        scaled[nonzero] = cams[nonzero] / peaks[nonzero, None, None]
        heatmaps[start:start + len(cams)] = np.clip(scaled, 0.0, 1.0)
    return heatmaps


def overlay(image_uint8: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, *, cmap: str = "jet") -> np.ndarray:
    """``image`` (H, W, 3) or (H, W) blended with ``heatmap`` in [0, 1] coloured by ``cmap``.

    The heatmap is resized to the image when their sizes differ. Returns uint8 RGB (H, W, 3).
    """
    import matplotlib
    from PIL import Image

    image = np.asarray(image_uint8)
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3].astype("float32")
    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype="float32")), 0.0, 1.0)
    if heat.shape != image.shape[:2]:
        heat = np.asarray(Image.fromarray(heat).resize((image.shape[1], image.shape[0]),
                                                               Image.Resampling.BILINEAR))
        heat = np.clip(heat, 0.0, 1.0)
    colours = matplotlib.colormaps[cmap](heat)[..., :3] * 255.0
    blended = (1 - alpha) * image + alpha * colours
    return np.clip(np.rint(blended), 0, 255).astype("uint8")
