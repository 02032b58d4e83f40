"""Element-wise kernels where numpy's defaults differ from ONNX's."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.registry import resolve


def op(name, opset=22):
    return resolve("", name, opset).fn


def test_integer_div_truncates_toward_zero():
    a = np.array([7, -7, 7, -7], dtype=np.int32)
    b = np.array([2, 2, -2, -2], dtype=np.int32)
    got = op("Div")(a, b)
    assert got.dtype == np.int32 and got.tolist() == [3, -3, -3, 3]


def test_mod_sign_rules():
    a = np.array([7, -7, 7, -7], dtype=np.int64)
    b = np.array([3, 3, -3, -3], dtype=np.int64)
    assert op("Mod")(a, b).tolist() == [1, 2, -2, -1]
    assert op("Mod")(a, b, fmod=1).tolist() == [1, -1, 1, -1]


def test_pow_keeps_base_dtype():
    assert op("Pow")(np.array([2.0], np.float32), np.array([3], np.int64)).dtype == np.float32
    got = op("Pow")(np.array([2, 3], np.int32), np.array([2.5, -1.0], np.float32))
    assert got.dtype == np.int32 and got.tolist() == [5, 0]


def test_clip_forms_and_min_above_max():
    x = np.array([-2.0, 0.5, 3.0], np.float32)
    assert op("Clip", 6)(x, min=-1.0, max=1.0).tolist() == [-1, 0.5, 1]
    low, high = np.array(2, np.float32), np.array(1, np.float32)
    assert op("Clip", 13)(x, low, high).tolist() == [1, 1, 1]
    assert op("Clip", 13)(x, None, high).dtype == np.float32


def test_legacy_broadcast_aligns_at_axis():
    a = np.zeros((2, 3, 4), np.float32)
    b = np.arange(3, dtype=np.float32)
    got = op("Add", 6)(a, b, broadcast=1, axis=1)
    assert got.shape == (2, 3, 4) and got[1, 2, 3] == 2


def test_round_half_to_even_and_isinf_flags():
    assert op("Round")(np.array([0.5, 1.5, 2.5, -0.5], np.float32)).tolist() == [0, 2, 2, -0]
    x = np.array([np.inf, -np.inf, 1.0])
    assert op("IsInf")(x, detect_negative=0).tolist() == [True, False, False]


def test_inputs_are_not_mutated():
    x = np.array([1.0, -1.0, 5.0], np.float32)
    x.setflags(write=False)
    op("Clip", 13)(x, np.array(0, np.float32), np.array(2, np.float32))
    op("Sum", 13)(x, x, x)
    op("Mean", 13)(x, x)
