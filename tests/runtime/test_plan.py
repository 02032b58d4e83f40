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
