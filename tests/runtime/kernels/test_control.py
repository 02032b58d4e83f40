"""Control-flow kernels against onnxruntime on cases the node suite does not cover."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

import edgerun
from edgerun.errors import ModelFormatError
from edgerun.runtime import budget
from edgerun.runtime.registry import resolve
from tests.runtime.onnx_backend import EdgerunBackend

ort = pytest.importorskip("onnxruntime")
if resolve("", "Add", 9) is None or resolve("", "Identity", 1) is None:
    pytest.skip("the bodies here need Add and Identity kernels", allow_module_level=True)
rng = np.random.default_rng(0)
F = TensorProto.FLOAT


def _vi(name, elem=F, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def both(model, feeds):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    got = EdgerunBackend.prepare(model).run(feeds)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=1e-6)


def _accumulate_body(shape):
    # state + x -> (state', y=state') : a running sum that also reads an outer value "bias"
    return helper.make_graph(
        [
            helper.make_node("Add", ["s", "x"], ["t"]),
            helper.make_node("Add", ["t", "bias"], ["s_out"]),
            helper.make_node("Identity", ["s_out"], ["y"]),
        ],
        "body",
        [_vi("s", F, shape), _vi("x", F, shape)],
        [_vi("s_out", F, shape), _vi("y", F, shape)],
    )


def _model(node, inputs, outputs, opset, initializer=()):
    graph = helper.make_graph([node], "g", inputs, outputs, initializer=list(initializer))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize("directions", [[0], [1]])
def test_scan8_sequence_lens(directions):
    node = helper.make_node(
        "Scan",
        ["lens", "s0", "xs"],
        ["s", "ys"],
        body=_accumulate_body([2]),
        num_scan_inputs=1,
        directions=directions,
    )
    bias = helper.make_tensor("bias", F, [2], [0.5, -1.0])
    model = _model(
        node,
        [_vi("lens", TensorProto.INT64, [3]), _vi("s0", F, [3, 2]), _vi("xs", F, [3, 4, 2])],
        [_vi("s"), _vi("ys")],
        8,
        [bias],
    )
    feeds = {
        "lens": np.array([4, 2, 1], np.int64),
        "s0": rng.standard_normal((3, 2)).astype(np.float32),
        "xs": rng.standard_normal((3, 4, 2)).astype(np.float32),
    }
    both(model, feeds)


def test_scan9_axes_and_directions():
    node = helper.make_node(
        "Scan",
        ["s0", "xs"],
        ["s", "ys"],
        body=_accumulate_body([2]),
        num_scan_inputs=1,
        scan_input_axes=[1],
        scan_input_directions=[1],
        scan_output_axes=[-1],
        scan_output_directions=[1],
    )
    bias = helper.make_tensor("bias", F, [2], [0.5, -1.0])
    model = _model(
        node, [_vi("s0", F, [2]), _vi("xs", F, [2, 5])], [_vi("s"), _vi("ys")], 16, [bias]
    )
    feeds = {
        "s0": rng.standard_normal(2).astype(np.float32),
        "xs": rng.standard_normal((2, 5)).astype(np.float32),
    }
    both(model, feeds)


@pytest.mark.parametrize(("trips", "cond"), [(5, True), (0, True), (5, False), (3, True)])
def test_loop_trip_count_and_cond(trips, cond):
    # stops early once the running sum passes 2.5; scan output y stacks each iteration's sum
    body = helper.make_graph(
        [
            helper.make_node("Cast", ["i"], ["fi"], to=F),
            helper.make_node("Add", ["acc", "fi"], ["acc_out"]),
            helper.make_node("Less", ["acc_out", "limit"], ["c_out"]),
            helper.make_node("Identity", ["acc_out"], ["y"]),
        ],
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("c", TensorProto.BOOL, []), _vi("acc", F, [])],
        [_vi("c_out", TensorProto.BOOL, []), _vi("acc_out", F, []), _vi("y", F, [])],
    )
    node = helper.make_node("Loop", ["M", "cond", "a0"], ["acc", "ys"], body=body)
    limit = helper.make_tensor("limit", F, [], [2.5])
    model = _model(
        node,
        [_vi("M", TensorProto.INT64, []), _vi("cond", TensorProto.BOOL, []), _vi("a0", F, [])],
        [_vi("acc"), _vi("ys")],
        13,
        [limit],
    )
    feeds = {
        "M": np.array(trips, np.int64),
        "cond": np.array(cond),
        "a0": np.array(0.0, np.float32),
    }
    both(model, feeds)


def test_loop_with_an_absurd_trip_count_is_stopped_by_the_budget(tmp_path: Path) -> None:
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Identity", ["row"], ["scan"]),
        ],
        "body",
        [_vi("i", TensorProto.INT64, []), _vi("cond_in", TensorProto.BOOL, [])],
        [_vi("cond_out", TensorProto.BOOL, []), _vi("scan", F, [1024])],
    )
    loop = helper.make_node("Loop", ["M", ""], ["ys"], body=body, name="forever")
    graph = helper.make_graph(
        [loop],
        "g",
        [_vi("row", F, [1024])],
        [_vi("ys", F, None)],
        [helper.make_tensor("M", TensorProto.INT64, [], [1 << 40])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "loop.onnx"
    path.write_bytes(model.SerializeToString())
    session = edgerun.load(path, backend="numpy")
    with budget.limited(1 << 20), pytest.raises(ModelFormatError, match="memory budget"):
        session.run({"row": np.ones(1024, np.float32)})  # 4 KiB a step: stops at ~128


def test_an_allocation_the_os_refuses_names_the_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    from edgerun.errors import ResourceLimitError

    node = helper.make_node("Identity", ["x"], ["y"], name="copy")
    graph = helper.make_graph([node], "g", [_vi("x", F, [4])], [_vi("y", F, [4])])
    path = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path.write_bytes(model.SerializeToString())
    session = edgerun.load(path, backend="numpy")
    plan = session._impl.plan

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise MemoryError

    refusing = [replace(s, kernel=replace(s.kernel, fn=refuse)) for s in plan.steps]
    monkeypatch.setattr(plan, "steps", type(plan.steps)(refusing))
    with pytest.raises(ResourceLimitError, match=r"node 'copy' \(Identity\): out of memory"):
        session.run({"x": np.ones(4, np.float32)})
