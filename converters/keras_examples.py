"""Small Keras CNNs built in code, and their export to ONNX through tf2onnx (host side).

``keras_cnn`` has seeded random weights (a converter test needs no training);
``digits_cnn`` is trained when it is built on scikit-learn's digits (shipped inside
scikit-learn, nothing downloads), the Keras twin of ``converters.digits.cnn`` and a factory
for ``edgerun pack converters.keras_examples:digits_cnn --device coral-dev-board``.

The Keras model is laid out the way people write image classifiers for small boards
(Conv2D + BatchNormalization + ReLU, DepthwiseConv2D, MaxPooling2D, GlobalAveragePooling2D,
Dense, Softmax) on an NHWC 1x32x32x3 input, so tests see the graph tf2onnx really emits for
such a model: NHWC->NCHW Transposes around the convolutions, BatchNormalization folded or
kept, and so on. Weights and BatchNorm statistics come from a seeded generator, so every
machine builds the same model and nothing is downloaded.

Needs ``tensorflow`` (or ``tensorflow-cpu``) and ``tf2onnx``; both are imported here at
module level, which is why this lives in ``converters`` and never in ``edgerun``.

    python -m converters.keras_examples model.onnx
    python -m converters.keras_examples digits FOLDER   # NHWC calibration/validation .npz
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Quiet TensorFlow's C++ start-up chatter before it is imported; a caller's setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

INPUT_SHAPE = (32, 32, 3)  # NHWC without the batch, as Keras writes it
INPUT_NAME = "image"
OPSET = 17


def keras_cnn(seed: int = 0, classes: int = 10) -> tf.keras.Model:
    """A small Keras image classifier (1x32x32x3 NHWC in, ``classes`` probabilities out).

    Every weight, and the BatchNorm moving mean and variance, is drawn from
    ``np.random.default_rng(seed)``. The statistics are randomised on purpose: a freshly
    built BatchNormalization has mean 0 and variance 1, which makes it nearly the identity
    and would hide a converter or runtime that folds or applies it wrongly.
    """
    layers = tf.keras.layers
    inputs = tf.keras.Input(shape=INPUT_SHAPE, batch_size=1, name=INPUT_NAME)
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw2")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Conv2D(32, 3, strides=2, padding="same", name="conv3")(x)
    x = layers.BatchNormalization(name="bn3")(x)
    x = layers.ReLU(name="relu3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(classes, name="fc")(x)
    outputs = layers.Softmax(name="probabilities")(x)
    model = tf.keras.Model(inputs, outputs, name="keras_cnn")

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, channels).astype(np.float32),  # gamma
                    (rng.standard_normal(channels) * 0.1).astype(np.float32),  # beta
                    (rng.standard_normal(channels) * 0.1).astype(np.float32),  # moving mean
                    rng.uniform(0.5, 1.5, channels).astype(np.float32),  # moving variance
                ]
            )
        elif layer.weights:
            values = []
            for weight in layer.weights:
                shape = tuple(weight.shape)
                if len(shape) == 1:  # bias
                    values.append((rng.standard_normal(shape) * 0.1).astype(np.float32))
                else:  # kernel: scale by fan-in so activations stay O(1) through the net
                    fan_in = int(np.prod(shape[:-1]))
                    values.append((rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32))
            layer.set_weights(values)
    return model


def digits_split_nhwc() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``converters.digits.digits_split`` laid out as Keras wants it: images N x 8 x 8 x 1."""
    from converters.digits import digits_split

    x_train, y_train, x_test, y_test = digits_split()
    return x_train.transpose(0, 2, 3, 1), y_train, x_test.transpose(0, 2, 3, 1), y_test


def digits_cnn(epochs: int = 8, seed: int = 0) -> tf.keras.Model:
    """A Conv-BN-ReLU classifier for 8x8 digits (1x8x8x1 NHWC in, 10 logits out), trained now.

    Seeded, so the same weights come out each time on one machine (TensorFlow's CPU kernels
    may still differ in the last bits between machines).
    """
    layers = tf.keras.layers
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(shape=(8, 8, 1), batch_size=1, name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", name="dw2")(x)
    x = layers.Conv2D(32, 1, name="pw2")(x)
    x = layers.ReLU(name="relu2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(10, name="logits")(x)
    model = tf.keras.Model(inputs, outputs, name="digits_cnn")
    # Trained at batch 32 through a twin without the fixed batch of 1, sharing its layers.
    trainer = tf.keras.Model(model.layers[0].output, outputs)
    x_train, y_train, _, _ = digits_split_nhwc()
    trainer.compile(
        optimizer=tf.keras.optimizers.Adam(3e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    trainer.fit(x_train, y_train, batch_size=32, epochs=epochs, shuffle=True, verbose=0)
    return model


def write_digits_data(folder: Path, calibration_samples: int = 256) -> tuple[Path, Path]:
    """NHWC calibration images (training split) and the labelled test split, for pack."""
    x_train, _, x_test, y_test = digits_split_nhwc()
    folder.mkdir(parents=True, exist_ok=True)
    calibration = folder / "keras-digits-calibration.npz"
    validation = folder / "keras-digits-validation.npz"
    np.savez(calibration, image=x_train[:calibration_samples])
    np.savez(validation, image=x_test, label=y_test)
    return calibration, validation


def export_onnx(model: tf.keras.Model, path: str | Path, opset: int = OPSET) -> Path:
    """Convert ``model`` to ONNX with ``tf2onnx.convert.from_keras``, write it to ``path``.

    The input signature is given explicitly, taken from the Keras input (name, and the
    fixed 1x32x32x3 NHWC shape), so the ONNX graph keeps the input's name and layout: the
    NHWC->NCHW Transpose that tf2onnx puts in front of the convolutions is part of the
    graph, as it is in every Keras model people convert. Checked with tensorflow-cpu 2.21
    (Keras 3.15) and tf2onnx 1.17, where from_keras handles Keras 3 models; the output is
    named after the last layer (``probabilities``). Returns ``path`` as a Path.
    """
    import tf2onnx  # here, so that building the Keras model alone does not need tf2onnx

    path = Path(path)
    keras_input = model.inputs[0]
    name = getattr(keras_input, "name", "").split(":")[0] or INPUT_NAME
    signature = (tf.TensorSpec(tuple(keras_input.shape), tf.float32, name=name),)
    tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset, output_path=str(path))
    return path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 2 and args[0] == "digits":
        for path in write_digits_data(Path(args[1])):
            print(path)
        return 0
    if len(args) != 1:
        print(
            "usage: python -m converters.keras_examples OUT.onnx | digits FOLDER", file=sys.stderr
        )
        return 2
    print(export_onnx(keras_cnn(), args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
