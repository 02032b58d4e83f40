"""The wire-format decoders: Python's decoding of short packed varints against numpy's."""

from __future__ import annotations

import numpy as np
import pytest

from edgerun.errors import ModelFormatError
from edgerun.runtime.protobuf import MASK64, WireReader, decode_varints
from tests.test_hostile import _varint

VALUES = [0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63), -300]


@pytest.mark.parametrize("count", [1, 3, len(VALUES)])
def test_python_and_numpy_decoding_agree(count: int) -> None:
    data = b"".join(_varint(v & MASK64) for v in VALUES[:count])  # negatives: ten bytes
    reader = WireReader(memoryview(data), "test")
    in_python = reader.packed_varints(0, len(data))
    in_numpy = decode_varints(np.frombuffer(data, np.uint8)).tolist()
    assert in_python == in_numpy == [v & MASK64 for v in VALUES[:count]]


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"\x96", "truncated packed varint"), (b"\xff" * 10 + b"\x01", "more than 10 bytes")],
)
def test_malformed_packed_varints_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        WireReader(memoryview(data), "test").packed_varints(0, len(data))
    with pytest.raises(ModelFormatError, match=message):
        decode_varints(np.frombuffer(data, np.uint8))
