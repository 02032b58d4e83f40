"""Small helpers the compression steps share: weights as arrays, consumers, a final check.

The steps edit an ``onnx.ModelProto`` in place on a copy; ``finish`` drops the stale shape
annotations, re-infers them and runs onnx's checker, so a bad rewrite fails on the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from converters.optimise.simplify import check
from edgerun import _lazy

# Op type -> the input index of its weight; the layers the compression steps work on
WEIGHT_INPUT = {"Conv": 1, "Gemm": 1, "MatMul": 1}


def copy(model: Any) -> Any:
    onnx = _lazy.require("onnx")
    return onnx.ModelProto.FromString(model.SerializeToString())


def initializers(model: Any) -> dict[str, Any]:
    return {t.name: t for t in model.graph.initializer}


def array(model: Any, name: str) -> np.ndarray:
    from onnx import numpy_helper

    return numpy_helper.to_array(initializers(model)[name])


def set_array(model: Any, name: str, value: np.ndarray) -> None:
    """Replace (or add) the initializer ``name``, keeping its place in the list."""
    from onnx import numpy_helper

    tensor = numpy_helper.from_array(np.ascontiguousarray(value), name)
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(tensor)
            return
    model.graph.initializer.append(tensor)


def remove_initializer(model: Any, name: str) -> None:
    kept = [t for t in model.graph.initializer if t.name != name]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    inputs = [i for i in model.graph.input if i.name != name]  # IR < 4 lists weights as inputs
    del model.graph.input[:]
    model.graph.input.extend(inputs)


def consumers(model: Any) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            if name:
                users.setdefault(name, []).append(node)
    return users


def attribute(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def layer_name(node: Any) -> str:
    return node.name or node.input[WEIGHT_INPUT[node.op_type]]


def weight_layers(model: Any) -> list[tuple[Any, str]]:
    """(node, weight name) for each Conv/Gemm/MatMul whose weight is a float initializer
    used by that node alone."""
    onnx = _lazy.require("onnx")
    inits = initializers(model)
    users = consumers(model)
    layers = []
    for node in model.graph.node:
        index = WEIGHT_INPUT.get(node.op_type)
        if index is None or len(node.input) <= index:
            continue
        name = node.input[index]
        tensor = inits.get(name)
        if tensor is None or tensor.data_type != onnx.TensorProto.FLOAT or len(tensor.dims) < 2:
            continue
        if len(users.get(name, [])) == 1:
            layers.append((node, name))
    return layers


def parameters(model: Any) -> int:
    """Elements in the model's initializers (the count a user means by 'parameters')."""
    return sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer)


def finish(model: Any, when: str) -> Any:
    """Stale shapes dropped and re-inferred; onnx's checker run."""
    onnx = _lazy.require("onnx")
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model)
    check(model, when)
    return model
