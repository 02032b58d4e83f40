"""TensorFlow and TFLite for pack: a Keras CNN trained on digits, converted and run.

Oracles: the Keras model itself (``model(x)`` in TensorFlow) for every conversion, the
TFLite interpreter for the converted flatbuffers, onnxruntime for tf2onnx's graph, and the
digits labels for what quantization costs.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow", reason="needs tensorflow (the [tensorflow] extra)")
pytest.importorskip("sklearn", reason="needs scikit-learn (the [tensorflow] extra)")

from converters import keras_examples  # noqa: E402
from converters import tensorflow_frontend as tff  # noqa: E402
from converters.recipe import QuantRecipe  # noqa: E402
from edgerun.errors import ConversionError, InputError, ModelFormatError  # noqa: E402

CALIBRATION = 200  # training images the int8 converter calibrates on


def _recipe(scheme: str, activation: str = "int8", per_channel: bool = True, io: bool = False):
    return QuantRecipe(scheme, activation, "int8", per_channel, "minmax", io)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return keras_examples.digits_split_nhwc()


@pytest.fixture(scope="session")
def model() -> Any:
    return keras_examples.digits_cnn(epochs=6)


@pytest.fixture(scope="session")
def keras_logits(model: Any, digits: tuple) -> np.ndarray:
    x_test = digits[2]
    return np.concatenate(
        [
            tff.run_tensorflow(model, {"image": x_test[i : i + 1]})["logits"]
            for i in range(len(x_test))
        ]
    )


@pytest.fixture(scope="session")
def specs(model: Any) -> list:
    return tff.tensorflow_input_specs(model, None, dynamic_batch=False)


def _convert(model: Any, specs: list, recipe: QuantRecipe, digits: tuple) -> bytes:
    return tff.tensorflow_to_tflite(model, specs, recipe, {"image": digits[0][:CALIBRATION]})


def _tensor_dtypes(model_bytes: bytes) -> Counter:
    interpreter = tff._interpreter(model_bytes)
    return Counter(np.dtype(d["dtype"]).name for d in interpreter.get_tensor_details())


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=1) == labels))


def test_keras_model_learned_digits(keras_logits: np.ndarray, digits: tuple) -> None:
    assert _accuracy(keras_logits, digits[3]) > 0.9


def test_input_specs(model: Any, specs: list) -> None:
    (spec,) = specs
    assert (spec.name, spec.shape, spec.dtype) == ("image", (1, 8, 8, 1), "float32")
    (free,) = tff.tensorflow_input_specs(model, None, dynamic_batch=True)
    assert free.shape == (tff.BATCH, 8, 8, 1)
    with pytest.raises(InputError, match="pixels"):
        tff.tensorflow_input_specs(model, {"pixels": (1, 8, 8, 1)}, False)
    with pytest.raises(InputError, match="does not fit"):
        tff.tensorflow_input_specs(model, {"image": (1, 9, 8, 1)}, False)


@pytest.mark.parametrize("activation", ["int8", "uint8"])
def test_full_integer_with_integer_io(
    model: Any, specs: list, digits: tuple, keras_logits: np.ndarray, activation: str
) -> None:
    """The Edge TPU recipe: every tensor integer, integer I/O, accuracy within 2 points."""
    flatbuffer = _convert(model, specs, _recipe("int8", activation, io=True), digits)
    (image,), (logits,) = tff.tflite_io_specs(flatbuffer)
    assert image.dtype == logits.dtype == activation
    assert image.quantization is not None and logits.quantization is not None
    # digits in [0, 1] calibrate the input to about 1/255 per step
    assert image.quantization.scale[0] == pytest.approx(1 / 255, rel=0.05)
    dtypes = _tensor_dtypes(flatbuffer)
    assert set(dtypes) <= {"int8", "int32", activation}, dtypes  # int32: biases, shapes
    got = tff.run_tflite(flatbuffer, {"image": digits[2]})["logits"]
    assert got.dtype == np.float32 and got.shape == keras_logits.shape
    assert _accuracy(got, digits[3]) >= _accuracy(keras_logits, digits[3]) - 0.02


@pytest.mark.parametrize("per_channel", [True, False])
def test_full_integer_with_float_io(
    model: Any, specs: list, digits: tuple, keras_logits: np.ndarray, per_channel: bool
) -> None:
    recipe = _recipe("int8", per_channel=per_channel)
    flatbuffer = _convert(model, specs, recipe, digits)
    (image,), (logits,) = tff.tflite_io_specs(flatbuffer)
    assert image.dtype == logits.dtype == "float32" and image.quantization is None
    interpreter = tff._interpreter(flatbuffer)
    weights = [
        d
        for d in interpreter.get_tensor_details()
        if d["dtype"] == np.int8 and len(d["shape"]) == 4 and d["shape"][0] == 32  # pw2 kernel
    ]
    assert weights, "the 1x1 convolution's int8 kernel"
    scales = {len(d["quantization_parameters"]["scales"]) for d in weights}
    assert scales == ({32} if per_channel else {1})
    got = tff.run_tflite(flatbuffer, {"image": digits[2]})["logits"]
    assert _accuracy(got, digits[3]) >= _accuracy(keras_logits, digits[3]) - 0.02


# (scheme, dtype of the stored kernels and how many at least, tolerance, top-1 agreement).
# Dynamic range quantizes only kernels of 1024 elements or more: here the dense one.
@pytest.mark.parametrize(
    ("scheme", "weights", "atol", "agreement"),
    [
        ("none", ("float32", 4), 1e-4, 1.0),
        ("fp16", ("float16", 4), 2e-2, 0.99),
        ("dynamic", ("int8", 1), 0.3, 0.97),
    ],
)
def test_float_schemes_agree_with_keras(
    model: Any,
    specs: list,
    digits: tuple,
    keras_logits: np.ndarray,
    scheme: str,
    weights: tuple[str, int],
    atol: float,
    agreement: float,
) -> None:
    flatbuffer = _convert(model, specs, _recipe(scheme), digits)
    (image,), (logits,) = tff.tflite_io_specs(flatbuffer)
    assert image.dtype == logits.dtype == "float32"
    dtype, kernels = weights
    assert _tensor_dtypes(flatbuffer)[dtype] >= kernels
    got = tff.run_tflite(flatbuffer, {"image": digits[2]})["logits"]
    np.testing.assert_allclose(got, keras_logits, atol=atol, rtol=0)
    assert np.mean(got.argmax(1) == keras_logits.argmax(1)) >= agreement


def test_dynamic_batch_runs_a_batch_at_once(model: Any, digits: tuple, keras_logits) -> None:
    specs = tff.tensorflow_input_specs(model, None, dynamic_batch=True)
    flatbuffer = tff.tensorflow_to_tflite(model, specs, _recipe("none"), None)
    (image,), _ = tff.tflite_io_specs(flatbuffer)
    assert image.shape == (tff.BATCH, 8, 8, 1)
    got = tff.run_tflite(flatbuffer, {"image": digits[2][:17]})["logits"]
    np.testing.assert_allclose(got, keras_logits[:17], atol=1e-4, rtol=0)


def test_onnx_matches_keras(model: Any, specs: list, digits: tuple, keras_logits) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    proto = tff.tensorflow_to_onnx(model, specs, opset=17)
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"image": x[None]})[0] for x in digits[2][:50]])
    np.testing.assert_allclose(got, keras_logits[:50], atol=1e-4, rtol=0)


def _save(model: Any, path: Path) -> Path:
    if path.suffix:
        model.save(path)
    else:
        model.export(path, verbose=False)
    return path


@pytest.mark.parametrize("name", ["digits.keras", "digits.h5", "saved_model"])
def test_load_and_convert_saved_files(
    model: Any, digits: tuple, keras_logits: np.ndarray, tmp_path: Path, name: str
) -> None:
    loaded = tff.load_tensorflow(_save(model, tmp_path / name))
    (spec,) = tff.tensorflow_input_specs(loaded, None, False)
    assert spec.shape == (1, 8, 8, 1) and spec.dtype == "float32"
    x = digits[2][:1]
    (source,) = tff.run_tensorflow(loaded, {spec.name: x}).values()
    np.testing.assert_allclose(source, keras_logits[:1], atol=1e-5, rtol=0)
    flatbuffer = tff.tensorflow_to_tflite(loaded, [spec], _recipe("none"), None)
    (converted,) = tff.run_tflite(flatbuffer, {spec.name: x}).values()
    np.testing.assert_allclose(converted, keras_logits[:1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["garbage.keras", "garbage.h5", "saved_model", "garbage.pb"])
def test_garbage_is_a_model_format_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name == "saved_model":
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"\x08\x96\x01not a protobuf at all")
    else:
        path.write_bytes(b"PK\x03\x04 this is not a model")
    with pytest.raises(ModelFormatError, match=str(path)) as info:
        tff.load_tensorflow(path)
    assert "\n" not in str(info.value)


def test_missing_file_is_a_model_format_error(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="no such file"):
        tff.load_tensorflow(tmp_path / "absent.keras")


def test_int8_without_calibration_is_refused(model: Any, specs: list) -> None:
    with pytest.raises(ConversionError, match="calibration"):
        tff.tensorflow_to_tflite(model, specs, _recipe("int8", io=True), None)


def test_converter_failure_is_one_line(specs: list, digits: tuple) -> None:
    """An op with no int8 kernel cannot go full integer: the converter's reason, one line."""
    inputs = tf.keras.Input(shape=(8, 8, 1), batch_size=1, name="image")
    outputs = tf.keras.layers.Lambda(lambda t: tf.math.cumprod(t, axis=1), name="cumprod")(inputs)
    model = tf.keras.Model(inputs, outputs)
    with pytest.raises(ConversionError, match="TFLite converter failed") as info:
        _convert(model, specs, _recipe("int8", io=True), digits)
    assert "\n" not in str(info.value)


