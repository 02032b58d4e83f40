"""Weights laid out for mapping: one external-data member, every tensor 64-byte aligned.

Inside a protobuf, raw tensor bytes sit at whatever offset the encoding gives them, so
the runtime would have to copy misaligned ones; in a separate member, aligned, they are
memory-mapped where they lie (DESIGN.md: weights are never copied).
"""

from __future__ import annotations

from typing import Any

from edgerun import _lazy
from edgerun.bundle import ALIGNMENT

WEIGHTS = "weights.bin"
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")
MIN_EXTERNAL_BYTES = 1024  # smaller tensors stay inline: cheaper than a mapping's bookkeeping


def externalize(model: Any) -> tuple[bytes, bytes | None]:
    """(model bytes, weights bytes or None): large initializers moved into ``WEIGHTS``."""
    onnx = _lazy.require("onnx")
    from onnx.external_data_helper import set_external_data

    model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's stays intact
    weights = bytearray()
    for tensor in model.graph.initializer:
        data = _raw(tensor)
        if data is None or len(data) < MIN_EXTERNAL_BYTES:
            continue
        weights.extend(bytes(-len(weights) % ALIGNMENT))
        for field in _DATA_FIELDS:
            tensor.ClearField(field)
        tensor.raw_data = data  # onnx's helper wants raw_data present while it records the place
        set_external_data(tensor, WEIGHTS, offset=len(weights), length=len(data))
        tensor.ClearField("raw_data")
        weights.extend(data)
        tensor.data_location = onnx.TensorProto.EXTERNAL
    return model.SerializeToString(), bytes(weights) if weights else None


def _raw(tensor: Any) -> bytes | None:
    """The tensor's little-endian bytes (typed fields converted), or None for strings."""
    onnx = _lazy.require("onnx")
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    from onnx import numpy_helper

    tensor_copy = numpy_helper.from_array(numpy_helper.to_array(tensor), tensor.name)
    return tensor_copy.raw_data
