"""TFLite elementwise arithmetic, activations and reductions.

Quantized ADD, SUB, MUL, SQUARED_DIFFERENCE, RELU, RELU6, RELU_N1_TO_1, LEAKY_RELU,
QUANTIZE (requantizing), MAXIMUM, MINIMUM, REDUCE_MAX, REDUCE_MIN and MEAN (but over H and
W of a 4-D tensor) follow TFLite's integer reference kernels bit for bit; unary 8-bit ops
are lookup tables built as TFLite builds them (``via_table``); the other quantized ops run
through float (``via_float``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from edgerun.runtime.dtypes import runtime_dtype
from edgerun.runtime.kernels.activation import exp_sigmoid, gelu_20
from edgerun.runtime.kernels.derived import memo, memo_with
from edgerun.runtime.kernels.int8 import int_range
from edgerun.runtime.kernels.tflite_common import (
    axes_of,
    dequantize,
    fused,
    is_quantized,
    multiply_by_quantized_multiplier,
    quant_of,
    quantize,
    quantize_multiplier,
    quantized_multiplier,
    requantize,
    via_float,
    via_table,
)
from edgerun.runtime.registry import kernel
from edgerun.runtime.tflite_reader import DOMAIN, QuantParams, TensorQuant


def _quantized(quant: TensorQuant | None, *xs: np.ndarray) -> bool:
    return quant is not None and all(is_quantized(x, quant_of(quant, i)) for i, x in enumerate(xs))


def _zero(q: QuantParams) -> int:
    return int(q.zero_point[0])


def _scale(q: QuantParams) -> np.float64:
    return np.float64(q.scale[0])


def _multipliers(quant: TensorQuant, tag: str, reals: Callable[[], tuple]) -> list[tuple]:
    """quantize_multiplier of each of ``reals()``, once per node (its ``quant``): worked out
    per call they were most of a small tensor's time (an 8x8x32 ADD: 0.37 -> 0.15 ms, with
    _input_scalers), and requantize's constants, keyed on the multiplier it is given, were
    made anew each call."""
    return memo(quant, ("multipliers", tag), lambda: [quantize_multiplier(r) for r in reals()])


def _input_scalers(quant: TensorQuant, tag: str, multipliers: list[tuple], sign: int = 1):
    """The two inputs' quantized_multiplier (the second's times ``sign``), once per node."""
    (m1, s1), (m2, s2) = multipliers[:2]
    return memo(
        quant,
        ("input scalers", tag, sign),
        lambda: (quantized_multiplier(m1, s1), quantized_multiplier(sign * m2, s2)),
    )


def _common_scale(qa: QuantParams, qb: QuantParams, qy: QuantParams, left: int, power: int):
    """TFLite's two-input scheme: each input to twice the larger input scale with ``left``
    bits of headroom, then the result (a sum; a difference squared: ``power`` 2) to the
    output's scale."""
    twice_max = 2 * max(_scale(qa), _scale(qb))
    out = twice_max**power / ((1 << power * left) * _scale(qy))
    return _scale(qa) / twice_max, _scale(qb) / twice_max, out


# -- binary arithmetic ----------------------------------------------------------------------
def _add_sub_q(x, y, quant: TensorQuant, act: str, sign: int) -> np.ndarray:
    # reference_integer_ops::Add: both inputs to a common scale with 20 bits of headroom
    qa, qb, qy = quant.inputs[0], quant.inputs[1], quant.outputs[0]
    assert qa is not None and qb is not None and qy is not None
    left = 20
    multipliers = _multipliers(quant, "add", lambda: _common_scale(qa, qb, qy, left, 1))
    scale_a, scale_b = _input_scalers(quant, "add", multipliers, sign)
    mo, so = multipliers[2]
    a = (x.astype(np.int64) - _zero(qa)) << left
    b = (y.astype(np.int64) - _zero(qb)) << left
    return requantize(scale_a(a) + scale_b(b), mo, so, qy, act, owner=quant)


_TABLE_FROM = 4096  # output elements; below, building the 65,536-entry table costs more


