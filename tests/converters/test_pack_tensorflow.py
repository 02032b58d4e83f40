"""Keras and SavedModel sources through pack, to ONNX (tf2onnx) and TFLite (the converter),
and a .tflite source packed as it is; the oracle is the Keras model itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import edgerun
from edgerun.bundle import read_manifest
from edgerun.cli import main

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def keras_model():  # type: ignore[no-untyped-def]
    from converters.keras_examples import keras_cnn

    return keras_cnn(seed=3)


def save(model, folder: Path, kind: str) -> Path:  # type: ignore[no-untyped-def]
    if kind == "savedmodel":
        path = folder / "saved"
        model.export(str(path))
        return path
    path = folder / f"model.{kind}"
    model.save(str(path))
    return path


CASES = {
    # source kind, device, extra flags, (format, dtype of the input)
    "keras to onnx for rpi4, float": ("keras", "rpi4", ["--quantize", "none"], ("onnx", "float32")),
    "h5 to tflite, fp16": ("h5", "android-arm64", ["--quantize", "fp16"], ("tflite", "float32")),
    "savedmodel to tflite, dynamic": (
        "savedmodel",
        "android-arm64",
        ["--quantize", "dynamic"],
        ("tflite", "float32"),
    ),
    "keras to tflite for coral, int8 with int8 I/O": (
        "keras",
        "coral-dev-board",
        [],
        ("tflite", "int8"),
    ),
    "keras to onnx, int8 entropy calibration": (
        "keras",
        "rpi4",
        ["--format", "onnx", "--calibration-method", "entropy"],
        ("onnx", "float32"),
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_tensorflow_sources_pack_and_agree_with_keras(
    case: str, keras_model, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    kind, device, extra, (fmt, input_dtype) = CASES[case]
    source = save(keras_model, tmp_path, kind)
    out = tmp_path / "packed.edgerun"
    assert main(["pack", str(source), "--device", device, "-o", str(out), *extra]) == 0
    manifest = read_manifest(out)
    assert manifest.model_format == fmt and manifest.inputs[0].dtype == input_dtype
    assert manifest.source["framework"] == "tensorflow"
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    want = keras_model(x).numpy()
    session = edgerun.load(out, backend="numpy")
    spec = session.inputs[0]
    got = session.outputs[0].to_real(
        session.run({spec.name: spec.from_real(x)})[session.outputs[0].name]
    )
    atol = 1e-4 if "float" in case else 0.05  # softmax probabilities; int8 steps of 1/256
    np.testing.assert_allclose(got, want, atol=atol)


def test_a_tflite_file_is_packed_as_it_is(keras_model, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from converters.recipe import QuantRecipe
    from converters.tensorflow_frontend import tensorflow_input_specs, tensorflow_to_tflite

    specs = tensorflow_input_specs(keras_model, None, False)
    recipe = QuantRecipe("none", "int8", "int8", True, "minmax", False)
    flatbuffer = tensorflow_to_tflite(keras_model, specs, recipe, None)
    source = tmp_path / "model.tflite"
    source.write_bytes(flatbuffer)
    out = tmp_path / "model.edgerun"
    assert main(["pack", str(source), "--device", "coral-dev-board", "-o", str(out)]) == 0
    assert "packed as it is" in capsys.readouterr().err  # the profile's int8 cannot apply
    from edgerun.bundle import open_bundle

    with open_bundle(out) as bundle:
        assert bytes(bundle.model) == flatbuffer
    assert main(["pack", str(source), "--device", "rpi4", "-o", str(out)]) == 2
    assert "packs only for a TFLite profile" in capsys.readouterr().err