def test_run_tflite_needs_every_input(model: Any, specs: list) -> None:
    flatbuffer = tff.tensorflow_to_tflite(model, specs, _recipe("none"), None)
    with pytest.raises(InputError, match="image"):
        tff.run_tflite(flatbuffer, {})


def test_garbage_tflite_is_a_model_format_error() -> None:
    with pytest.raises(ModelFormatError):
        tff.tflite_io_specs(b"TFL3 not a flatbuffer")


def test_outputs_keep_one_order_everywhere() -> None:
    """Two outputs whose names sort against the model's order: every runner and both
    converters list them alike, so the accuracy report may pair them by position."""
    inputs = tf.keras.Input(shape=(4,), batch_size=1, name="x")
    zeta = tf.keras.layers.Dense(3, name="zeta")(inputs)
    alpha = tf.keras.layers.Dense(2, name="alpha")(inputs)
    model = tf.keras.Model(inputs, [zeta, alpha])
    specs = tff.tensorflow_input_specs(model, None, False)
    x = np.random.default_rng(0).standard_normal((1, 4)).astype(np.float32)
    source = tff.run_tensorflow(model, {"x": x})
    flatbuffer = tff.tensorflow_to_tflite(model, specs, _recipe("none"), None)
    converted = tff.run_tflite(flatbuffer, {"x": x})
    _, outputs = tff.tflite_io_specs(flatbuffer)
    assert list(source) == list(converted) == [o.name for o in outputs] == ["alpha", "zeta"]
    for name in source:
        np.testing.assert_allclose(converted[name], source[name], atol=1e-5, rtol=0)
    if importlib.util.find_spec("tf2onnx"):
        proto = tff.tensorflow_to_onnx(model, specs, opset=17)
        assert [o.name for o in proto.graph.output] == list(source)


