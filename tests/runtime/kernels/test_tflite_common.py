"""TFLite's fixed-point helpers: the fast whole-array form against kernels/int8.py's
step-by-step one, and the activation ranges."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime.kernels import int8
from edgerun.runtime.kernels.tflite_common import (
    _BLOCK,
    _BLOCK_F32,
    _double_elements,
    _float_scaler,
    _single_elements,
    activation_range,
    centered_requantizer,
    multiply_by_quantized_multiplier,
    multiply_single_rounding,
    quantize_multiplier,
    requantize,
    round_half_away,
)
from edgerun.runtime.tflite_reader import QuantParams


@pytest.mark.parametrize("seed", range(6))
def test_multiply_by_quantized_multiplier_matches_step_by_step(seed: int) -> None:
    rng = np.random.default_rng(seed)
    high = 1 << 31 if seed % 2 else 1 << 24
    x = rng.integers(-high, high - 1, (4000, 8))
    x[:200] = rng.integers(-1000, 1000, (200, 8)) << rng.integers(0, 20, (200, 8))  # ties
    real = rng.uniform(1e-6, 4.0, 8)
    real[:3] = [1.0, 0.5, 2.0]  # shifts of zero and above
    m, shift = quantize_multiplier(real)
    m = -m if seed % 3 == 0 else m  # SUB negates a multiplier
    want = int8.multiply_by_quantized_multiplier(x, m, shift).astype(np.int64)
    np.testing.assert_array_equal(multiply_by_quantized_multiplier(x, m, shift), want)


def test_single_rounding_is_one_rounding_with_ties_up() -> None:
    rng = np.random.default_rng(9)
    x = rng.integers(-(1 << 24), 1 << 24, 3000)
    m, shift = quantize_multiplier(rng.uniform(1e-4, 0.9, 3000))
    got = multiply_single_rounding(x, m, shift)
    want = [
        (int(a) * int(b) + (1 << (30 - int(s)))) >> (31 - int(s))
        for a, b, s in zip(x, m, shift, strict=True)
    ]
    np.testing.assert_array_equal(got, want)
    # a tie: 3 * 2^30 / 2^31 = 1.5 rounds up to 2, -1.5 up to -1
    np.testing.assert_array_equal(multiply_single_rounding([3, -3], 1 << 30, 0), [2, -1])


def test_round_half_away() -> None:
    v = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 0.49999997, -0.49999997], np.float32)
    np.testing.assert_array_equal(round_half_away(v), [-3, -2, -1, 1, 2, 3, 0, -0])


def test_activation_ranges() -> None:
    q = QuantParams(np.array([0.05], np.float32), np.array([-10]), 0, np.dtype(np.int8))
    assert activation_range("NONE", q) == (-128, 127)
    assert activation_range("RELU", q) == (-10, 127)
    assert activation_range("RELU6", q) == (-10, 110)
    assert activation_range("RELU_N1_TO_1", q) == (-30, 10)
    with pytest.raises(ValueError, match="TANH"):
        activation_range("TANH", q)


@pytest.mark.parametrize("single", [False, True])
def test_offset_is_added_before_scaling(single: bool) -> None:
    # the bias folded into the constant (offset * m) scales exactly as x + offset would
    rng = np.random.default_rng(4)
    x = rng.integers(-(1 << 22), 1 << 22, (500, 6))
    bias = rng.integers(-(1 << 20), 1 << 20, 6)
    m, shift = quantize_multiplier(rng.uniform(1e-5, 0.9 if single else 3.0, 6))
    fn = multiply_single_rounding if single else multiply_by_quantized_multiplier
    np.testing.assert_array_equal(fn(x, m, shift, bias), fn(x + bias, m, shift))
    # integers held in a float array (an exact BLAS sum) convert exactly
    np.testing.assert_array_equal(fn(x.astype(np.float64), m, shift), fn(x, m, shift))


def test_requantize_in_blocks_matches_whole() -> None:
    # a tensor larger than one block, per-channel multipliers along its last axis
    rng = np.random.default_rng(5)
    acc = rng.integers(-(1 << 20), 1 << 20, (1, 70, 70, 24)).astype(np.float32)
    bias = rng.integers(-5000, 5000, 24)
    m, shift = quantize_multiplier(rng.uniform(1e-4, 2e-3, 24))
    q = QuantParams(np.array([0.05], np.float32), np.array([-7]), 0, np.dtype(np.int8))
    assert acc.size > _BLOCK
    got = requantize(acc, m, shift, q, "RELU6", bias=bias)
    scaled = int8.multiply_by_quantized_multiplier(acc.astype(np.int64) + bias, m, shift)
    want = np.clip(scaled.astype(np.int64) - 7, *activation_range("RELU6", q)).astype(np.int8)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("single", [False, True])
def test_float32_scaling_matches_integer_steps(single: bool) -> None:
    # accumulators held exactly in float32 and scaled in float32 must give the integer
    # steps' results bit for bit, ties included: multipliers that are powers of two put
    # w = acc * 2^-k exactly on half-integers, others near them
    rng = np.random.default_rng(6)
    channels = 16
    real = rng.uniform(2e-4, 0.05, channels)
    real[:4] = [2.0**-7, 2.0**-5, 2.0**-12, 2.0**-6]
    m, shift = quantize_multiplier(real)
    acc = rng.integers(-(1 << 19), 1 << 19, (200, 50, channels))  # two blocks
    acc[:10] = (rng.integers(-300, 300, (10, 50, channels)) * 2 + 1) << 6  # halves at 2^-7
    acc = acc.astype(np.float32)
    bias = rng.integers(-4000, 4000, channels)
    q = QuantParams(np.array([0.05], np.float32), np.array([9]), 0, np.dtype(np.int8))
    assert _float_scaler(m, shift, bias, single, 1 << 19) is not None  # not the fallback
    assert acc.size > _BLOCK_F32
    for act in ("NONE", "RELU"):
        want = requantize(acc, m, shift, q, act, single=single, bias=bias)
        got = requantize(acc, m, shift, q, act, single=single, bias=bias, bound=1 << 19)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("act", ["NONE", "RELU6"])
def test_centered_requantizer_is_requantize_less_the_zero_point(act: str) -> None:
    # in place over whole lines of a channels-last buffer (more than one block), ties at
    # 2^-7 included, which the float32 scaling must hand to the exact integer steps
    rng = np.random.default_rng(9)
    channels = 16
    real = rng.uniform(2e-4, 0.05, channels)
    real[:2] = [2.0**-7, 2.0**-6]
    m, shift = quantize_multiplier(real)
    acc = rng.integers(-(1 << 19), 1 << 19, (60, 200, channels))
    acc[:5] = (rng.integers(-300, 300, (5, 200, channels)) * 2 + 1) << 6
    acc = acc.astype(np.float32)
    q = QuantParams(np.array([0.05], np.float32), np.array([-7]), 0, np.dtype(np.int8))
    want = requantize(acc, m, shift, q, act).astype(np.float32) + 7
    scale = centered_requantizer(m, shift, q, act, None, 1 << 19)
    assert scale is not None and acc.size > _BLOCK_F32
    lines = acc.reshape(60, -1)
    scale(lines)  # in place
    np.testing.assert_array_equal(acc, want)


def test_centered_requantizer_declines_what_float32_cannot_scale() -> None:
    # multipliers near 1 on sums up to 2^23: float32's error could reach a tenth of a step
    m, shift = quantize_multiplier(np.array([0.6, 0.7]))
    q = QuantParams(np.array([0.05], np.float32), np.array([0]), 0, np.dtype(np.int8))
    assert centered_requantizer(m, shift, q, "NONE", None, 1 << 23) is None


@pytest.mark.parametrize("single", [False, True])
def test_elementwise_redo_matches_integer_steps(single: bool) -> None:
    rng = np.random.default_rng(8)
    x = rng.integers(-(1 << 22), 1 << 22, 5000).astype(np.float32)
    x[:500] = (rng.integers(-300, 300, 500) * 2 + 1) << 6  # ties
    bias = rng.integers(-3000, 3000, 5000)
    m, shift = quantize_multiplier(rng.choice([2.0**-7, 2.0**-1, 0.3, 1e-3, 0.5], 5000))
    m, shift = m.astype(np.int64), shift.astype(np.int64)
    fn, elements = (
        (multiply_single_rounding, _single_elements)
        if single
        else (multiply_by_quantized_multiplier, _double_elements)
    )
    want = fn(x.astype(np.int64) + bias, m, shift)
    np.testing.assert_array_equal(elements(x, m, shift, bias), want)