def _pair_table(exact, quant: TensorQuant, act: str, dtype: np.dtype) -> np.ndarray:
    """exact() over every pair of 8-bit codes, indexed by (x's bits << 8) | y's bits."""

    def make() -> np.ndarray:
        codes = np.arange(256, dtype=np.uint8).view(dtype)
        return exact(codes[:, None], codes[None, :], quant, act).reshape(-1)

    return memo(quant, ("pairs", exact, act, np.dtype(dtype).str), make)


def _by_table(x, y, quant: TensorQuant, act: str, exact) -> np.ndarray:
    # a binary op on two 8-bit tensors has 65,536 possible inputs: the exact integer
    # kernel runs once over all of them, each call is then one lookup (ADD on a
    # 112x112x16 tensor: 1.9 ms of int64 passes -> about 0.2 ms)
    table = _pair_table(exact, quant, act, x.dtype)
    index = x.view(np.uint8).astype(np.uint16)
    index <<= 8
    return table.take(np.bitwise_or(index, y.view(np.uint8)))


def _binary(x, y, act, quant, op, exact=None):
    if _quantized(quant, x, y) and quant_of(quant, 0, output=True) is not None:
        if exact is not None:
            eight_bit = x.dtype == y.dtype and x.dtype in (np.int8, np.uint8)
            if eight_bit and max(x.size, y.size) >= _TABLE_FROM:
                return _by_table(x, y, quant, act, exact)
            return exact(x, y, quant, act)
        return via_float(quant, lambda a, b: fused(np.asarray(op(a, b)), act), x, y)
    return fused(np.asarray(op(x, y)), act)


def _add_q(x, y, quant: TensorQuant, act: str) -> np.ndarray:
    return _add_sub_q(x, y, quant, act, 1)


def _sub_q(x, y, quant: TensorQuant, act: str) -> np.ndarray:
    return _add_sub_q(x, y, quant, act, -1)


@kernel("ADD", since=1, domain=DOMAIN)
def add(x, y, *, fused_activation_function="NONE", pot_scale_int16=1, quant=None):
    return _binary(x, y, fused_activation_function, quant, np.add, _add_q)


@kernel("SUB", since=1, domain=DOMAIN)
def sub(x, y, *, fused_activation_function="NONE", pot_scale_int16=1, quant=None):
    return _binary(x, y, fused_activation_function, quant, np.subtract, _sub_q)


def _mul_q(x, y, quant: TensorQuant, act: str) -> np.ndarray:
    qa, qb, qy = quant.inputs[0], quant.inputs[1], quant.outputs[0]
    assert qa is not None and qb is not None and qy is not None
    ((m, s),) = _multipliers(quant, "mul", lambda: (_scale(qa) * _scale(qb) / _scale(qy),))
    product = (x.astype(np.int64) - _zero(qa)) * (y.astype(np.int64) - _zero(qb))
    return requantize(product, m, s, qy, act, owner=quant)


@kernel("MUL", since=1, domain=DOMAIN)
def mul(x, y, *, fused_activation_function="NONE", quant=None):
    return _binary(x, y, fused_activation_function, quant, np.multiply, _mul_q)


def _divide(a, b):
    if a.dtype.kind in "iu":  # TFLite's integer DIV truncates, as C does
        return (np.trunc(a / b)).astype(a.dtype)
    return np.divide(a, b)


@kernel("DIV", since=1, domain=DOMAIN)
def div(x, y, *, fused_activation_function="NONE", quant=None):
    return _binary(x, y, fused_activation_function, quant, _divide)


# MAXIMUM/MINIMUM keep their input's scale: comparing integers is comparing the values
@kernel("MAXIMUM", since=1, domain=DOMAIN)
def maximum(x, y, *, quant=None):
    return np.maximum(x, y)


@kernel("MINIMUM", since=1, domain=DOMAIN)
def minimum(x, y, *, quant=None):
    return np.minimum(x, y)