def test_calibration_reaches_each_input_by_name() -> None:
    """Two inputs listed against name order, calibrated on ranges 100x apart: each input's
    scale comes from its own samples."""
    small = tf.keras.Input(shape=(4,), batch_size=1, name="zz_small")
    large = tf.keras.Input(shape=(4,), batch_size=1, name="aa_large")
    # Dense + Add, not Concatenate: TFLite's int8 concatenation gives its inputs one scale
    summed = tf.keras.layers.Add(name="out")(
        [tf.keras.layers.Dense(3, name="from_small")(small), tf.keras.layers.Dense(3)(large)]
    )
    model = tf.keras.Model([small, large], summed)
    specs = tff.tensorflow_input_specs(model, None, False)
    assert [s.name for s in specs] == ["zz_small", "aa_large"]
    rng = np.random.default_rng(0)
    calibration = {
        "zz_small": rng.uniform(0, 1, (64, 4)).astype(np.float32),
        "aa_large": rng.uniform(0, 100, (64, 4)).astype(np.float32),
    }
    flatbuffer = tff.tensorflow_to_tflite(model, specs, _recipe("int8", io=True), calibration)
    inputs, _ = tff.tflite_io_specs(flatbuffer)
    scales = {s.name: s.quantization.scale[0] for s in inputs}
    assert scales["zz_small"] == pytest.approx(1 / 255, rel=0.1)
    assert scales["aa_large"] == pytest.approx(100 / 255, rel=0.1)
    feeds = {name: samples[:5] for name, samples in calibration.items()}
    expected = tff.run_tensorflow(model, feeds)["out"]
    got = tff.run_tflite(flatbuffer, feeds)["out"]
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max(), rtol=0)
