"""Attention family against onnx's reference evaluator, on settings the node suite skips."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from edgerun.runtime.kernels.attention import mat_mul_softmax_1
from edgerun.runtime.registry import resolve

rng = np.random.default_rng(0)

INPUTS = {
    "Attention": ["Q", "K", "V", "attn_mask", "past_key", "past_value", "nonpad_kv_seqlen"],
    "LinearAttention": ["query", "key", "value", "past_state", "decay", "beta"],
}


def reference(op, inputs, attrs, n_out, opset):
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
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {n: v for n, v in zip(names, inputs, strict=False) if v is not None}
    return ReferenceEvaluator(model).run(None, feeds)


def ours(op, inputs, attrs, opset):
    out = resolve("", op, opset).fn(*inputs, **attrs)
    return out if isinstance(out, tuple) else (out,)


def randn(*shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


ATTENTION = [
    # (opset, 3-D?, batch, q_heads, kv_heads, q_len, kv_len, past, mask, nonpad, attrs)
    (23, True, 2, 4, 2, 3, 5, 2, "bool2", False, {"is_causal": 1}),
    (23, False, 1, 6, 3, 4, 4, 3, "float4", False, {"qk_matmul_output_mode": 2}),
    (
        23,
        False,
        2,
        2,
        1,
        1,
        1,
        6,
        None,
        False,
        {"is_causal": 1, "softcap": 2.0, "qk_matmul_output_mode": 1},
    ),
    (23, False, 2, 4, 4, 3, 3, 0, "float3", False, {"softmax_precision": 11}),
    (24, False, 3, 4, 2, 2, 8, 0, "bool_short", True, {"is_causal": 1}),
    (24, False, 2, 2, 2, 4, 6, 0, None, True, {"qk_matmul_output_mode": 3}),
    (25, False, 2, 4, 2, 3, 7, 0, "float3", True, {"left_window_size": 2, "is_causal": 1}),
    (25, True, 2, 2, 1, 4, 4, 2, None, False, {"left_window_size": 1, "right_window_size": 1}),
]


def _mask(kind, batch, heads, q_len, total):
    if kind is None:
        return None
    if kind == "bool2":
        return rng.random((q_len, total)) > 0.3
    if kind == "bool_short":
        return rng.random((batch, 1, q_len, total - 2)) > 0.3
    if kind == "float3":
        return randn(heads, q_len, total)
    return randn(batch, heads, q_len, total)


@pytest.mark.parametrize("case", ATTENTION, ids=[str(i) for i in range(len(ATTENTION))])
def test_attention_matches_reference(case):
    opset, packed, b, hq, hkv, q_len, kv_len, past, mask, nonpad, attrs = case
    attrs = dict(attrs)
    q, k, v = randn(b, hq, q_len, 8), randn(b, hkv, kv_len, 8), randn(b, hkv, kv_len, 4)
    if packed:
        attrs.update(q_num_heads=hq, kv_num_heads=hkv)
        q, k, v = (x.transpose(0, 2, 1, 3).reshape(b, x.shape[2], -1) for x in (q, k, v))
    pk = randn(b, hkv, past, 8) if past else None
    pv = randn(b, hkv, past, 4) if past else None
    lens = rng.integers(kv_len // 2, kv_len + 1, size=b).astype(np.int64) if nonpad else None
    inputs = [q, k, v, _mask(mask, b, hq, q_len, past + kv_len), pk, pv]
    if opset >= 24:
        inputs.append(lens)
    want = reference("Attention", inputs, attrs, 4, opset)
    got = ours("Attention", inputs, attrs, opset)
    for w, g in zip(want, got, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
@pytest.mark.parametrize("heads", [(2, 2), (4, 2)])
def test_linear_attention_matches_reference(rule, heads):
    hq, hkv = heads
    b, t, dk, dv = 2, 5, 4, 3
    q, k, v = randn(b, t, hq * dk), randn(b, t, hkv * dk), randn(b, t, hkv * dv)
    k /= np.float32(4)
    decay = -np.abs(randn(b, t, hkv * dk)) if rule.startswith("gated") else None
    beta = rng.random((b, t, 1)).astype(np.float32) if "delta" in rule else None
    inputs = [q, k, v, randn(b, hkv, dk, dv), decay, beta]
    attrs = {"q_num_heads": hq, "kv_num_heads": hkv, "update_rule": rule}
    want = reference("LinearAttention", inputs, attrs, 2, 27)
    got = ours("LinearAttention", inputs, attrs, 27)
    for w, g in zip(want, got, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_attention_never_writes_its_inputs():
    q, k, v = randn(1, 2, 3, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4)
    for x in (q, k, v):
        x.flags.writeable = False
    y, *_ = ours("Attention", [q, k, v], {"is_causal": 1}, 23)
    assert y.shape == (1, 2, 3, 4)


def test_qk_output_mode_0_is_the_raw_product_even_with_softcap():
    # onnx's reference evaluator returns the softcapped scores here; the spec and the
    # function body say mode 0 is the raw (scaled) Q @ K^T
    q, k, v = randn(1, 2, 3, 4), randn(1, 2, 5, 4), randn(1, 2, 5, 4)
    *_, qk = ours("Attention", [q, k, v], {"softcap": 0.5}, 23)
    np.testing.assert_allclose(qk, q @ k.transpose(0, 1, 3, 2) / 2, rtol=1e-6, atol=1e-6)


def _scores_softmax(a, b, mask, scale, divide):
    """MatMulSoftmax's definition, in float64."""
    s = np.matmul(a.astype(np.float64), b.astype(np.float64))
    s = s / scale if divide else s * scale
    if mask is not None:
        s = s + mask
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


