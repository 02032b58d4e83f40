"""Plan building: constant folding at load within its caps."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgerun.runtime import plan as plan_module
from edgerun.runtime.onnx_reader import parse_model
from edgerun.runtime.plan import Plan


def _weights_from_constant_of_shape(shape, dtype):
    """y = x + ConstantOfShape(shape): weights a model computes instead of storing (onnx's
    light_* models build theirs so)."""
    value = numpy_helper.from_array(np.array([0.5], dtype), "value")
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["w"], value=value),
            helper.make_node("Add", ["x", "w"], ["y"]),
        ],
        "g",
        [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), [1])],
        [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)],
        [numpy_helper.from_array(np.array(shape, np.int64), "shape")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    parsed = parse_model(memoryview(model.SerializeToString()), None)
    return Plan(parsed.graph, parsed.opset_imports)


@pytest.mark.parametrize(
    ("dtype", "folded"),
    # the result's bytes count with the value's type, not the int64 shape's: 3/4 of the cap
    # as float32 is folded (it was left to run time as if it took 1.5 times the cap), and
    # 3/2 of it as float64 is not
    [(np.float32, True), (np.float64, False)],
)
def test_constant_of_shape_is_folded_by_its_result_size(dtype, folded, monkeypatch):
    monkeypatch.setattr(plan_module, "MAX_FOLDED_BYTES", 1 << 20)
    count = 3 * (1 << 20) // 4 // 4  # 3/4 MiB as float32
    plan = _weights_from_constant_of_shape([count], dtype)
    ops = [s.node.op_type for s in plan.steps]
    assert ("ConstantOfShape" not in ops) == folded
    assert ("w" in plan.constants) == folded
    x = np.array([1], dtype)
    np.testing.assert_array_equal(plan.run({"x": x})[0], np.full(count, 1.5, dtype))


def _misaligned_matmuls():
    """y = x @ w + x @ Transpose(v), its file laid out so that w's and v's raw_data are
    misaligned (a name one byte longer moves them along)."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    v = rng.standard_normal((5, 6)).astype(np.float32)
    for pad in range(4):
        graph = helper.make_graph(
            [
                helper.make_node("MatMul", ["x", "w"], ["a"]),
                helper.make_node("Transpose", ["v"], ["vt"], perm=[1, 0]),
                helper.make_node("MatMul", ["x", "vt"], ["b"]),
                helper.make_node("Add", ["a", "b"], ["y"]),
            ],
            "g" + "_" * pad,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])],
            [numpy_helper.from_array(w, "w"), numpy_helper.from_array(v, "v")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        parsed = parse_model(memoryview(model.SerializeToString()), None)
        stored = parsed.graph.initializers
        if not stored["w"].flags.aligned and not stored["v"].flags.aligned:
            return parsed, w, v
    raise AssertionError("no layout put both weights off alignment")


def test_misaligned_weights_are_copied_aligned_in_their_own_layout():
    parsed, w, v = _misaligned_matmuls()
    plan = Plan(parsed.graph, parsed.opset_imports)
    for name in ("w", "vt"):  # vt: the folded Transpose, a transposed view of v
        copy = plan.constants[name]
        assert copy.flags.aligned and not copy.flags.writeable
    assert plan.constants["vt"].flags.f_contiguous  # still v's memory order, as transposed
    x = np.random.default_rng(1).standard_normal((2, 6)).astype(np.float32)
    np.testing.assert_allclose(plan.run({"x": x})[0], x @ w + x @ v.T, rtol=1e-5, atol=1e-5)


def test_constant_of_shape_takes_memory_only_where_a_step_reads_it():
    # folded as a broadcast of its one value; the plan lays it out once where a step reads
    # it (BLAS takes no zero strides) or the graph returns it, and leaves it alone where a
    # load-time pass (BatchNormalization folding) has used it up
    shape = helper.make_tensor("s", TensorProto.INT64, [4], [4, 3, 3, 3])
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["shape"], value=shape),
            helper.make_node("ConstantOfShape", ["shape"], ["w"], value=_half()),
            helper.make_node("ConstantOfShape", ["shape"], ["unread"], value=_half()),
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
        ],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, None),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    parsed = parse_model(memoryview(model.SerializeToString()), None)
    plan = Plan(parsed.graph, parsed.opset_imports)
    assert not plan_module._broadcast(plan.constants["w"])  # read by the Conv, returned
    assert plan_module._broadcast(plan.constants["unread"])  # no memory
    x = np.random.default_rng(0).standard_normal((1, 3, 5, 5)).astype(np.float32)
    y, w = plan.run({"x": x})
    np.testing.assert_array_equal(w, np.full((4, 3, 3, 3), 0.5, np.float32))
    ort = pytest.importorskip("onnxruntime")
    want = ort.InferenceSession(model.SerializeToString()).run(["y"], {"x": x})[0]
    np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)


def _half():
    return numpy_helper.from_array(np.array([0.5], np.float32), "value")
