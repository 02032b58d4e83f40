"""PyTorch to TFLite through litert-torch: the digits CNN in each scheme, in the interpreter.

Oracles: the torch module itself, the TFLite interpreter, the digits labels. Where
litert-torch is not installed (it is the ``[torch-tflite]`` extra), only the error that
names the extra is checked.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the [torch] extra")
pytest.importorskip("sklearn", reason="needs scikit-learn")
pytest.importorskip("ai_edge_litert", reason="needs the [tflite] extra")

from converters import digits as digits_example  # noqa: E402
from converters import tensorflow_frontend as tff  # noqa: E402
from converters import torch_tflite  # noqa: E402
from converters.recipe import QuantRecipe  # noqa: E402
from edgerun.errors import ConversionError, MissingDependencyError  # noqa: E402
from edgerun.specs import TensorSpec  # noqa: E402

HAVE_LITERT_TORCH = importlib.util.find_spec("litert_torch") is not None
needs_litert_torch = pytest.mark.skipif(
    not HAVE_LITERT_TORCH, reason="needs litert-torch (the [torch-tflite] extra)"
)
SPECS = [TensorSpec("image", (1, 1, 8, 8), "float32")]
CALIBRATION = 100


def _recipe(scheme: str, activation: str = "int8", io: bool = True) -> QuantRecipe:
    return QuantRecipe(scheme, activation, "int8", True, "minmax", io)


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return digits_example.digits_split()


@pytest.fixture(scope="session")
def module() -> Any:
    return digits_example.cnn(epochs=4)


@pytest.fixture(scope="session")
def torch_logits(module: Any, digits: tuple) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(digits[2])).numpy()


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(axis=1) == labels))


@pytest.mark.skipif(HAVE_LITERT_TORCH, reason="litert-torch is installed")
def test_without_litert_torch_the_error_names_the_extra() -> None:
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(MissingDependencyError, match=r"edgerun\[torch-tflite\]"):
        torch_tflite.torch_to_tflite(module, SPECS, _recipe("none"), None)


# (scheme, input dtype, the dtypes every tensor must be among or None, tolerance, accuracy
# drop allowed against torch in points)
@needs_litert_torch
@pytest.mark.parametrize(
    ("scheme", "io_dtype", "tensor_dtypes", "atol", "drop"),
    [
        ("none", "float32", {"float32", "int32"}, 1e-4, 0.0),
        ("fp16", "float32", {"float32", "float16", "int32"}, 2e-2, 0.0),
        ("dynamic", "float32", {"float32", "int8", "int32"}, 0.3, 0.01),
        ("int8", "int8", {"int8", "int32"}, 1.0, 0.01),  # ~12 steps of the logits' scale
    ],
)
def test_schemes_against_torch(
    module: Any,
    digits: tuple,
    torch_logits: np.ndarray,
    scheme: str,
    io_dtype: str,
    tensor_dtypes: set[str],
    atol: float,
    drop: float,
) -> None:
    calibration = {"image": digits[0][:CALIBRATION]}
    flatbuffer = torch_tflite.torch_to_tflite(module, SPECS, _recipe(scheme), calibration)
    (image,), (logits,) = tff.tflite_io_specs(flatbuffer)
    assert (image.name, logits.name) == ("image", "logits")  # named as the source names them
    assert image.dtype == logits.dtype == io_dtype
    assert (image.quantization is not None) == (io_dtype == "int8")
    dtypes = Counter(
        np.dtype(d["dtype"]).name for d in tff._interpreter(flatbuffer).get_tensor_details()
    )
    assert set(dtypes) <= tensor_dtypes, dtypes
    if scheme != "none":  # the scheme's own weight dtype is there
        assert dtypes[{"fp16": "float16", "dynamic": "int8", "int8": "int8"}[scheme]] >= 3
    got = tff.run_tflite(flatbuffer, {"image": digits[2]})["logits"]
    np.testing.assert_allclose(got, torch_logits, atol=atol, rtol=0)
    assert _accuracy(got, digits[3]) >= _accuracy(torch_logits, digits[3]) - drop


@needs_litert_torch
@pytest.mark.parametrize(
    ("recipe", "specs", "match"),
    [
        (_recipe("int8"), SPECS, "calibration"),
        (_recipe("int8", activation="uint8"), SPECS, "uint8"),
        (_recipe("none"), [TensorSpec("image", ("batch", 1, 8, 8), "float32")], "fixed batch"),
    ],
)
def test_refusals(module: Any, recipe: QuantRecipe, specs: list, match: str) -> None:
    with pytest.raises(ConversionError, match=match):
        torch_tflite.torch_to_tflite(module, specs, recipe, None)


@needs_litert_torch
def test_torchscript_is_refused(module: Any) -> None:
    script = torch.jit.trace(module, (torch.zeros(1, 1, 8, 8),))
    with pytest.raises(ConversionError, match="TorchScript"):
        torch_tflite.torch_to_tflite(script, SPECS, _recipe("none"), None)
