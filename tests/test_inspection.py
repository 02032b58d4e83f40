"""inspect's counts against onnx's own: ops, parameters, MACs from onnx's shape inference."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import onnx
import pytest
from onnx import numpy_helper

from edgerun.inspection import inspect_model


def _batch_one(model: onnx.ModelProto) -> onnx.ModelProto:
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for v in model.graph.input:
        for d in v.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.dim_value = 1
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def onnx_macs(model: onnx.ModelProto) -> int:
    """MACs from onnx's shapes: output elements times the reduction length of each op."""
    inferred = _batch_one(model)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    }
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    total = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            total += math.prod(shapes[node.output[0]]) * math.prod(shapes[node.input[1]][1:])
        elif node.op_type == "Gemm":
            a = shapes[node.input[0]]
            total += math.prod(shapes[node.output[0]]) * (a[0] if attrs.get("transA") else a[1])
        elif node.op_type == "MatMul":
            total += math.prod(shapes[node.output[0]]) * shapes[node.input[0]][-1]
    return total


@pytest.mark.parametrize("name", ["tiny-cnn", "tiny-mlp"])
def test_counts_match_onnx(name: str, example_paths: dict[str, Path]) -> None:
    path = example_paths[name]
    model = onnx.load(path)
    report = inspect_model(path)
    assert report.op_histogram == dict(Counter(n.op_type for n in model.graph.node))
    arrays = [numpy_helper.to_array(t) for t in model.graph.initializer]
    assert report.parameters == sum(a.size for a in arrays)
    assert report.parameter_bytes == sum(a.nbytes for a in arrays)
    assert report.macs == onnx_macs(model) > 0
    assert report.macs_unknown == []
    assert report.file_bytes == path.stat().st_size
    assert [i["name"] for i in report.inputs] == [i.name for i in model.graph.input]
    assert report.opsets == {"ai.onnx": model.opset_import[0].version}