def _squared_difference_q(x, y, quant: TensorQuant, act: str) -> np.ndarray:
    # as ADD's scheme with 7 bits of headroom, the difference squared before the output scale
    qa, qb, qy = quant.inputs[0], quant.inputs[1], quant.outputs[0]
    assert qa is not None and qb is not None and qy is not None
    left = 7
    tag = "squared difference"
    multipliers = _multipliers(quant, tag, lambda: _common_scale(qa, qb, qy, left, 2))
    scale_a, scale_b = _input_scalers(quant, tag, multipliers)
    mo, so = multipliers[2]
    a = scale_a((x.astype(np.int64) - _zero(qa)) << left)
    b = scale_b((y.astype(np.int64) - _zero(qb)) << left)
    return requantize(np.square(a - b), mo, so, qy, act, owner=quant)


@kernel("SQUARED_DIFFERENCE", since=1, domain=DOMAIN)
def squared_difference(x, y, *, quant=None):
    exact = _squared_difference_q
    return _binary(x, y, "NONE", quant, lambda a, b: np.square(a - b), exact)


@kernel("POW", since=1, domain=DOMAIN)
def pow_(x, y, *, quant=None):
    return np.power(x, y)


@kernel("FLOOR_DIV", since=1, domain=DOMAIN)
def floor_div(x, y, *, quant=None):
    return np.floor_divide(x, y)


@kernel("FLOOR_MOD", since=1, domain=DOMAIN)
def floor_mod(x, y, *, quant=None):
    return np.mod(x, y)


_COMPARISONS = {
    "LESS": np.less,
    "LESS_EQUAL": np.less_equal,
    "GREATER": np.greater,
    "GREATER_EQUAL": np.greater_equal,
    "EQUAL": np.equal,
    "NOT_EQUAL": np.not_equal,
    "LOGICAL_AND": np.logical_and,
    "LOGICAL_OR": np.logical_or,
}


def _comparison(op):
    def compare(x, y, *, quant=None):
        if _quantized(quant, x, y):
            x, y = dequantize(x, quant.inputs[0]), dequantize(y, quant.inputs[1])
        return op(x, y)

    return compare


for _name, _op in _COMPARISONS.items():
    kernel(_name, since=1, domain=DOMAIN)(_comparison(_op))


@kernel("SELECT", since=1, domain=DOMAIN)
def select(condition, x, y, *, quant=None):
    return np.where(condition, x, y)


@kernel("SELECT_V2", since=1, domain=DOMAIN)
def select_v2(condition, x, y, *, quant=None):
    return np.where(condition, x, y)


# -- unary math and activations -------------------------------------------------------------
def _unary(fn: Callable[[np.ndarray], np.ndarray]):
    def run(x, *, quant=None):
        if quant is not None and is_quantized(x, quant_of(quant, 0)):
            return via_table(quant, fn, x)
        return fn(x)

    return run


def _rsqrt(x):
    return (1 / np.sqrt(x)).astype(x.dtype)


def _logistic(x):
    if x.dtype == np.float32:  # one buffer, four passes; past -88 exp(-x) overflows: 0
        return exp_sigmoid(x, np.float32(1))
    y = np.exp(-np.abs(x))  # float16's exp(-x) overflows from -11: the tail stays accurate
    return np.where(x >= 0, 1 / (1 + y), y / (1 + y)).astype(x.dtype)


def _hard_swish(x):
    return x * np.clip(x + 3, 0, 6) / 6


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "EXP": np.exp,
    "LOG": np.log,
    "SQRT": np.sqrt,
    "RSQRT": _rsqrt,
    "ABS": np.abs,
    "NEG": np.negative,
    "SQUARE": np.square,
    "SIN": np.sin,
    "COS": np.cos,
    "FLOOR": np.floor,
    "CEIL": np.ceil,
    "ROUND": np.round,  # TFLite rounds halves to even
    "SIGN": np.sign,
    "LOGISTIC": _logistic,
    "TANH": np.tanh,
    "HARD_SWISH": _hard_swish,
    "ELU": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))).astype(x.dtype),
    "RELU_0_TO_1": lambda x: np.clip(x, 0, 1),
}
for _name, _fn in _UNARY.items():
    kernel(_name, since=1, domain=DOMAIN)(_unary(_fn))


