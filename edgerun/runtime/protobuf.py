"""Protocol-buffer wire format, read directly from a buffer (usually a memory map).

Only what ONNX needs: a field iterator over a byte range and vectorised decoders for packed
repeated fields. Length-delimited fields come back as byte ranges, so big payloads
(initializers' raw_data) are never copied; they become numpy views in the ONNX reader.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgerun.errors import ModelFormatError

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
MASK64 = (1 << 64) - 1


class WireReader:
    """Field-level access to one protobuf-encoded buffer."""

    def __init__(self, buf: memoryview, what: str) -> None:
        self.buf = buf
        self.what = what  # names the file in errors

    def fail(self, problem: str) -> ModelFormatError:
        return ModelFormatError(f"{self.what}: {problem}")

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        buf, result, shift = self.buf, 0, 0
        while pos < end:
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result, pos
            shift += 7
            if shift >= 70:
                break
        raise self.fail("truncated or malformed protobuf varint")

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
        """Yield (field number, wire type, a, b) for each field in ``[start, end)``.

        For varints ``a`` is the value; otherwise ``[a, b)`` is the payload's byte range.
        """
        buf, pos = self.buf, start
        while pos < end:
            # one-byte varints (most keys, lengths and small values) without the call
            key = buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0:
                raise self.fail("not a valid protobuf (field number 0)")
            if wire == VARINT:
                value = buf[pos] if pos < end else 0x80
                if value < 0x80:
                    pos += 1
                else:
                    value, pos = self.varint(pos, end)
                yield number, wire, value, 0
                continue
            if wire == LEN:
                size = buf[pos] if pos < end else 0x80
                if size < 0x80:
                    pos += 1
                else:
                    size, pos = self.varint(pos, end)
                stop = pos + size
            elif wire == FIXED64:
                stop = pos + 8
            elif wire == FIXED32:
                stop = pos + 4
            else:
                raise self.fail(f"not a valid protobuf (wire type {wire} in field {number})")
            if stop > end:
                raise self.fail("truncated protobuf message (a field runs past its end)")
            yield number, wire, pos, stop
            pos = stop
        if pos != end:
            raise self.fail("truncated protobuf message")

    def text(self, a: int, b: int) -> str:
        try:
            return str(self.buf[a:b], "utf-8")  # decoded from the buffer, no bytes copy
        except UnicodeDecodeError:
            raise self.fail("a string field is not valid UTF-8") from None

    def packed_varints(self, a: int, b: int) -> list[int]:
        """The varints packed in bytes ``[a, b)``, decoded in Python: for short runs (a
        tensor's dims, an attribute's ints), where numpy's whole-array decoding costs more
        in calls than it saves. Values wrap to 64 bits, as decode_varints's do."""
        values, result, shift = [], 0, 0
        for byte in self.buf[a:b]:
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                values.append(result & MASK64)
                result = shift = 0
            else:
                shift += 7
                if shift >= 70:
                    raise self.fail("malformed packed varint field (more than 10 bytes)")
        if shift:
            raise self.fail("truncated packed varint field")
        return values

    def raw(self, a: int, b: int) -> bytes:
        return bytes(self.buf[a:b])

    def array(self, a: int, b: int, dtype: str) -> np.ndarray:
        """A read-only numpy view of bytes ``[a, b)``; no copy."""
        return np.frombuffer(
            self.buf, dtype=np.dtype(dtype), count=(b - a) // np.dtype(dtype).itemsize, offset=a
        )


def signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_varints(data: np.ndarray) -> np.ndarray:
    """Decode a packed run of varints (uint8 array) into uint64, whole-array."""
    if data.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if data.max() < 0x80:  # one byte each (small values, zero points): the bytes themselves
        return data.astype(np.uint64)
    ends = data < 0x80
    if not ends[-1]:
        raise ModelFormatError("truncated packed varint field")
    starts = np.flatnonzero(np.concatenate(([True], ends[:-1])))
    group = np.cumsum(np.concatenate(([0], ends[:-1].astype(np.int64))))
    position = np.arange(data.size) - starts[group]
    if position.max() > 9:
        raise ModelFormatError("malformed packed varint field (more than 10 bytes)")
    parts = (data & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64)
    return np.bitwise_or.reduceat(parts, starts)
