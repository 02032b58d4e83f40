"""PyTorch to TFLite through litert-torch (the ``[torch-tflite]`` extra).

Why litert-torch and not a path through ONNX, measured here with torch 2.13.0 (CPU),
tensorflow-cpu 2.21 and ai-edge-litert 2.3.0 on Python 3.11:

- litert-torch 0.10.0 installs next to torch 2.13 without touching torch (it asks for
  torch>=2.4,<2.15), and next to tensorflow-cpu 2.21: it does not need TensorFlow at all
  (its converter is the litert-converter wheel). It lowers ``torch.export`` straight to
  TFLite. A conv-BN-ReLU CNN trained on scikit-learn's digits (converters.digits.cnn,
  359 test images) scored, in the TFLite interpreter: float 98.9 % (torch 98.9 %, max
  abs error 9e-6), PT2E dynamic int8 98.9 %, PT2E static int8 per-channel 98.9 % with
  every tensor int8/int32 and int8 input and output (what the Edge TPU needs), fp16
  weights through ai-edge-quantizer 98.9 %.
- onnx2tf (the maintained ONNX -> TFLite converter; onnx-tf is archived) cannot be
  installed here: 1.29.24 pins numpy==1.26.4, onnx==1.19.1, onnxruntime==1.23.0 and
  tensorflow==2.19.0, so pip would replace four packages pack and the runtime rely on.

The cost, said where it is paid: litert-torch pulls jax, jaxlib, torchao, transformers and
xdsl, and xdsl 0.28 pins typing-extensions<4.13, so pip moves typing-extensions to 4.12
(and pydantic to 2.11). Hence its own extra, not part of ``[torch]``.

A static int8 model from litert-torch always has int8 inputs and outputs (PT2E quantizes
the graph's inputs); ``tflite_io_specs`` reports their scale and zero point, and
``run_tflite`` takes and gives float either way.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerun import _lazy
from edgerun.errors import ConversionError
from edgerun.specs import TensorSpec

if TYPE_CHECKING:
    from converters.recipe import QuantRecipe

Samples = dict[str, np.ndarray]
EXTRA = "torch-tflite"


def _litert_torch() -> Any:
    # pack shows its own progress; litert-torch's per-pass log is noise there
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    return _lazy.require("litert_torch", EXTRA)


def torch_to_tflite(
    module: Any, specs: list[TensorSpec], recipe: QuantRecipe, calibration: Samples | None
) -> bytes:
    """The TFLite flatbuffer of ``module`` (an nn.Module or an ExportedProgram) under
    ``recipe``, its signature's inputs named as ``specs`` and its outputs as the module's
    ``output_names`` when it has them."""
    torch = _lazy.require("torch")
    litert_torch = _litert_torch()
    module = _module(module, torch)
    args = _example_args(specs, torch)
    try:
        if recipe.scheme in ("none", "fp16"):
            model = litert_torch.convert(module, args).model_content()
        elif recipe.scheme in ("dynamic", "int8"):
            model = _pt2e(module, args, specs, recipe, calibration)
        else:
            raise ConversionError(f"unknown quantization scheme {recipe.scheme!r}")
        if recipe.scheme == "fp16":
            model = _fp16_weights(model)
    except ConversionError:
        raise
    except Exception as exc:  # torch.export and the converter raise many types
        raise ConversionError(f"litert-torch rejected the model: {_first_line(exc)}") from exc
    return _rename(model, [s.name for s in specs], getattr(module, "output_names", None))


def _module(model: Any, torch: Any) -> Any:
    if isinstance(model, torch.export.ExportedProgram):
        return model.module()
    if isinstance(model, torch.jit.ScriptModule):
        raise ConversionError(
            "a TorchScript model cannot go to TFLite (litert-torch needs torch.export); "
            "give the nn.Module through a package.module:factory, or pass --format onnx"
        )
    return model.eval()


def _example_args(specs: list[TensorSpec], torch: Any) -> tuple:
    dynamic = [s.name for s in specs if s.shape and not isinstance(s.shape[0], int)]
    if dynamic:
        raise ConversionError(
            f"--dynamic-batch: a TFLite model from PyTorch has a fixed batch ({', '.join(dynamic)}"
            "); leave --dynamic-batch off for TFLite profiles"
        )
    return tuple(torch.zeros(tuple(s.shape or ()), dtype=getattr(torch, s.dtype)) for s in specs)


def _pt2e(
    module: Any,
    args: tuple,
    specs: list[TensorSpec],
    recipe: QuantRecipe,
    calibration: Samples | None,
) -> bytes:
    """Dynamic or static int8 through PyTorch 2 export quantization, as litert-torch does it."""
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval, quantize_pt2e

    static = recipe.scheme == "int8"
    if static and recipe.integer_io and recipe.activation_dtype != "int8":
        raise ConversionError(
            f"litert-torch's int8 model takes and gives int8, not {recipe.activation_dtype}; "
            "pack this profile with --format onnx, or from a TensorFlow model"
        )
    if static and not calibration:
        raise ConversionError("static int8 quantization needs calibration samples")
    config = pt2e_quantizer.get_symmetric_quantization_config(
        is_per_channel=recipe.per_channel, is_dynamic=not static
    )
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(config)
    prepared = quantize_pt2e.prepare_pt2e(torch.export.export(module, args).module(), quantizer)
    with torch.no_grad():
        for sample in _samples(specs, calibration) if static else [args]:
            prepared(*sample)
    quantized = quantize_pt2e.convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(quantized)
    quantized.training = False  # what that did; litert-torch warns on a module in training
    litert_torch = _litert_torch()
    edge = litert_torch.convert(quantized, args, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    return bytes(edge.model_content())


def _samples(specs: list[TensorSpec], calibration: Samples | None) -> list[tuple]:
    import torch

    calibration = calibration or {}
    missing = [s.name for s in specs if s.name not in calibration]
    if missing:
        raise ConversionError(f"no calibration samples for input {', '.join(missing)}")
    count = min(len(calibration[s.name]) for s in specs)
    return [
        tuple(
            torch.from_numpy(np.ascontiguousarray(calibration[s.name][i : i + 1], s.dtype))
            for s in specs
        )
        for i in range(count)
    ]


def _fp16_weights(model: bytes) -> bytes:
    """Float16 weights, dequantized at load, through ai-edge-quantizer (litert-torch has no
    fp16 switch of its own; its documented post-training quantizer is this one)."""
    from ai_edge_quantizer import qtyping, quantizer

    fp16 = quantizer.Quantizer(model)
    fp16.update_quantization_recipe(
        regex=".*",
        operation_name="*",
        algorithm_key="float_casting",
        op_config=qtyping.OpQuantizationConfig(
            weight_tensor_config=qtyping.TensorQuantizationConfig(
                num_bits=16, dtype=qtyping.TensorDataType.FLOAT
            ),
            compute_precision=qtyping.ComputePrecision.FLOAT,
            explicit_dequantize=True,
        ),
    )
    result = fp16.quantize(enable_progress_bar=False, enable_progress_report=False)
    return bytes(result.quantized_model)


def _rename(model: bytes, inputs: list[str], outputs: list[str] | None) -> bytes:
    """Name the signature's inputs (litert-torch calls them ``args_0``...) and outputs, and
    the tensors behind them, so feeds keyed by the source's names fit the TFLite model."""
    from ai_edge_litert.tools import flatbuffer_utils

    tree = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    (signature,) = tree.signatureDefs
    tensors = tree.subgraphs[signature.subgraphIndex].tensors
    pairs = list(zip(signature.inputs, inputs, strict=True))
    if outputs and len(outputs) == len(signature.outputs):
        pairs += list(zip(signature.outputs, outputs, strict=True))
    for entry, name in pairs:
        entry.name = name
        tensors[entry.tensorIndex].name = name
    return bytes(flatbuffer_utils.convert_object_to_bytearray(tree))


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