@kernel("LOGICAL_NOT", since=1, domain=DOMAIN)
def logical_not(x):
    return np.logical_not(x)


def _relu_like(x, quant, act):
    qx, qy = quant_of(quant, 0), quant_of(quant, 0, output=True)
    if is_quantized(x, qx) and qy is not None:
        # ReluX: requantize to the output's scale, clamp to the activation's range
        ((m, s),) = _multipliers(quant, "relu", lambda: (_scale(qx) / _scale(qy),))
        return requantize(x.astype(np.int64) - _zero(qx), m, s, qy, act, owner=quant)
    return fused(x.copy(), act)


@kernel("RELU", since=1, domain=DOMAIN)
def relu(x, *, quant=None):
    return _relu_like(x, quant, "RELU")


@kernel("RELU6", since=1, domain=DOMAIN)
def relu6(x, *, quant=None):
    return _relu_like(x, quant, "RELU6")


@kernel("RELU_N1_TO_1", since=1, domain=DOMAIN)
def relu_n1_to_1(x, *, quant=None):
    return _relu_like(x, quant, "RELU_N1_TO_1")


@kernel("LEAKY_RELU", since=1, domain=DOMAIN)
def leaky_relu(x, *, alpha=0.2, quant=None):
    a = np.float32(alpha)
    qx, qy = quant_of(quant, 0), quant_of(quant, 0, output=True)
    if is_quantized(x, qx) and qy is not None:
        # QuantizeLeakyRelu: one multiplier for each side of zero (scales in float32)
        sx, sy = np.float32(qx.scale[0]), np.float32(qy.scale[0])
        m_id, s_id = quantize_multiplier(np.float64(sx / sy))
        m_a, s_a = quantize_multiplier(np.float64(sx * a / sy))
        v = x.astype(np.int64) - _zero(qx)
        positive = multiply_by_quantized_multiplier(v, m_id, s_id)
        negative = multiply_by_quantized_multiplier(v, m_a, s_a)
        y = np.where(v >= 0, positive, negative) + _zero(qy)
        info = np.iinfo(qy.dtype)
        return np.clip(y, info.min, info.max).astype(qy.dtype)
    return np.where(x >= 0, x, x * a).astype(x.dtype)


@kernel("PRELU", since=1, domain=DOMAIN)
def prelu(x, alpha, *, quant=None):
    def run(v, slope):
        return np.where(v >= 0, v, v * slope).astype(np.float32)

    if quant is not None and is_quantized(x, quant_of(quant, 0)):
        return via_float(quant, run, x, alpha)
    return run(x, alpha)


@kernel("GELU", since=1, domain=DOMAIN)
def gelu(x, *, approximate=0, quant=None):
    mode = "tanh" if approximate else "none"
    return _unary(lambda v: gelu_20(v, approximate=mode))(x, quant=quant)


# -- quantization -------------------------------------------------------------------------------
@kernel("QUANTIZE", since=1, domain=DOMAIN)
def quantize_(input, *, out_dtype=3, quant=None):
    qx, qy = quant_of(quant, 0), quant_of(quant, 0, output=True)
    if qy is None:
        raise ValueError("QUANTIZE needs its output's quantization parameters")
    if is_quantized(input, qx):  # requantize: integers to integers of another scale
        m, s = quantize_multiplier(_scale(qx) / _scale(qy))
        y = multiply_by_quantized_multiplier(input.astype(np.int64) - _zero(qx), m, s)
        info = np.iinfo(qy.dtype)
        return np.clip(y + _zero(qy), info.min, info.max).astype(qy.dtype)
    return quantize(input.astype(np.float32, copy=False), qy)


@kernel("DEQUANTIZE", since=1, domain=DOMAIN)
def dequantize_(input, *, out_dtype=1, quant=None):
    qx = quant_of(quant, 0)
    if qx is not None and input.dtype.kind in "iu":
        return dequantize(input, qx)
    return input.astype(runtime_dtype(out_dtype))  # float16 weights of float16 models


