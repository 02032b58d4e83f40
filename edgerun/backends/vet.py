"""edgerun's own checks, run on a model before another runtime is handed it.

onnxruntime and LiteRT read files their own way: onnxruntime folds a 152-byte
ConstantOfShape model into hundreds of MB at load and follows its own external-data rules;
LiteRT has crashed on an 8-byte file. So the model first goes through edgerun's reader
(paths, external data, nesting, function expansion, declared inputs) and its size planner
(every result whose shape the graph fixes, against the memory budget); only a model that
passes reaches the other runtime.
"""

from __future__ import annotations

import numpy as np

from edgerun.backends.select import ModelSource
from edgerun.errors import ModelFormatError, ResourceLimitError
from edgerun.runtime import budget
from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.graph import Graph, Node

# ops whose output takes the element type of their first input
_SAME_TYPE = ("Expand", "Tile", "Pad", "Range")


def vet(source: ModelSource) -> None:
    """Raise the error edgerun's own runtime would raise at load; return if the model is sound."""
    from edgerun.modelfile import bundle_model, open_model

    model_file = bundle_model(source.bundle) if source.bundle else open_model(source.path)
    if model_file.format == "onnx":
        check_sizes(model_file.model.graph)


def check_sizes(graph: Graph) -> None:
    """Refuse a node whose result, with the shape the graph fixes, is over the budget."""
    from edgerun.runtime.passes.shape_inference import infer_shapes

    shapes = infer_shapes(graph)
    dtypes = _dtypes(graph)
    for node in graph.nodes:
        for out in node.outputs:
            shape = shapes.get(out)
            if not out or shape is None or not all(isinstance(d, int) for d in shape):
                continue
            dtype = _output_dtype(node, dtypes)
            dtypes[out] = dtype
            try:
                budget.check([int(d) for d in shape if isinstance(d, int)], dtype, "its result")
            except ResourceLimitError as exc:
                raise ModelFormatError(f"node {node.name!r} ({node.op_type}): {exc}") from exc


def _dtypes(graph: Graph) -> dict[str, np.dtype]:
    found = {name: array.dtype for name, array in graph.initializers.items()}
    for value in graph.real_inputs:
        if value.type is not None and value.type.kind == "tensor":
            try:
                found[value.name] = np.dtype(runtime_dtype(value.type.elem_type))
            except (KeyError, TypeError, ValueError):
                continue
    return found


def _output_dtype(node: Node, dtypes: dict[str, np.dtype]) -> np.dtype:
    """The output's element type where it is plain to see; else one byte, the least."""
    if node.op_type == "ConstantOfShape":
        value = node.attr("value")
        return np.dtype(np.float32) if value is None else value.dtype
    if node.op_type in _SAME_TYPE and node.inputs and node.inputs[0] in dtypes:
        return dtypes[node.inputs[0]]
    return np.dtype(np.uint8)
