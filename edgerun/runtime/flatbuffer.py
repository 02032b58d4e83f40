"""FlatBuffers, read directly from a buffer (usually a memory map) with struct and numpy.

Only reading, and only what a schema-driven reader needs: tables through their vtables,
scalars, strings, vectors of scalars as numpy views, vectors of tables. Every offset is
checked against the buffer before it is followed and every vector's length against the
bytes left, so a hostile file fails with one ``ModelFormatError``, never an IndexError or
an allocation sized by the file.
"""

from __future__ import annotations

import struct

import numpy as np

from edgerun.errors import ModelFormatError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_SCALARS = {
    "b": struct.Struct("<b"),
    "B": struct.Struct("<B"),
    "?": struct.Struct("<?"),
    "h": struct.Struct("<h"),
    "H": struct.Struct("<H"),
    "i": struct.Struct("<i"),
    "I": struct.Struct("<I"),
    "q": struct.Struct("<q"),
    "Q": struct.Struct("<Q"),
    "f": struct.Struct("<f"),
    "d": struct.Struct("<d"),
}


class FlatBuffer:
    """One FlatBuffers-encoded buffer; ``what`` names the file in errors."""

    def __init__(self, buf: memoryview, what: str) -> None:
        self.buf = buf
        self.size = len(buf)
        self.what = what

    def fail(self, problem: str) -> ModelFormatError:
        return ModelFormatError(f"{self.what}: {problem}")

    def _read(self, fmt: struct.Struct, pos: int) -> int:
        if pos < 0 or pos + fmt.size > self.size:
            raise self.fail(f"truncated or corrupt flatbuffer (offset {pos} is past the end)")
        return fmt.unpack_from(self.buf, pos)[0]

    def identifier(self) -> bytes:
        return bytes(self.buf[4:8]) if self.size >= 8 else b""

    def root(self) -> Table:
        return self.table_at(self._read(_U32, 0))

    def table_at(self, pos: int) -> Table:
        vtable = pos - self._read(_I32, pos)
        vsize = self._read(_U16, vtable)
        osize = self._read(_U16, vtable + 2)
        if vsize < 4 or vsize % 2 or vtable + vsize > self.size:
            raise self.fail(f"corrupt flatbuffer vtable at offset {vtable}")
        if osize < 4 or pos + osize > self.size:
            raise self.fail(f"corrupt flatbuffer table at offset {pos}")
        count = (vsize - 4) // 2
        fields = struct.unpack_from(f"<{count}H", self.buf, vtable + 4)
        if any(f and (f < 4 or f >= osize) for f in fields):
            raise self.fail(f"corrupt flatbuffer table at offset {pos} (field outside it)")
        return Table(self, pos, fields, osize)

    def follow(self, pos: int) -> int:
        """The target of the uoffset stored at ``pos``."""
        return pos + self._read(_U32, pos)

    def vector(self, pos: int, item_size: int) -> tuple[int, int]:
        """(first element's position, element count) of the vector at ``pos``."""
        count = self._read(_U32, pos)
        start = pos + 4
        if count * item_size > self.size - start:
            raise self.fail(
                f"corrupt flatbuffer: a vector of {count} elements at offset {pos} "
                "runs past the end of the file"
            )
        return start, count


class Table:
    """One table: fields by id (their position in the schema), absent ones take defaults."""

    __slots__ = ("fb", "fields", "osize", "pos")

    def __init__(self, fb: FlatBuffer, pos: int, fields: tuple[int, ...], osize: int) -> None:
        self.fb = fb
        self.pos = pos
        self.fields = fields
        self.osize = osize

    def _field(self, field: int, size: int) -> int:
        """The field's absolute position, or 0 when absent."""
        off = self.fields[field] if field < len(self.fields) else 0
        if off and off + size > self.osize:
            raise self.fb.fail(f"corrupt flatbuffer table at offset {self.pos}")
        return self.pos + off if off else 0

    def has(self, field: int) -> bool:
        return field < len(self.fields) and self.fields[field] != 0

    def scalar(self, field: int, fmt: str, default: int | float | bool = 0) -> int | float | bool:
        s = _SCALARS[fmt]
        pos = self._field(field, s.size)
        return s.unpack_from(self.fb.buf, pos)[0] if pos else default

    def _target(self, field: int) -> int | None:
        pos = self._field(field, 4)
        return self.fb.follow(pos) if pos else None

    def table(self, field: int) -> Table | None:
        target = self._target(field)
        return None if target is None else self.fb.table_at(target)

    def tables(self, field: int) -> list[Table]:
        target = self._target(field)
        if target is None:
            return []
        start, count = self.fb.vector(target, 4)
        return [self.fb.table_at(self.fb.follow(start + 4 * i)) for i in range(count)]

    def array(self, field: int, dtype: str) -> np.ndarray | None:
        """A vector of scalars as a read-only numpy view (None when absent)."""
        target = self._target(field)
        if target is None:
            return None
        dt = np.dtype(dtype)
        start, count = self.fb.vector(target, dt.itemsize)
        return np.frombuffer(self.fb.buf, dtype=dt, count=count, offset=start)

    def string(self, field: int) -> str:
        data = self.array(field, "u1")
        if data is None:
            return ""
        try:
            return data.tobytes().decode("utf-8")
        except UnicodeDecodeError:
            raise self.fb.fail("a string field is not valid UTF-8") from None