MATMUL_SOFTMAX = {
    "heads, key mask": ((1, 4, 6, 5), (1, 4, 5, 7), (1, 1, 1, 7), np.float32),
    "heads, square mask": ((2, 3, 7, 5), (2, 3, 5, 7), (1, 1, 7, 7), np.float32),
    "full-size mask": ((2, 3, 6, 5), (2, 3, 5, 7), (2, 3, 6, 7), np.float32),
    "1-D mask": ((3, 6, 5), (3, 5, 7), (7,), np.float32),
    "0-D mask": ((6, 5), (5, 7), (), np.float32),
    "no mask": ((6, 5), (5, 7), None, np.float32),
    "broadcast batch": ((2, 1, 6, 5), (1, 3, 5, 7), (1, 1, 6, 7), np.float32),
    "float64": ((2, 6, 5), (2, 5, 7), (1, 6, 7), np.float64),
    "float16 (unfused)": ((2, 6, 5), (2, 5, 7), (1, 6, 7), np.float16),
    "mask widens (unfused)": ((1, 3, 6, 5), (1, 3, 5, 7), (2, 3, 6, 7), np.float32),
    "vector times matrix (unfused)": ((5,), (2, 5, 7), (7,), np.float32),
}


@pytest.mark.parametrize("divide", [0, 1])
@pytest.mark.parametrize("case", MATMUL_SOFTMAX.values(), ids=MATMUL_SOFTMAX.keys())
def test_mat_mul_softmax_is_the_scaled_masked_softmax(case, divide):
    a_shape, b_shape, mask_shape, dtype = case
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    mask = None if mask_shape is None else (rng.standard_normal(mask_shape) * 2).astype(dtype)
    kept = [x.copy() for x in (a, b) + (() if mask is None else (mask,))]
    got = mat_mul_softmax_1(a, b, mask, scale=0.4, divide=divide)
    want = _scores_softmax(a, b, mask, np.float64(dtype(0.4)), divide)
    assert got.dtype == dtype and got.shape == want.shape
    tol = 2e-3 if dtype == np.float16 else 1e-6
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    for x, before in zip((a, b, mask), kept, strict=False):
        np.testing.assert_array_equal(x, before)  # inputs untouched
