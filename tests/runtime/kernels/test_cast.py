"""Cast kernels: strings, float8 saturation, float8e8m0 rounding, sub-byte BitCast."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.runtime.registry import resolve

ml_dtypes = pytest.importorskip("ml_dtypes")
STRING, FLOAT, INT32, E4M3FN, E5M2, E8M0, UINT4, INT4 = 8, 1, 6, 17, 19, 24, 21, 22


def op(name, opset=25):
    return resolve("", name, opset).fn


def test_number_to_string_and_back():
    x = np.array([1.5, np.inf, -np.inf, np.nan, 0.1], np.float32)
    text = op("Cast")(x, to=STRING)
    assert text.dtype == object and text.tolist() == ["1.5", "INF", "-INF", "NaN", "0.1"]
    back = op("Cast")(np.array(["+INF", "inf", "-INF", "NaN", "1e3"], dtype=object), to=FLOAT)
    assert back.dtype == np.float32
    assert back[:3].tolist() == [np.inf, np.inf, -np.inf] and np.isnan(back[3])
    ints = op("Cast")(np.array(["100", "100.5", "-7"], dtype=object), to=INT32)
    assert ints.dtype == np.int32 and ints.tolist() == [100, 100, -7]


def test_float8_saturation():
    x = np.array([1e6, -np.inf, np.nan, 300.0], np.float32)
    sat = op("Cast")(x, to=E4M3FN).astype(np.float32)
    assert sat[:2].tolist() == [448, -448] and np.isnan(sat[2])
    raw = op("Cast")(x, to=E4M3FN, saturate=0).astype(np.float32)
    assert np.isnan(raw[:3]).all()
    e5 = op("Cast")(x, to=E5M2, saturate=0).astype(np.float32)
    assert e5[:2].tolist() == [np.inf, -np.inf]


def test_float8e8m0_rounding_and_specials():
    x = np.array([0.124, 1.1, 2.0, np.inf, np.nan], np.float32)
    up = op("Cast")(x, to=E8M0).astype(np.float32)
    assert up[:3].tolist() == [0.125, 2.0, 2.0] and up[3] == 2.0**127 and np.isnan(up[4])
    down = op("Cast")(x, to=E8M0, round_mode="down").astype(np.float32)
    assert down[:3].tolist() == [0.0625, 1.0, 2.0]
    assert np.isnan(op("Cast")(x, to=E8M0, saturate=0).astype(np.float32)[3])


def test_castlike_and_legacy_string_type():
    like = np.zeros(1, ml_dtypes.bfloat16)
    assert op("CastLike")(np.array([1.0], np.float32), like).dtype == like.dtype
    assert resolve("", "Cast", 1).fn(np.array([1.7]), to="INT32").tolist() == [1]


def test_bitcast_keeps_bits():
    x = np.array([1.0, -2.0], np.float32)
    assert op("BitCast", 26)(x, to=INT32).tolist() == x.view(np.int32).tolist()
    nibbles = np.array([-1, 7, -8], ml_dtypes.int4)
    assert op("BitCast", 26)(nibbles, to=UINT4).astype(int).tolist() == [15, 7, 8]
    with pytest.raises(ValueError):
        op("BitCast", 26)(x, to=11)
