"""Element-wise math: unary functions, broadcasting binary ops, comparisons, logic, Where,
the variadic Max/Min/Mean/Sum, and Clip."""

from __future__ import annotations

import functools

import numpy as np

from edgerun.runtime.registry import kernel

# -- helpers --------------------------------------------------------------------------------


def _ml_float(dtype):
    # ml_dtypes floats (bfloat16, float8...) are kind "V" to numpy: compute those in float32
    return dtype.kind == "V"


def _math(fn, x):
    if _ml_float(x.dtype):
        return fn(x.astype(np.float32)).astype(x.dtype)
    return np.asarray(fn(x))


def _legacy(a, b, broadcast, axis):
    # Opset 1-6 broadcasting: B's dims line up with A's starting at ``axis`` (default: suffix)
    if not broadcast or axis is None or b.ndim == 0:
        return b
    start = axis % a.ndim if a.ndim else 0
    return b.reshape(b.shape + (1,) * (a.ndim - start - b.ndim))


def _div(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu":
        # C semantics: truncate toward zero (numpy floors)
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.floor_divide(a, b)
            adjust = (np.remainder(a, b) != 0) & ((a < 0) ^ (b < 0))
        return (q + adjust.astype(q.dtype)).astype(a.dtype, copy=False)
    return np.divide(a, b).astype(a.dtype, copy=False)


def _pow(a, b):
    if a.dtype.kind in "iu" and b.dtype.kind in "iu" and np.any(b < 0):
        return np.power(a.astype(np.float64), b).astype(a.dtype)
    base = a.astype(np.float32) if _ml_float(a.dtype) else a
    return np.asarray(np.power(base, b)).astype(a.dtype, copy=False)


def _reduce(fn, inputs):
    return functools.reduce(fn, inputs[1:], inputs[0])


# -- unary ----------------------------------------------------------------------------------


@kernel("Abs", since=1)
def abs_1(x, *, consumed_inputs=None):
    return np.abs(x)


@kernel("Neg", since=1)
def neg_1(x, *, consumed_inputs=None):
    return np.negative(x)


@kernel("Reciprocal", since=1)
def reciprocal_1(x, *, consumed_inputs=None):
    return _math(np.reciprocal, x)


@kernel("Sqrt", since=1)
def sqrt_1(x, *, consumed_inputs=None):
    return _math(np.sqrt, x)


@kernel("Exp", since=1)
def exp_1(x, *, consumed_inputs=None):
    return _math(np.exp, x)


@kernel("Log", since=1)
def log_1(x, *, consumed_inputs=None):
    return _math(np.log, x)


@kernel("Sin", since=7)
def sin_7(x):
    return _math(np.sin, x)


@kernel("Cos", since=7)
def cos_7(x):
    return _math(np.cos, x)


@kernel("Tan", since=7)
def tan_7(x):
    return _math(np.tan, x)


@kernel("Asin", since=7)
def asin_7(x):
    return _math(np.arcsin, x)


@kernel("Acos", since=7)
def acos_7(x):
    return _math(np.arccos, x)


@kernel("Atan", since=7)
def atan_7(x):
    return _math(np.arctan, x)


@kernel("Sinh", since=9)
def sinh_9(x):
    return _math(np.sinh, x)


@kernel("Cosh", since=9)
def cosh_9(x):
    return _math(np.cosh, x)


@kernel("Asinh", since=9)
def asinh_9(x):
    return _math(np.arcsinh, x)


@kernel("Acosh", since=9)
def acosh_9(x):
    return _math(np.arccosh, x)


@kernel("Atanh", since=9)
def atanh_9(x):
    return _math(np.arctanh, x)


@kernel("Sign", since=9)
def sign_9(x):
    return _math(np.sign, x)


@kernel("Round", since=11)
def round_11(x):
    return _math(np.round, x)  # half to even, as the spec asks


@kernel("Ceil", since=1)
def ceil_1(x, *, consumed_inputs=None):
    return _math(np.ceil, x)


@kernel("Floor", since=1)
def floor_1(x, *, consumed_inputs=None):
    return _math(np.floor, x)


@kernel("IsInf", since=10)
def is_inf_10(x, *, detect_negative=1, detect_positive=1):
    x = x.astype(np.float32) if _ml_float(x.dtype) else x
    inf = np.isinf(x)
    if not detect_negative:
        inf &= x > 0
    if not detect_positive:
        inf &= x < 0
    return inf


@kernel("IsNaN", since=9)
def is_nan_9(x):
    return np.isnan(x.astype(np.float32) if _ml_float(x.dtype) else x)


@kernel("Not", since=1)
def not_1(x):
    return np.logical_not(x)


@kernel("BitwiseNot", since=18)
def bitwise_not_18(x):
    return np.invert(x)


# -- binary arithmetic ----------------------------------------------------------------------


@kernel("Add", since=1)
def add_1(a, b, *, axis=None, broadcast=0, consumed_inputs=None):
    return np.add(a, _legacy(a, b, broadcast, axis))


@kernel("Add", since=7)
def add_7(a, b):
    return np.add(a, b)


@kernel("Sub", since=1)
def sub_1(a, b, *, axis=None, broadcast=0, consumed_inputs=None):
    return np.subtract(a, _legacy(a, b, broadcast, axis))


@kernel("Sub", since=7)
def sub_7(a, b):
    return np.subtract(a, b)


@kernel("Mul", since=1)
def mul_1(a, b, *, axis=None, broadcast=0, consumed_inputs=None):
    return np.multiply(a, _legacy(a, b, broadcast, axis))


@kernel("Mul", since=7)
def mul_7(a, b):
    return np.multiply(a, b)


@kernel("Div", since=1)
def div_1(a, b, *, axis=None, broadcast=0, consumed_inputs=None):
    return _div(a, _legacy(a, b, broadcast, axis))


@kernel("Div", since=7)
def div_7(a, b):
    return _div(a, b)


@kernel("Pow", since=1)
def pow_1(x, y, *, axis=None, broadcast=0):
    return _pow(x, _legacy(x, y, broadcast, axis))


@kernel("Pow", since=7)
def pow_7(x, y):
    return _pow(x, y)


@kernel("Mod", since=10)
def mod_10(a, b, *, fmod=0):
    with np.errstate(divide="ignore", invalid="ignore"):
        if fmod:
            return np.fmod(a, b)  # C sign rules: the result takes the dividend's sign
        return np.mod(a, b)  # Python sign rules: the result takes the divisor's sign


@kernel("BitShift", since=11)
def bit_shift_11(x, y, *, direction=None):
    if direction == "LEFT":
        return np.left_shift(x, y)
    if direction == "RIGHT":
        return np.right_shift(x, y)
    raise ValueError(f"BitShift direction must be LEFT or RIGHT, not {direction!r}")


@kernel("BitwiseAnd", since=18)
def bitwise_and_18(a, b):
    return np.bitwise_and(a, b)


@kernel("BitwiseOr", since=18)
def bitwise_or_18(a, b):
    return np.bitwise_or(a, b)


@kernel("BitwiseXor", since=18)
def bitwise_xor_18(a, b):
    return np.bitwise_xor(a, b)


# -- logic and comparison -------------------------------------------------------------------


@kernel("And", since=1)
def and_1(a, b, *, axis=None, broadcast=0):
    return np.logical_and(a, _legacy(a, b, broadcast, axis))


@kernel("And", since=7)
def and_7(a, b):
    return np.logical_and(a, b)


@kernel("Or", since=1)
def or_1(a, b, *, axis=None, broadcast=0):
    return np.logical_or(a, _legacy(a, b, broadcast, axis))


@kernel("Or", since=7)
def or_7(a, b):
    return np.logical_or(a, b)


@kernel("Xor", since=1)
def xor_1(a, b, *, axis=None, broadcast=0):
    return np.logical_xor(a, _legacy(a, b, broadcast, axis))


@kernel("Xor", since=7)
def xor_7(a, b):
    return np.logical_xor(a, b)


@kernel("Equal", since=1)
def equal_1(a, b, *, axis=None, broadcast=0):
    return np.equal(a, _legacy(a, b, broadcast, axis))


@kernel("Equal", since=7)
def equal_7(a, b):
    return np.asarray(np.equal(a, b), dtype=bool)


@kernel("Greater", since=1)
def greater_1(a, b, *, axis=None, broadcast=0):
    return np.greater(a, _legacy(a, b, broadcast, axis))


@kernel("Greater", since=7)
def greater_7(a, b):
    return np.greater(a, b)


@kernel("GreaterOrEqual", since=12)
def greater_or_equal_12(a, b):
    return np.greater_equal(a, b)


@kernel("Less", since=1)
def less_1(a, b, *, axis=None, broadcast=0):
    return np.less(a, _legacy(a, b, broadcast, axis))


@kernel("Less", since=7)
def less_7(a, b):
    return np.less(a, b)


@kernel("LessOrEqual", since=12)
def less_or_equal_12(a, b):
    return np.less_equal(a, b)


@kernel("Where", since=9)
def where_9(condition, x, y):
    return np.where(condition, x, y)


# -- variadic -------------------------------------------------------------------------------


@kernel("Max", since=1)
def max_1(*inputs, consumed_inputs=None):
    return _reduce(np.maximum, inputs)


@kernel("Min", since=1)
def min_1(*inputs, consumed_inputs=None):
    return _reduce(np.minimum, inputs)


@kernel("Sum", since=1)
def sum_1(*inputs, consumed_inputs=None):
    return _reduce(np.add, inputs)


@kernel("Mean", since=1)
def mean_1(*inputs, consumed_inputs=None):
    total = _reduce(np.add, inputs)
    return np.divide(total, total.dtype.type(len(inputs))).astype(total.dtype, copy=False)


# -- Clip -----------------------------------------------------------------------------------


def _clip(x, low, high):
    if x.dtype.kind in "fiu":
        # one np.clip with scalars of x's type: numpy's SIMD loop, one output buffer
        info = np.finfo(x.dtype) if x.dtype.kind == "f" else np.iinfo(x.dtype)
        low = info.min if low is None else np.asarray(low).item()
        high = info.max if high is None else np.asarray(high).item()
        if x.dtype.kind == "f":
            low = -np.inf if low == info.min else low
            high = np.inf if high == info.max else high
        # where min > max every value becomes max, as the spec says (np.clip does so too)
        return np.clip(x, x.dtype.type(low), x.dtype.type(high))
    # max then min: where min > max every value becomes max, as the spec says
    if low is not None:
        x = np.maximum(x, np.asarray(low, dtype=x.dtype))
    if high is not None:
        x = np.minimum(x, np.asarray(high, dtype=x.dtype))
    return x


@kernel("Clip", since=1)
def clip_1(x, *, max=None, min=None, consumed_inputs=None):
    return _clip(x, min, max)


@kernel("Clip", since=11)
def clip_11(x, min=None, max=None):
    return _clip(x, min, max)
