"""Attention family: Attention, RotaryEmbedding, SwiGLU, LinearAttention, FlexAttention."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.kernels.activation import softmax_13
from edgerun.runtime.kernels.linalg import mat_mul_1, ones
from edgerun.runtime.registry import kernel

# -- helpers --------------------------------------------------------------------------------


def _compute_dtype(dtype):
    # float64 stays; float16 and the ml_dtypes floats (kind "V") compute in float32 (BLAS)
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _float(x):
    return x.astype(_compute_dtype(x.dtype), copy=False)


def _split_heads(x, num_heads, name):
    # (batch, seq, heads * size) -> (batch, heads, seq, size), a view
    if num_heads is None or num_heads <= 0 or x.shape[-1] % num_heads:
        raise ValueError(f"{name} of shape {x.shape} needs a num_heads dividing its last axis")
    b, s, hidden = x.shape
    return x.reshape(b, s, num_heads, hidden // num_heads).transpose(0, 2, 1, 3)


def _merge_heads(x):
    b, h, s, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def _softmax(x):
    # Stable softmax over the last axis; a row that is all -inf gives zeros, not NaN.
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), x.dtype.type(0), m)
    e = np.subtract(x, m)
    np.exp(e, out=e)
    s = np.sum(e, axis=-1, keepdims=True)
    e /= np.where(s == 0, x.dtype.type(1), s)
    return e


def _grouped_matmul(a, b):
    # a: (B, Hq, M, K), b: (B, Hkv, K, N) with Hq = G * Hkv; query head h reads kv head h // G.
    # Grouping the query heads avoids materialising repeated K/V.
    batch, hq, m, k = a.shape
    hkv = b.shape[1]
    if hq == hkv:
        return np.matmul(a, b)
    if hkv == 0 or hq % hkv:
        raise ValueError(f"{hq} query heads are not a multiple of {hkv} key/value heads")
    out = np.matmul(a.reshape(batch, hkv, hq // hkv * m, k), b)
    return out.reshape(batch, hq, m, b.shape[-1])


def _precision_round(x, softmax_precision):
    # Cast to the requested softmax type (rounding to it), then compute in a BLAS float.
    if softmax_precision is None:
        return x
    return _float(x.astype(runtime_dtype(int(softmax_precision))))


# -- Attention --------------------------------------------------------------------------------


def _allowed(q_len, kv_len, offset, is_causal, left, right):
    # Structural mask (causal frontier and sliding window), bottom-right aligned at `offset`
    # (a scalar, or an int array shaped (batch, 1, 1, 1)); None when nothing is masked.
    if not is_causal and left < 0 and right < 0:
        return None
    diff = np.arange(q_len)[:, None] + offset - np.arange(kv_len)  # query position - key
    allowed = np.ones(np.shape(diff), dtype=bool)
    if is_causal:
        allowed &= diff >= 0
    if left >= 0:
        allowed &= diff <= left
    if right >= 0:
        allowed &= -diff <= right
    return allowed


def _attention_bias(attn_mask, nonpad, q_len, kv_len, past_len, dtype, is_causal, left, right):
    bias = None
    if attn_mask is not None:
        pad = kv_len - attn_mask.shape[-1]
        if pad < 0:
            raise ValueError(f"attn_mask's last axis {attn_mask.shape[-1]} exceeds {kv_len} keys")
        if attn_mask.dtype == np.bool_:
            bias = np.where(attn_mask, dtype.type(0), dtype.type(-np.inf))
        else:
            bias = attn_mask.astype(dtype)
        if pad:
            widths = [(0, 0)] * (bias.ndim - 1) + [(0, pad)]
            bias = np.pad(bias, widths, constant_values=-np.inf)
    if nonpad is not None:
        offset = nonpad.astype(np.int64).reshape(-1, 1, 1, 1) - q_len
    else:
        offset = past_len
    allowed = _allowed(q_len, kv_len, offset, is_causal, left, right)
    if nonpad is not None:
        valid = np.arange(kv_len) < nonpad.astype(np.int64).reshape(-1, 1, 1, 1)
        allowed = valid if allowed is None else allowed & valid
    if allowed is not None:
        structural = np.where(allowed, dtype.type(0), dtype.type(-np.inf))
        bias = structural if bias is None else bias + structural
    return bias


def _attention(
    Q,
    K,
    V,
    attn_mask=None,
    past_key=None,
    past_value=None,
    nonpad_kv_seqlen=None,
    *,
    is_causal=0,
    kv_num_heads=None,
    q_num_heads=None,
    qk_matmul_output_mode=0,
    scale=None,
    softcap=0.0,
    softmax_precision=None,
    left_window_size=-1,
    right_window_size=-1,
):
    if not Q.ndim == K.ndim == V.ndim or Q.ndim not in (3, 4):
        raise ValueError(f"Q, K, V must all be 3-D or all 4-D, got {Q.shape}, {K.shape}, {V.shape}")
    if (past_key is None) != (past_value is None):
        raise ValueError("past_key and past_value must be given together")
    if nonpad_kv_seqlen is not None and past_key is not None:
        raise ValueError("nonpad_kv_seqlen cannot be combined with past_key/past_value")
    packed = Q.ndim == 3
    if packed:
        Q = _split_heads(Q, q_num_heads, "Q")
        K = _split_heads(K, kv_num_heads, "K")
        V = _split_heads(V, kv_num_heads, "V")
    present_key = K if past_key is None else np.concatenate((past_key, K), axis=2)
    present_value = V if past_value is None else np.concatenate((past_value, V), axis=2)
    dtype = _compute_dtype(Q.dtype)
    q_len, kv_len = Q.shape[2], present_key.shape[2]
    if scale is None:
        scale = 1.0 / np.sqrt(Q.shape[3])
    q = np.multiply(Q.astype(dtype, copy=False), dtype.type(scale), order="C")
    scores = _grouped_matmul(q, np.swapaxes(present_key, -1, -2).astype(dtype, copy=False))
    raw = scores
    if softcap > 0:
        scores = np.tanh(scores / dtype.type(softcap)) * dtype.type(softcap)
    past_len = 0 if past_key is None else past_key.shape[2]
    bias = _attention_bias(
        attn_mask,
        nonpad_kv_seqlen,
        q_len,
        kv_len,
        past_len,
        dtype,
        is_causal,
        left_window_size,
        right_window_size,
    )
    biased = scores if bias is None else scores + bias
    probs = _softmax(_precision_round(biased, softmax_precision))
    if bias is not None:
        # A row with no attendable key (decided on the bias, not on possibly-NaN logits) is 0.
        empty = np.isneginf(np.max(bias, axis=-1, keepdims=True))
        if empty.any():
            probs = np.where(empty, probs.dtype.type(0), probs)
    probs = probs.astype(dtype, copy=False)
    y = _grouped_matmul(probs, present_value.astype(dtype, copy=False)).astype(Q.dtype)
    qk = (raw, scores, biased, probs)[qk_matmul_output_mode]
    qk = np.broadcast_to(qk, scores.shape).astype(Q.dtype, copy=False)
    return (_merge_heads(y) if packed else y), present_key, present_value, qk


def _check_mode(qk_matmul_output_mode):
    if qk_matmul_output_mode not in (0, 1, 2, 3):
        raise ValueError(f"qk_matmul_output_mode must be 0..3, got {qk_matmul_output_mode}")


@kernel("Attention", since=23)
def attention_23(
    Q,
    K,
    V,
    attn_mask=None,
    past_key=None,
    past_value=None,
    *,
    is_causal=0,
    kv_num_heads=None,
    q_num_heads=None,
    qk_matmul_output_mode=0,
    scale=None,
    softcap=0.0,
    softmax_precision=None,
):
    _check_mode(qk_matmul_output_mode)
    return _attention(
        Q,
        K,
        V,
        attn_mask,
        past_key,
        past_value,
        is_causal=is_causal,
        kv_num_heads=kv_num_heads,
        q_num_heads=q_num_heads,
        qk_matmul_output_mode=qk_matmul_output_mode,
        scale=scale,
        softcap=softcap,
        softmax_precision=softmax_precision,
    )


@kernel("Attention", since=24)
def attention_24(
    Q,
    K,
    V,
    attn_mask=None,
    past_key=None,
    past_value=None,
    nonpad_kv_seqlen=None,
    *,
    is_causal=0,
    kv_num_heads=None,
    q_num_heads=None,
    qk_matmul_output_mode=0,
    scale=None,
    softcap=0.0,
    softmax_precision=None,
):
    _check_mode(qk_matmul_output_mode)
    return _attention(
        Q,
        K,
        V,
        attn_mask,
        past_key,
        past_value,
        nonpad_kv_seqlen,
        is_causal=is_causal,
        kv_num_heads=kv_num_heads,
        q_num_heads=q_num_heads,
        qk_matmul_output_mode=qk_matmul_output_mode,
        scale=scale,
        softcap=softcap,
        softmax_precision=softmax_precision,
    )


@kernel("Attention", since=25)
def attention_25(
    Q,
    K,
    V,
    attn_mask=None,
    past_key=None,
    past_value=None,
    nonpad_kv_seqlen=None,
    *,
    is_causal=0,
    kv_num_heads=None,
    left_window_size=-1,
    q_num_heads=None,
    qk_matmul_output_mode=0,
    right_window_size=-1,
    scale=None,
    softcap=0.0,
    softmax_precision=None,
):
    _check_mode(qk_matmul_output_mode)
    if Q.ndim == 4 and (q_num_heads is not None or kv_num_heads is not None):
        raise ValueError("q_num_heads and kv_num_heads are only for 3-D inputs")
    if left_window_size < -1 or right_window_size < -1:
        raise ValueError("left_window_size and right_window_size must be -1 or nonnegative")
    return _attention(
        Q,
        K,
        V,
        attn_mask,
        past_key,
        past_value,
        nonpad_kv_seqlen,
        is_causal=is_causal,
        kv_num_heads=kv_num_heads,
        q_num_heads=q_num_heads,
        qk_matmul_output_mode=qk_matmul_output_mode,
        scale=scale,
        softcap=softcap,
        softmax_precision=softmax_precision,
        left_window_size=left_window_size,
        right_window_size=right_window_size,
    )


# -- RotaryEmbedding, SwiGLU -------------------------------------------------------------


@kernel("RotaryEmbedding", since=23)
def rotary_embedding_23(
    X,
    cos_cache,
    sin_cache,
    position_ids=None,
    *,
    interleaved=0,
    num_heads=0,
    rotary_embedding_dim=0,
):
    if X.ndim == 3:
        # (batch, seq, hidden) viewed as (batch, seq, heads, size): heads on axis 2
        if not num_heads or X.shape[2] % num_heads:
            raise ValueError(f"a 3-D input {X.shape} needs num_heads dividing its last axis")
        x = X.reshape(*X.shape[:2], num_heads, X.shape[2] // num_heads)
        head_axis = 2
    elif X.ndim == 4:
        x, head_axis = X, 1
    else:
        raise ValueError(f"X must be 3-D or 4-D, got shape {X.shape}")
    dim = rotary_embedding_dim or x.shape[-1]
    if dim % 2 or dim > x.shape[-1]:
        raise ValueError(f"rotary_embedding_dim {dim} must be even and <= head size")
    if position_ids is not None:
        cos_cache, sin_cache = cos_cache[position_ids], sin_cache[position_ids]
    if cos_cache.shape[-1] != dim // 2 or sin_cache.shape[-1] != dim // 2:
        raise ValueError(f"cos/sin caches' last axis must be rotary_embedding_dim/2 = {dim // 2}")
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float32)
    cos = np.expand_dims(
        cos_cache.astype(dtype, copy=False), head_axis
    )  # (batch, [1,] seq, [1,] d/2)
    sin = np.expand_dims(sin_cache.astype(dtype, copy=False), head_axis)
    out = x.astype(dtype, copy=True)
    rot = x[..., :dim].astype(dtype, copy=False)
    if interleaved:
        x1, x2 = rot[..., 0::2], rot[..., 1::2]
        out[..., 0:dim:2] = cos * x1 - sin * x2
        out[..., 1:dim:2] = sin * x1 + cos * x2
    else:
        x1, x2 = rot[..., : dim // 2], rot[..., dim // 2 :]
        out[..., : dim // 2] = cos * x1 - sin * x2
        out[..., dim // 2 : dim] = sin * x1 + cos * x2
    return out.astype(X.dtype, copy=False).reshape(X.shape)


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


@kernel("SwiGLU", since=28)
def swiglu_28(A, B, *, alpha=1.0):
    if A.shape != B.shape:
        raise ValueError(f"SwiGLU needs A and B of one shape, got {A.shape} and {B.shape}")
    a = A if A.dtype.kind == "f" else A.astype(np.float32)
    gate = a * _sigmoid(a * a.dtype.type(alpha))
    return (gate * B.astype(a.dtype, copy=False)).astype(A.dtype, copy=False)


# -- LinearAttention ---------------------------------------------------------------------


_UPDATE_RULES = ("linear", "gated", "delta", "gated_delta")


def _per_head(x, b, t, heads, name):
    # (B, T, H_or_1 [* size]) -> (B, H_or_1, T, size)
    if x.ndim != 3:
        raise ValueError(f"{name} must be 3-D, got shape {x.shape}")
    n = heads if x.shape[-1] % heads == 0 and x.shape[-1] >= heads else 1
    return x.reshape(b, t, n, x.shape[-1] // n).transpose(0, 2, 1, 3)


@kernel("LinearAttention", since=27)
def linear_attention_27(
    query,
    key,
    value,
    past_state=None,
    decay=None,
    beta=None,
    *,
    chunk_size=64,
    kv_num_heads=None,
    q_num_heads=None,
    scale=0.0,
    update_rule="gated_delta",
):
    if update_rule not in _UPDATE_RULES:
        raise ValueError(f"update_rule must be one of {_UPDATE_RULES}, got {update_rule!r}")
    if not q_num_heads or not kv_num_heads or q_num_heads % kv_num_heads:
        raise ValueError("q_num_heads must be a positive multiple of kv_num_heads")
    gated, delta = update_rule in ("gated", "gated_delta"), update_rule in ("delta", "gated_delta")
    if gated != (decay is not None) or delta != (beta is not None):
        raise ValueError(f"update_rule {update_rule!r}: decay needed iff gated, beta iff delta")
    dtype = _compute_dtype(query.dtype)
    b, t, _ = query.shape
    q = _split_heads(query, q_num_heads, "query").astype(dtype)
    k = _split_heads(key, kv_num_heads, "key").astype(dtype)
    v = _split_heads(value, kv_num_heads, "value").astype(dtype)
    d_k, d_v, group = q.shape[-1], v.shape[-1], q_num_heads // kv_num_heads
    if past_state is None:
        state = np.zeros((b, kv_num_heads, d_k, d_v), dtype=dtype)
    elif past_state.shape != (b, kv_num_heads, d_k, d_v):
        raise ValueError(f"past_state shape {past_state.shape} != {(b, kv_num_heads, d_k, d_v)}")
    else:
        state = past_state.astype(dtype)
    if gated:
        gates = np.exp(_per_head(decay, b, t, kv_num_heads, "decay").astype(dtype))
    if delta:
        rates = _per_head(beta, b, t, kv_num_heads, "beta").astype(dtype)
    scale = dtype.type(scale or 1.0 / np.sqrt(d_k))
    out = np.empty((b, kv_num_heads, group, t, d_v), dtype=dtype)
    q = q.reshape(b, kv_num_heads, group, t, d_k)
    for i in range(t):  # the recurrence, one token at a time
        k_t, v_t = k[:, :, i : i + 1, :], v[:, :, i : i + 1, :]  # (B, H, 1, d)
        if gated:
            state = state * gates[:, :, i, :, None]
        if delta:
            v_t = rates[:, :, i : i + 1, :] * (v_t - np.matmul(k_t, state))
        state = state + np.matmul(np.swapaxes(k_t, -1, -2), v_t)
        out[:, :, :, i, :] = np.matmul(q[:, :, :, i, :], state)
    out = (out * scale).reshape(b, q_num_heads, t, d_v)
    present = state.astype(query.dtype if past_state is None else past_state.dtype)
    return _merge_heads(out).astype(query.dtype), present


# -- FlexAttention (ai.onnx.preview) -------------------------------------------------------


def _call_mod(graph, x, scope):
    result = np.asarray(graph.call([x], scope)[0])
    if result.shape != x.shape:
        raise ValueError(f"modifier subgraph changed the shape {x.shape} to {result.shape}")
    return result.astype(x.dtype, copy=False)


@kernel("FlexAttention", since=1, domain="ai.onnx.preview", scope=True)
def flex_attention_1(
    Q, K, V, *, prob_mod=None, scale=None, score_mod=None, softmax_precision=None, scope=None
):
    if not Q.ndim == K.ndim == V.ndim == 4:
        raise ValueError(f"Q, K, V must be 4-D, got {Q.shape}, {K.shape}, {V.shape}")
    if softmax_precision is not None:
        softmax_dtype = runtime_dtype(int(softmax_precision))
    else:
        softmax_dtype = np.dtype(np.float64 if Q.dtype == np.float64 else np.float32)
    dtype = _compute_dtype(softmax_dtype)
    if scale is None:
        scale = 1.0 / np.sqrt(Q.shape[-1])
    q = Q.astype(dtype, copy=False) * dtype.type(scale)
    scores = _grouped_matmul(q, np.swapaxes(K, -1, -2).astype(dtype, copy=False))
    scores = scores.astype(softmax_dtype, copy=False)
    if score_mod is not None:
        scores = _call_mod(score_mod, scores, scope)
    probs = _softmax(scores.astype(dtype, copy=False)).astype(softmax_dtype, copy=False)
    if prob_mod is not None:
        probs = _call_mod(prob_mod, probs, scope)
    y = _grouped_matmul(probs.astype(dtype, copy=False), V.astype(dtype, copy=False))
    return y.astype(V.dtype)


def _transposable(a, b, mask) -> bool:
    """Whether MatMulSoftmax may compute transposed: floats BLAS takes, matrices (batches
    of them), and a mask that leaves the scores' shape as it is."""
    if a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        return False
    if mask is None:
        return True
    shape = (*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    return mask.dtype == a.dtype and np.broadcast_shapes(shape, mask.shape) == shape


@kernel("MatMulSoftmax", since=1, domain="com.microsoft")
def mat_mul_softmax_1(A, B, mask=None, *, scale=1.0, divide=0):
    """edgerun's own op (onnxruntime has none by this name), made by passes/fuse_softmax.py
    from attention's scores: Softmax(A @ B * scale + mask) over the last axis (``divide``:
    / scale). The scores are computed transposed, (..., N, M), by the same BLAS product
    with its operands swapped, so the Softmax's max and sum over each row of N run across
    the M-long rows element by element (numpy's reductions along 128-long rows cost 70 ns
    a row: 110 against 63 us for the max over MiniLM's 12 heads of 128x128); the sum is a
    product with a row of ones, and the result is returned as the transposed view, which
    the product with V reads as it is (BLAS takes it transposed). Other types and ranks,
    and a mask that would broadcast the scores wider, run as the unfused steps did."""
    if not _transposable(A, B, mask):
        scores = mat_mul_1(A, B)
        factor = scores.dtype.type(scale)
        if divide:
            scores = scores / factor
        elif scale != 1.0:
            scores = scores * factor
        return softmax_13(scores if mask is None else scores + mask, axis=-1)
    dtype = A.dtype.type
    st = np.matmul(np.swapaxes(B, -1, -2), np.swapaxes(A, -1, -2))  # (A @ B)^T, (..., N, M)
    if divide:
        st /= dtype(scale)
    elif scale != 1.0:
        st *= dtype(scale)
    if mask is not None:  # the mask's rows and columns swapped to match
        swapped = np.swapaxes(mask, -1, -2) if mask.ndim >= 2 else mask.reshape(-1, 1)
        # stored swapped where it is broadcast over heads (a 128x128 mask read across
        # rows, once per head, took longer than the whole Softmax's max)
        st += np.ascontiguousarray(swapped) if swapped.size < st.size else swapped
    st -= np.max(st, axis=-2, keepdims=True)
    np.exp(st, out=st)
    st /= np.matmul(ones(st.shape[-2], A.dtype), st)[..., None, :]
    return np.swapaxes(st, -1, -2)
