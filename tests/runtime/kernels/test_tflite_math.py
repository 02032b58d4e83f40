"""Quantized binary arithmetic on large 8-bit tensors goes through a 65,536-entry table of
the exact integer kernel: it must give the integer kernel's results, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime.kernels import derived, tflite_math
from edgerun.runtime.tflite_reader import QuantParams, TensorQuant

EXACT = {"ADD": tflite_math._add_q, "SUB": tflite_math._sub_q, "MUL": tflite_math._mul_q}


def _quant(dtype: type, zeros: tuple[int, int, int]) -> TensorQuant:
    def q(scale: float, zero: int) -> QuantParams:
        return QuantParams(np.array([scale], np.float32), np.array([zero]), 0, np.dtype(dtype))

    return TensorQuant((q(0.05, zeros[0]), q(0.08, zeros[1])), (q(0.11, zeros[2]),))


@pytest.mark.parametrize("dtype, zeros", [(np.int8, (-3, 10, 2)), (np.uint8, (128, 120, 131))])
@pytest.mark.parametrize("op", list(EXACT))
@pytest.mark.parametrize("act", ["NONE", "RELU6"])
def test_table_matches_integer_kernel(op: str, dtype: type, zeros, act: str) -> None:
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (1, 40, 40, 8)).astype(dtype)
    y = rng.integers(info.min, info.max + 1, (1, 1, 40, 8)).astype(dtype)  # broadcast
    quant = _quant(dtype, zeros)
    kernel = getattr(tflite_math, op.lower())
    assert x.size >= tflite_math._TABLE_FROM
    got = kernel(x, y, fused_activation_function=act, quant=quant)
    want = EXACT[op](x, y, quant, act)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    # built once per node (the second call looks it up) and dropped with the node
    tables = len(derived._MEMO)
    assert kernel(x, y, fused_activation_function=act, quant=quant).tobytes() == got.tobytes()
    assert len(derived._MEMO) == tables
    del quant
    assert len(derived._MEMO) < tables  # its table (and what hung on its params) went


@pytest.mark.parametrize("op", list(EXACT))
def test_small_tensors_work_out_their_multipliers_once_per_node(op: str, monkeypatch) -> None:
    # below the table's size each call runs the integer kernel; its fixed-point multipliers
    # come from the node's scales, so only the first call works them out
    rng = np.random.default_rng(2)
    x, y = (rng.integers(-128, 128, (1, 4, 4, 8)).astype(np.int8) for _ in range(2))
    quant = _quant(np.int8, (-3, 10, 2))
    kernel = getattr(tflite_math, op.lower())
    calls = []
    real = tflite_math.quantize_multiplier
    monkeypatch.setattr(tflite_math, "quantize_multiplier", lambda r: calls.append(r) or real(r))
    first = kernel(x, y, quant=quant)
    made = len(calls)
    assert made and np.array_equal(kernel(x, y, quant=quant), first)
    assert len(calls) == made
    np.testing.assert_array_equal(first, EXACT[op](x, y, _quant(np.int8, (-3, 10, 2)), "NONE"))
