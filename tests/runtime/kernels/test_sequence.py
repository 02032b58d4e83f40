"""Sequence and optional kernels against onnxruntime, on ops the node suite barely covers."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from tests.runtime.onnx_backend import EdgerunBackend

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def both(nodes, inputs, feeds, outputs):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, feeds)
    got = EdgerunBackend.prepare(model).run(feeds)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.shape, w.shape)
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("pos", [0, 1, -1, -3])
@pytest.mark.parametrize("new_axis", [0, 1])
def test_construct_erase_at_concat(pos, new_axis):
    nodes = [
        helper.make_node("SequenceConstruct", ["a", "b", "c"], ["seq"]),
        helper.make_node("SequenceErase", ["seq", "pos"], ["erased"]),
        helper.make_node("SequenceAt", ["seq", "pos"], ["at"]),
        helper.make_node("SequenceLength", ["erased"], ["n"]),
        helper.make_node("ConcatFromSequence", ["erased"], ["cat"], axis=-1, new_axis=new_axis),
    ]
    inputs = [("a", F, [2, 3]), ("b", F, [2, 3]), ("c", F, [2, 3]), ("pos", I64, [])]
    feeds = {n: rng.standard_normal((2, 3)).astype(np.float32) for n in "abc"}
    feeds["pos"] = np.array(pos, np.int64)
    both(nodes, inputs, feeds, [("at", F), ("n", I64), ("cat", F)])


@pytest.mark.parametrize("split", [None, 2, [1, 4]])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_split_to_sequence(split, keepdims):
    if split is not None and not keepdims:
        pytest.skip(
            "keepdims is ignored once split is given; onnxruntime squeezes anyway and fails"
        )
    names = ["x"] if split is None else ["x", "split"]
    nodes = [
        helper.make_node("SplitToSequence", names, ["seq"], axis=1, keepdims=keepdims),
        helper.make_node("SequenceInsert", ["seq", "x"], ["seq2"]),
        helper.make_node("SequenceLength", ["seq2"], ["n"]),
        helper.make_node("SequenceAt", ["seq2", "last"], ["tail"]),
        helper.make_node("SequenceAt", ["seq2", "first"], ["head"]),
    ]
    feeds = {
        "x": rng.standard_normal((3, 5)).astype(np.float32),
        "last": np.array(-2, np.int64),
        "first": np.array(0, np.int64),
    }
    inputs = [("x", F, [3, 5]), ("last", I64, []), ("first", I64, [])]
    if split is not None:
        feeds["split"] = np.array(split, np.int64)
        inputs.append(("split", I64, list(np.shape(split))))
    both(nodes, inputs, feeds, [("n", I64), ("tail", F), ("head", F)])
