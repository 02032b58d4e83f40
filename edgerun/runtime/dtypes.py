"""ONNX element types and how the numpy runtime stores each one.

Types numpy has no dtype for are kept in a storage dtype with the same bits (bfloat16 and
the float8 family as unsigned integers) or, for sub-byte integers, unpacked one value per
byte, which is the value itself and so needs no decoding by kernels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ElementType:
    code: int  # TensorProto.DataType
    name: str  # numpy's name where numpy has the type, else ONNX's, lower case
    storage: np.dtype  # how values are held in memory once read
    bits: int  # bits per element on disk

    @property
    def native(self) -> bool:
        """Whether ``storage`` is the type itself rather than a container for its bits."""
        return self.storage.name == self.name


def _t(code: int, name: str, storage: str, bits: int) -> ElementType:
    return ElementType(code, name, np.dtype(storage), bits)


ELEMENT_TYPES: dict[int, ElementType] = {
    t.code: t
    for t in (
        _t(1, "float32", "<f4", 32),
        _t(2, "uint8", "u1", 8),
        _t(3, "int8", "i1", 8),
        _t(4, "uint16", "<u2", 16),
        _t(5, "int16", "<i2", 16),
        _t(6, "int32", "<i4", 32),
        _t(7, "int64", "<i8", 64),
        _t(8, "string", "O", 0),
        _t(9, "bool", "?", 8),
        _t(10, "float16", "<f2", 16),
        _t(11, "float64", "<f8", 64),
        _t(12, "uint32", "<u4", 32),
        _t(13, "uint64", "<u8", 64),
        _t(14, "complex64", "<c8", 64),
        _t(15, "complex128", "<c16", 128),
        _t(16, "bfloat16", "<u2", 16),
        _t(17, "float8e4m3fn", "u1", 8),
        _t(18, "float8e4m3fnuz", "u1", 8),
        _t(19, "float8e5m2", "u1", 8),
        _t(20, "float8e5m2fnuz", "u1", 8),
        _t(21, "uint4", "u1", 4),
        _t(22, "int4", "i1", 4),
        _t(23, "float4e2m1", "u1", 4),
        _t(24, "float8e8m0", "u1", 8),
        _t(25, "uint2", "u1", 2),
        _t(26, "int2", "i1", 2),
        _t(27, "float6e2m3", "u1", 6),
        _t(28, "float6e3m2", "u1", 6),
    )
}
BY_NAME: dict[str, ElementType] = {t.name: t for t in ELEMENT_TYPES.values()}
SIGNED_SUB_BYTE = {22, 26}
SUB_BYTE_INTEGERS = {21, 22, 25, 26}


def element_type(code: int) -> ElementType:
    try:
        return ELEMENT_TYPES[code]
    except KeyError:
        raise ValueError(f"unknown ONNX element type {code}") from None


def dtype_name(code: int) -> str:
    """The name edgerun's TensorSpec uses for an ONNX element type code (0: 'undefined')."""
    return ELEMENT_TYPES[code].name if code in ELEMENT_TYPES else "undefined"


def unpack_bits(packed: np.ndarray, code: int, count: int) -> np.ndarray:
    """Unpack 2-, 4- or 6-bit values stored lowest bits first, sign-extending signed types."""
    bits = ELEMENT_TYPES[code].bits
    stream = np.unpackbits(packed.astype(np.uint8, copy=False), bitorder="little")
    groups = stream[: count * bits].reshape(count, bits).astype(np.uint8)
    values = (groups << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)
    if code in SIGNED_SUB_BYTE:
        sign = 1 << (bits - 1)
        return ((values.astype(np.int16) ^ sign) - sign).astype(np.int8)
    return values


# ONNX element type -> the ml_dtypes name of the same type
ML_DTYPES = {
    16: "bfloat16",
    17: "float8_e4m3fn",
    18: "float8_e4m3fnuz",
    19: "float8_e5m2",
    20: "float8_e5m2fnuz",
    21: "uint4",
    22: "int4",
    23: "float4_e2m1fn",
    24: "float8_e8m0fnu",
    25: "uint2",
    26: "int2",
    27: "float6_e2m3fn",
    28: "float6_e3m2fn",
}


@functools.cache
def _ml_dtypes() -> Any:
    try:
        import ml_dtypes
    except ImportError:
        return None
    return ml_dtypes


def runtime_dtype(code: int) -> np.dtype:
    """How the runtime holds values of ``code``: numpy's own dtype, else ml_dtypes' where it
    is installed (it computes with them), else the storage dtype (bits, or small integers)."""
    etype = element_type(code)
    ml = _ml_dtypes() if code in ML_DTYPES else None
    if ml is None or not hasattr(ml, ML_DTYPES[code]):
        return etype.storage
    return np.dtype(getattr(ml, ML_DTYPES[code]))


def to_runtime(array: np.ndarray, code: int) -> np.ndarray:
    """Storage form -> runtime form (a view where the bits are the same)."""
    target = runtime_dtype(code)
    if array.dtype == target:
        return array
    if code in SUB_BYTE_INTEGERS:
        return array.astype(target)
    return array.view(target)


def to_storage(array: np.ndarray, code: int) -> np.ndarray:
    """Runtime form -> storage form: bits for float types numpy lacks, values for small ints."""
    etype = element_type(code)
    if array.dtype == etype.storage:
        return array
    if code in SUB_BYTE_INTEGERS:
        return array.astype(etype.storage)
    return array.view(etype.storage)