# -- reductions ------------------------------------------------------------------------------
def _reduce(op, x, axis, keep_dims, quant, exact=False):
    axes = axes_of(axis, x.ndim) if x.ndim else ()

    def run(v):
        return op(v, axis=axes, keepdims=bool(keep_dims))

    if quant is not None and is_quantized(x, quant_of(quant, 0)) and not exact:
        return via_float(quant, lambda v: run(v).astype(np.float32), x)
    y = run(x)
    return y.astype(x.dtype, copy=False) if x.dtype != y.dtype and op is not np.mean else y


def _integer_mean(x, axes, keep_dims: bool, qx: QuantParams, qy: QuantParams) -> np.ndarray:
    # reference QuantizedMeanOrSum: the integer sum scaled by in/out scale over the count
    count = math.prod(x.shape[a] for a in axes)
    scale, low, high = memo_with(qy, qx, ("mean of", count), lambda: _mean_scaler(qx, qy, count))
    # int32 sums (1.8x faster than int64 over 28x28x96) where no sum can overflow them
    wide = np.int32 if count < _INT32_COUNT else np.int64
    total = np.sum(x, axis=axes, keepdims=keep_dims, dtype=wide) - _zero(qx) * count
    y = scale(total) + _zero(qy)
    return np.clip(y, low, high).astype(qy.dtype)


_INT32_COUNT = 1 << 23  # 8-bit values (less their zero point) a sum holds in int32


def _mean_scaler(qx: QuantParams, qy: QuantParams, count: int):
    """(MultiplyByQuantizedMultiplier of in/out scale over ``count``, with 1/count folded
    into the multiplier with as many extra bits as the count has; the output's range),
    worked out once per node: per call they were most of a pooled head's time (28x28x96:
    0.21 ms in the model)."""
    m, shift = quantize_multiplier(_scale(qx) / _scale(qy))
    extra = min(count.bit_length() - 1, 32, 31 + int(shift))
    per_count = (int(m) << extra) // count
    return (quantized_multiplier(per_count, int(shift) - extra), *int_range(qy.dtype))


@kernel("MEAN", since=1, domain=DOMAIN)
def mean(input, axis, *, keep_dims=0, quant=None):
    axes = axes_of(axis, input.ndim)
    qx, qy = quant_of(quant, 0), quant_of(quant, 0, output=True)
    if is_quantized(input, qx) and qy is not None:
        # the 4-D spatial mean has an optimized kernel of its own: through float there
        if not (input.ndim == 4 and axes == (1, 2) and keep_dims):
            return _integer_mean(input, axes, bool(keep_dims), qx, qy)
    elif input.dtype.kind in "iu":
        return np.mean(input, axis=axes, keepdims=bool(keep_dims)).astype(input.dtype)
    return _reduce(np.mean, input, axis, keep_dims, quant)


@kernel("SUM", since=1, domain=DOMAIN)
def sum_(input, axis, *, keep_dims=0, quant=None):
    return _reduce(np.sum, input, axis, keep_dims, quant)


@kernel("REDUCE_PROD", since=1, domain=DOMAIN)
def reduce_prod(input, axis, *, keep_dims=0, quant=None):
    return _reduce(np.prod, input, axis, keep_dims, quant)


@kernel("REDUCE_MAX", since=1, domain=DOMAIN)
def reduce_max(input, axis, *, keep_dims=0, quant=None):
    return _reduce(np.max, input, axis, keep_dims, quant, exact=True)


@kernel("REDUCE_MIN", since=1, domain=DOMAIN)
def reduce_min(input, axis, *, keep_dims=0, quant=None):
    return _reduce(np.min, input, axis, keep_dims, quant, exact=True)


@kernel("REDUCE_ANY", since=1, domain=DOMAIN)
def reduce_any(input, axis, *, keep_dims=0):
    return np.any(input, axis=axes_of(axis, input.ndim), keepdims=bool(keep_dims))


@kernel("REDUCE_ALL", since=1, domain=DOMAIN)
def reduce_all(input, axis, *, keep_dims=0):
    return np.all(input, axis=axes_of(axis, input.ndim), keepdims=bool(keep_dims))
