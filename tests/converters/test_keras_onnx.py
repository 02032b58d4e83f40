"""A Keras CNN through tf2onnx: the ONNX file against Keras, and edgerun against onnxruntime.

Keras (the model's own output, ``model(x)`` in TensorFlow) is the oracle for the
conversion; onnxruntime is the oracle for edgerun's numpy runtime on the converted file.
tf2onnx's graph differs from torch.onnx's: NHWC input, a Transpose to NCHW in front of the
convolutions, BatchNorm folded into Mul/Add, a grouped Conv for DepthwiseConv2D, a Squeeze
before Gemm. Skipped where tensorflow or tf2onnx is not installed (they are host-only and
heavy; the [tensorflow] extra plus tf2onnx brings them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="needs tensorflow (the [tensorflow] extra)")
pytest.importorskip("tf2onnx", reason="needs tf2onnx")
ort = pytest.importorskip("onnxruntime", reason="needs the [onnxruntime] extra")

import edgerun  # noqa: E402
from converters import keras_examples  # noqa: E402

RTOL, ATOL = 1e-4, 1e-5


@pytest.fixture(scope="module")
def keras_model() -> Any:
    """The Keras CNN (a tf.keras.Model; typed Any so this file imports without TF)."""
    return keras_examples.keras_cnn(seed=0)


@pytest.fixture(scope="module")
def onnx_path(keras_model: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = keras_examples.export_onnx(keras_model, tmp_path_factory.mktemp("keras") / "cnn.onnx")
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((1, 32, 32, 3)).astype(np.float32)


def _onnxruntime(path: Path, x: np.ndarray) -> tuple[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (only_input,) = session.get_inputs()
    assert list(only_input.shape) == [1, 32, 32, 3]  # NHWC kept, as Keras had it
    (out,) = session.run(None, {only_input.name: x})
    return only_input.name, out


def test_onnxruntime_matches_keras(keras_model: Any, onnx_path: Path, image: np.ndarray) -> None:
    expected = np.asarray(keras_model(image, training=False))
    _, got = _onnxruntime(onnx_path, image)
    assert got.dtype == np.float32 and got.shape == expected.shape == (1, 10)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)
    # The BatchNorm statistics are random, so a BatchNorm dropped or applied as the
    # identity would show; the output is a distribution either way.
    np.testing.assert_allclose(got.sum(), 1.0, rtol=1e-5)


def test_numpy_runtime_matches_onnxruntime(onnx_path: Path, image: np.ndarray) -> None:
    name, expected = _onnxruntime(onnx_path, image)
    got = edgerun.load(onnx_path, backend="numpy").run({name: image})
    assert len(got) == 1
    (ours,) = got.values()
    assert ours.dtype == expected.dtype and ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=ATOL)
