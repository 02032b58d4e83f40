"""ONNX quantization through onnxruntime.quantization, driven by a QuantRecipe.

This is the one place that spells onnxruntime's quantizer options (STYLE.md rule 8).
Static int8 is QDQ (the format onnxruntime recommends, and the one the numpy runtime
and every execution provider read), per-channel weights as the profile says.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Any

from converters.calibration import Samples, count, sample
from converters.recipe import QuantRecipe
from edgerun import _lazy
from edgerun.errors import ConversionError


def quantize_onnx(model: Any, recipe: QuantRecipe, calibration: Samples | None) -> Any:
    """The quantized onnx.ModelProto; ``calibration`` is needed for static int8 only."""
    if recipe.scheme == "none":
        return model
    if recipe.scheme == "fp16":
        return _float16(model)
    onnx = _lazy.require("onnx")
    with tempfile.TemporaryDirectory(prefix="edgerun-quantize-") as tmp:
        source, target = Path(tmp) / "float.onnx", Path(tmp) / "quantized.onnx"
        onnx.save_model(model, str(source))
        try:
            with _quiet():
                if recipe.scheme == "dynamic":
                    _dynamic(source, target, recipe)
                else:
                    if calibration is None:
                        raise ConversionError("static int8 quantization needs calibration samples")
                    _static(source, target, recipe, calibration, Path(tmp))
        except ConversionError:
            raise
        except Exception as exc:  # the quantizer's many failure types
            raise ConversionError(
                f"onnxruntime's quantizer failed ({recipe.scheme}): {_first(exc)}"
            ) from exc
        return onnx.load_model(str(target))


def _static(
    source: Path, target: Path, recipe: QuantRecipe, calibration: Samples, tmp: Path
) -> None:
    q = _lazy.require("onnxruntime.quantization", "onnxruntime")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "prepared.onnx"
    # shape inference plus onnxruntime's own graph fusions, as its quantization guide asks;
    # its symbolic shape inference fails on some exported graphs (an Expand in MiniLM's
    # dynamo export): onnx's own shape inference is then enough for the quantizer
    try:
        quant_pre_process(str(source), str(prepared))
    except Exception:  # onnxruntime's tools raise whatever their handlers raise
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    methods = {
        "minmax": q.CalibrationMethod.MinMax,
        "entropy": q.CalibrationMethod.Entropy,
        "percentile": q.CalibrationMethod.Percentile,
    }
    q.quantize_static(
        str(prepared),
        str(target),
        _Reader(calibration),
        quant_format=q.QuantFormat.QDQ,
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        activation_type=q.QuantType.QInt8
        if recipe.activation_dtype == "int8"
        else q.QuantType.QUInt8,
        weight_type=q.QuantType.QInt8,
        calibrate_method=methods[recipe.calibration_method],
        calibration_providers=["CPUExecutionProvider"],
    )


def _dynamic(source: Path, target: Path, recipe: QuantRecipe) -> None:
    q = _lazy.require("onnxruntime.quantization", "onnxruntime")
    q.quantize_dynamic(
        str(source),
        str(target),
        per_channel=recipe.per_channel,
        reduce_range=recipe.reduce_range,
        weight_type=q.QuantType.QInt8,
    )


def _float16(model: Any) -> Any:
    float16 = _lazy.require("onnxruntime.transformers.float16", "onnxruntime")
    try:
        # float32 inputs and outputs stay, so the caller's feeds do not change
        return float16.convert_float_to_float16(model, keep_io_types=True)
    except Exception as exc:
        raise ConversionError(f"float16 conversion failed: {_first(exc)}") from exc


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over our samples, one at a time."""

    def __init__(self, samples: Samples) -> None:
        self._samples = samples
        self._next = 0

    def get_next(self) -> dict[str, Any] | None:
        if self._next >= count(self._samples):
            return None
        self._next += 1
        return sample(self._samples, self._next - 1)

    def rewind(self) -> None:
        self._next = 0


@contextlib.contextmanager
def _quiet():
    """The quantizer logs and prints progress; pack shows its own."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]
