"""Shape inference against onnx's own, on the example models and single ops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgerun.runtime.onnx_reader import parse_model, read_onnx
from edgerun.runtime.passes.shape_inference import broadcast, infer_shapes


def _onnx_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    out = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        out[v.name] = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims
        )
    return out


@pytest.mark.parametrize("name", ["tiny-cnn", "tiny-mlp"])
def test_examples_match_onnx(name: str, example_paths: dict[str, Path]) -> None:
    proto = onnx.load(example_paths[name])
    ours = infer_shapes(read_onnx(example_paths[name]).graph)
    for value, shape in _onnx_shapes(proto).items():
        assert ours[value] == shape, value


def _single(
    op: str, inputs: list[tuple[str, list]], attrs: dict, inits: list | None = None
) -> onnx.ModelProto:
    node = helper.make_node(
        op, [n for n, _ in inputs] + [t.name for t in inits or []], ["y"], **attrs
    )
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits or [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ints(name: str, values: list[int]) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.INT64, [len(values)], values)


SINGLE_OPS = {
    "conv_strided_same": (
        "Conv",
        [("x", [1, 3, 17, 17]), ("w", [8, 3, 3, 3])],
        {"strides": [2, 2], "auto_pad": "SAME_UPPER"},
        None,
    ),
    "conv_pads_dilated": (
        "Conv",
        [("x", [2, 4, 20, 20]), ("w", [6, 2, 3, 3])],
        {"pads": [1, 2, 1, 2], "dilations": [2, 2], "group": 2},
        None,
    ),
    "conv_transpose": (
        "ConvTranspose",
        [("x", [1, 8, 7, 7]), ("w", [8, 4, 4, 4])],
        {"strides": [2, 2], "pads": [1, 1, 1, 1]},
        None,
    ),
    "maxpool_ceil": (
        "MaxPool",
        [("x", [1, 3, 10, 10])],
        {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
        None,
    ),
    "gemm_trans": ("Gemm", [("a", [7, 5]), ("b", [3, 7])], {"transA": 1, "transB": 1}, None),
    "matmul_batched": ("MatMul", [("a", [2, 1, 4, 5]), ("b", [3, 5, 6])], {}, None),
    "reshape": ("Reshape", [("x", [2, 3, 4])], {}, [_ints("shape", [0, -1])]),
    "transpose": ("Transpose", [("x", [2, 3, 4])], {"perm": [2, 0, 1]}, None),
    "concat": ("Concat", [("a", [2, 3]), ("b", [2, 5])], {"axis": -1}, None),
    "unsqueeze": ("Unsqueeze", [("x", [3, 4])], {}, [_ints("axes", [0, 3])]),
    "reduce_mean": ("ReduceMean", [("x", [2, 3, 4])], {"axes": [1], "keepdims": 0}, None),
    "broadcast_add": ("Add", [("a", [3, 1, 5]), ("b", [4, 1])], {}, None),
    # data-sized results: what the size planner checks against the memory budget
    "constant_of_shape": ("ConstantOfShape", [], {}, [_ints("shape", [2, 3, 5])]),
    "expand": ("Expand", [("x", [3, 1])], {}, [_ints("shape", [2, 1, 4])]),
    "tile": ("Tile", [("x", [2, 3])], {}, [_ints("repeats", [3, 2])]),
    "pad": ("Pad", [("x", [1, 4])], {}, [_ints("pads", [0, 1, 2, 3])]),
}


@pytest.mark.parametrize("case", sorted(SINGLE_OPS))
def test_single_ops_match_onnx(case: str) -> None:
    op, inputs, attrs, inits = SINGLE_OPS[case]
    model = _single(op, inputs, attrs, inits)
    ours = infer_shapes(parse_model(memoryview(model.SerializeToString()), None).graph)
    assert ours["y"] == _onnx_shapes(model)["y"]


def test_broadcast_keeps_symbols_and_refuses_mismatches() -> None:
    assert broadcast(("batch", 1, 5), (3, 1)) == ("batch", 3, 5)
    with pytest.raises(ValueError):
        broadcast((2, 3), (4, 3))


@pytest.mark.parametrize(
    ("start", "limit", "delta"), [(0, 10, 3), (5, 1, -2), (0, 1, 0.25), (3, 3, 1)]
)
def test_range_length_matches_numpy(start: float, limit: float, delta: float) -> None:
    scalars = [helper.make_tensor(n, TensorProto.FLOAT, [], [v]) for n, v in
               (("a", start), ("b", limit), ("d", delta))]  # fmt: skip
    node = helper.make_node("Range", ["a", "b", "d"], ["y"])
    graph = helper.make_graph([node], "range", [], [helper.make_tensor_value_info("y", 1, None)])
    graph.initializer.extend(scalars)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ours = infer_shapes(parse_model(memoryview(model.SerializeToString()), None).graph)
    assert ours["y"] == (len(np.arange(start, limit, delta)),)


def test_fused_conv_is_shaped_like_conv_and_unknown_stays_unknown() -> None:
    node = helper.make_node(
        "FusedConv", ["x", "w"], ["y"], domain="com.microsoft", activation="Relu", pads=[1, 1, 1, 1]
    )
    graph = helper.make_graph(
        [node],
        "fused",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    parsed = parse_model(memoryview(model.SerializeToString()), None).graph
    assert infer_shapes(parsed)["y"] == (1, 4, 8, 8)
    assert infer_shapes(parsed, {"x": None})["y"] is None  # type: ignore[dict-item]


def test_values_without_a_rule_take_the_models_annotations() -> None:
    # an op of an unknown domain: its outputs' shapes come from value_info, where a graph
    # output's own annotation wins over an entry of value_info, and an untyped one counts
    # for nothing
    nodes = [
        helper.make_node("Mystery", ["x"], ["a", "b", "c"], domain="org.example"),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "annotated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [9]),  # Relu's rule wins
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 4]),
            onnx.ValueInfoProto(name="c"),  # no type at all
        ],
        value_info=[
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, "n"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [4]),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, [5]),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("org.example", 1)]
    )
    shapes = infer_shapes(parse_model(memoryview(model.SerializeToString()), None).graph)
    found = (shapes["a"], shapes["b"], shapes["c"], shapes["y"])
    assert found == ((3, "n"), (4, 4), (5,), (3, "n"))
