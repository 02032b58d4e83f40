"""LSTM / GRU / RNN against onnxruntime on attributes the node suite does not cover."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgerun.runtime.registry import resolve

ort = pytest.importorskip("onnxruntime")
rng = np.random.default_rng(0)

INPUTS = {
    "LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
    "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
    "RNN": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
}
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def run_ort(op, inputs, attrs, n_out, opset):
    names = [n if v is not None else "" for n, v in zip(INPUTS[op], inputs, strict=False)]
    outs = [f"y{k}" for k in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
            for n, v in zip(names, inputs, strict=False)
            if v is not None
        ],
        [helper.make_tensor_value_info(o, 1, None) for o in outs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {n: v for n, v in zip(names, inputs, strict=False) if v is not None}
    return sess.run(None, feeds)


def make_inputs(op, T, N, n_in, H, D, *, bias, lens, init, peep, layout):
    g = GATES[op]
    f = np.float32
    X = rng.standard_normal((N, T, n_in) if layout else (T, N, n_in)).astype(f)
    W = rng.standard_normal((D, g * H, n_in)).astype(f) * f(0.5)
    R = rng.standard_normal((D, g * H, H)).astype(f) * f(0.5)
    B = rng.standard_normal((D, 2 * g * H)).astype(f) if bias else None
    L = np.array(lens, dtype=np.int32) if lens else None
    state = (N, D, H) if layout else (D, N, H)
    h0 = rng.standard_normal(state).astype(f) if init else None
    inputs = [X, W, R, B, L, h0]
    if op == "LSTM":
        c0 = rng.standard_normal(state).astype(f) if init else None
        P = rng.standard_normal((D, 3 * H)).astype(f) if peep else None
        inputs += [c0, P]
    while inputs[-1] is None:
        inputs.pop()
    return inputs


CASES = [
    ("LSTM", "forward", {}, dict(bias=True, lens=[5, 3, 1], init=True, peep=True, layout=0)),
    (
        "LSTM",
        "reverse",
        {"clip": 0.7},
        dict(bias=True, lens=[2, 5, 4], init=True, peep=False, layout=0),
    ),
    (
        "LSTM",
        "bidirectional",
        {"input_forget": 1},
        dict(bias=True, lens=[5, 3, 1], init=False, peep=True, layout=0),
    ),
    (
        "LSTM",
        "forward",
        {
            "activations": ["HardSigmoid", "LeakyRelu", "ScaledTanh"],
            "activation_alpha": [0.3, 0.05, 0.9],
            "activation_beta": [0.4, 1.2],
        },
        dict(bias=True, lens=None, init=True, peep=False, layout=0),
    ),
    (
        "GRU",
        "forward",
        {"linear_before_reset": 1},
        dict(bias=True, lens=[5, 3, 1], init=True, peep=False, layout=0),
    ),
    ("GRU", "bidirectional", {}, dict(bias=True, lens=[4, 5, 2], init=True, peep=False, layout=0)),
    (
        "GRU",
        "reverse",
        {"linear_before_reset": 1, "clip": 0.5},
        dict(bias=True, lens=[1, 5, 3], init=False, peep=False, layout=0),
    ),
    (
        "RNN",
        "bidirectional",
        {"activations": ["Relu", "Affine"], "activation_alpha": [0.5], "activation_beta": [0.1]},
        dict(bias=True, lens=[5, 2, 3], init=True, peep=False, layout=0),
    ),
    ("RNN", "reverse", {}, dict(bias=False, lens=None, init=False, peep=False, layout=0)),
]


@pytest.mark.parametrize(("op", "direction", "attrs", "shape"), CASES)
def test_against_onnxruntime(op, direction, attrs, shape):
    D = 2 if direction == "bidirectional" else 1
    H = 4
    inputs = make_inputs(op, 5, 3, 3, H, D, **shape)
    attrs = {"hidden_size": H, "direction": direction, "layout": shape["layout"], **attrs}
    n_out = 3 if op == "LSTM" else 2
    expected = run_ort(op, inputs, attrs, n_out, opset=14)
    got = resolve("", op, 14).fn(*inputs, **attrs)
    assert len(got) == n_out
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_batchwise_layout_is_a_transpose(op):
    # onnxruntime's CPU kernels refuse layout=1, so compare with our own layout=0
    inputs = make_inputs(
        op, 5, 3, 3, 4, 2, bias=True, lens=[5, 2, 4], init=True, peep=True, layout=0
    )
    attrs = {"hidden_size": 4, "direction": "bidirectional"}
    fn = resolve("", op, 14).fn
    seq = fn(*inputs, **attrs)
    batchwise = [np.swapaxes(inputs[0], 0, 1), *inputs[1:5]]
    batchwise += [np.swapaxes(s, 0, 1) for s in inputs[5:7]] + inputs[7:]
    got = fn(*batchwise, **attrs, layout=1)
    np.testing.assert_allclose(got[0], seq[0].transpose(2, 0, 1, 3))
    for g, e in zip(got[1:], seq[1:], strict=True):
        np.testing.assert_allclose(g, np.swapaxes(e, 0, 1))
