"""Reads an ONNX ModelProto into edgerun's graph IR with numpy only.

The file is memory-mapped and initializers become numpy views over the map (or over the
memory-mapped external-data files), so loading a model costs its structure, not its weights.
A view may be misaligned (raw_data sits at any offset); the plan copies those it runs with.
External data resolves only inside the model's folder or bundle (see ``external.py``).
"""

from __future__ import annotations

import math
import mmap
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgerun.errors import ModelFormatError
from edgerun.runtime import budget, dtypes
from edgerun.runtime.graph import (
    ATTR_FLOAT,
    ATTR_FLOATS,
    ATTR_GRAPH,
    ATTR_GRAPHS,
    ATTR_INT,
    ATTR_INTS,
    ATTR_SPARSE_TENSOR,
    ATTR_SPARSE_TENSORS,
    ATTR_STRING,
    ATTR_STRINGS,
    ATTR_TENSOR,
    ATTR_TENSORS,
    ATTR_TYPE_PROTO,
    ATTR_TYPE_PROTOS,
    Attribute,
    Function,
    Graph,
    Model,
    Node,
    SparseTensor,
    ValueInfo,
    ValueType,
)
from edgerun.runtime.protobuf import (
    FIXED32,
    LEN,
    MASK64,
    VARINT,
    WireReader,
    decode_varints,
    signed64,
)

# Given an external-data location, returns that file's whole contents as a buffer.
ExternalResolver = Callable[[str], memoryview]

MAX_DEPTH = 64  # nested subgraphs and types; deeper is refused rather than risking the stack
MAX_RANK = 32  # numpy 1.24's limit on dimensions
# packed varint runs up to this long are decoded in Python: below it numpy's whole-array
# decoding costs more in calls than it saves (dims and attribute ints are a few bytes)
_PYTHON_DECODE_BYTES = 64
_TYPED_FIELDS = frozenset((4, 5, 7, 10, 11))  # TensorProto's float/int32/int64/double/uint64
MAX_INLINED_NODES = 1_000_000  # nodes after expanding function calls (a "billion laughs" bound)
EXTERNAL_KEYS = {"location", "offset", "length", "checksum"}
_DIGITS = re.compile("[0-9]{1,20}")


def read_onnx(path: str | os.PathLike[str]) -> Model:
    """Read an ``.onnx`` file; its external data may only come from its own folder."""
    from edgerun.runtime.external import FolderResolver

    path = Path(path)
    buf = map_file(path)
    return parse_model(buf, FolderResolver(path.parent), what=str(path))


def map_file(path: Path) -> memoryview:
    """Memory-map a whole regular file read-only (an empty file gets an empty buffer).

    Opened without blocking and checked after opening, so a FIFO or a device named like a
    model is refused instead of hanging the loader or reading without end.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ModelFormatError(f"{path}: not a regular file")
        if info.st_size == 0:
            return memoryview(b"")
        return memoryview(mmap.mmap(fd, 0, access=mmap.ACCESS_READ))
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def parse_model(buf: memoryview, external: ExternalResolver | None, what: str = "model") -> Model:
    if len(buf) == 0:
        raise ModelFormatError(f"{what}: empty file, not an ONNX model")
    model = _Parser(WireReader(buf, what), external).model(0, len(buf))
    _check_outputs_defined(model.graph, what)
    _check_declared_inputs(model, what)
    _check_function_expansion(model, what)
    return model


def _check_outputs_defined(graph: Graph, what: str) -> None:
    """Each output of the main graph must be an input, an initializer or a node's output.

    (Subgraphs may also return outer values; the plan checks those.)
    """
    defined = {v.name for v in graph.inputs} | graph.initializers.keys()
    defined |= graph.sparse_initializers.keys() | {o for n in graph.nodes for o in n.outputs}
    for v in graph.outputs:
        if v.name not in defined:
            raise ModelFormatError(
                f"{what}: graph output {v.name!r} is not an input, an initializer "
                "or any node's output"
            )


def _check_declared_inputs(model: Model, what: str) -> None:
    """A fixed input shape that no board could hold is refused at load, naming the input."""
    for v in model.graph.real_inputs:
        shape = v.type.shape if v.type and v.type.kind == "tensor" else None
        if shape is None or not all(isinstance(d, int) and d >= 0 for d in shape):
            continue
        etype = dtypes.ELEMENT_TYPES.get(v.type.elem_type)  # type: ignore[union-attr]
        itemsize = max(etype.storage.itemsize, 1) if etype and etype.code != 8 else 8
        budget.check_bytes(
            math.prod(shape) * itemsize,  # type: ignore[arg-type]
            f"{what}: input {v.name!r} of declared shape {list(shape)}",
        )


def _check_function_expansion(model: Model, what: str) -> None:
    """Refuse local functions that call themselves or expand to an absurd number of nodes.

    Sizes are counted callees first (Kahn's algorithm over the call graph), so a chain of
    functions that each call the next twice is caught before anything is expanded.
    """
    table = {(f.domain, f.name): f for f in model.functions}
    callees = {
        key: {(n.domain, n.op_type) for n in f.nodes} & table.keys() for key, f in table.items()
    }
    waiting = {key: len(called) for key, called in callees.items()}
    callers: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, called in callees.items():
        for callee in called:
            callers.setdefault(callee, []).append(key)
    ready = [key for key, count in waiting.items() if count == 0]
    sizes: dict[tuple[str, str], int] = {}
    while ready:
        key = ready.pop()
        sizes[key] = sum(sizes.get((n.domain, n.op_type), 1) for n in table[key].nodes)
        if sizes[key] > MAX_INLINED_NODES:
            raise ModelFormatError(
                f"{what}: function {key[1]!r} expands to {sizes[key]} nodes, "
                f"over the limit of {MAX_INLINED_NODES}"
            )
        for caller in callers.get(key, []):
            waiting[caller] -= 1
            if waiting[caller] == 0:
                ready.append(caller)
    if len(sizes) != len(table):
        stuck = next(key for key in table if key not in sizes)
        raise ModelFormatError(f"{what}: function {stuck[1]!r} calls itself, directly or not")
    total = sum(sizes.get((n.domain, n.op_type), 1) for n in model.graph.walk())
    if total > MAX_INLINED_NODES:
        raise ModelFormatError(
            f"{what}: the graph expands to {total} nodes once its function calls are inlined, "
            f"over the limit of {MAX_INLINED_NODES}"
        )


class _Repeated:
    """A repeated numeric field, packed (byte ranges) or not (single values), in file order."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, int] | int] = []

    def add(self, wire: int, a: int, b: int) -> None:
        self.chunks.append((a, b) if wire != VARINT else a)

    def __bool__(self) -> bool:
        return bool(self.chunks)

    def values(self, r: WireReader) -> list[int]:
        """The varints as Python ints (unsigned 64-bit): short runs decoded in Python, long
        ones whole-array."""
        out: list[int] = []
        for c in self.chunks:
            if not isinstance(c, tuple):
                out.append(c & MASK64)
            elif c[1] - c[0] <= _PYTHON_DECODE_BYTES:
                out.extend(r.packed_varints(*c))
            else:
                out.extend(decode_varints(r.array(*c, "u1")).tolist())
        return out

    def signed(self, r: WireReader) -> list[int]:
        """The varints as int64 values: dims, an attribute's ints."""
        return [signed64(v) for v in self.values(r)]

    def varints(self, r: WireReader) -> np.ndarray:
        if all(
            not isinstance(c, tuple) or c[1] - c[0] <= _PYTHON_DECODE_BYTES for c in self.chunks
        ):
            return np.array(self.values(r), np.uint64)
        parts = [
            decode_varints(r.array(*c, "u1")) if isinstance(c, tuple) else np.array([c], np.uint64)
            for c in self.chunks
        ]
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    def fixed(self, r: WireReader, dtype: str) -> np.ndarray:
        if any(not isinstance(c, tuple) for c in self.chunks):
            raise r.fail("a fixed-width repeated field was encoded as varints")
        parts = [r.array(a, b, dtype) for a, b in self.chunks]  # type: ignore[misc]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


class DeferredValueInfo(ValueInfo):
    """A graph's value_info entry whose type is parsed when it is first read. Exporters
    annotate every intermediate value (a QDQ MobileNetV2 has 211, MiniLM 156) and a load
    reads few if any of them (shape inference falls back to them where it has no rule), so
    parsing them all took 1.5-2.6 ms of each load. A malformed type raises the
    ModelFormatError it raised at load when it is read instead."""

    def __init__(self, name: str, doc_string: str, parse: Callable[[], ValueType]) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "doc_string", doc_string)
        object.__setattr__(self, "_parse", parse)

    @property  # type: ignore[override]
    def type(self) -> ValueType | None:
        parsed = self.__dict__.get("_type")
        if parsed is None:
            parsed = self.__dict__["_parse"]()
            object.__setattr__(self, "_type", parsed)
        return parsed


class _Parser:
    def __init__(self, r: WireReader, external: ExternalResolver | None) -> None:
        self.r = r
        self.external = external
        self.depth = 0

    def expect(self, wire: int, want: int, field: str) -> None:
        if wire != want:
            raise self.r.fail(f"field {field} has the wrong protobuf wire type")

    # -- ModelProto ---------------------------------------------------------------------
    def model(self, start: int, end: int) -> Model:
        r = self.r
        m = Model(graph=None, opset_imports={})  # type: ignore[arg-type]
        for num, wire, a, b in r.fields(start, end):
            if num == 1:
                m.ir_version = signed64(a)
            elif num == 8:
                domain, version = self.opset_id(a, b)
                m.opset_imports[domain] = version
            elif num in (2, 3, 4, 6):
                self.expect(wire, LEN, "ModelProto text")
                name = {2: "producer_name", 3: "producer_version", 4: "domain", 6: "doc_string"}
                setattr(m, name[num], r.text(a, b))
            elif num == 5:
                m.model_version = signed64(a)
            elif num == 7:
                self.expect(wire, LEN, "ModelProto.graph")
                m.graph = self.graph(a, b)
            elif num == 14:
                key, value = self.string_entry(a, b)
                m.metadata[key] = value
            elif num == 25:
                m.functions.append(self.function(a, b))
        if m.graph is None:
            raise r.fail("not an ONNX model (no graph); is this the right file?")
        return m

    def opset_id(self, start: int, end: int) -> tuple[str, int]:
        domain, version = "", 0
        for num, _wire, a, b in self.r.fields(start, end):
            if num == 1:
                domain = self.r.text(a, b)
            elif num == 2:
                version = signed64(a)
        return ("" if domain == "ai.onnx" else domain), version

    def string_entry(self, start: int, end: int) -> tuple[str, str]:
        key = value = ""
        for num, wire, a, b in self.r.fields(start, end):
            self.expect(wire, LEN, "StringStringEntryProto")
            if num == 1:
                key = self.r.text(a, b)
            elif num == 2:
                value = self.r.text(a, b)
        return key, value

    # -- GraphProto ---------------------------------------------------------------------
    def graph(self, start: int, end: int) -> Graph:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.r.fail(f"types or subgraphs nested deeper than {MAX_DEPTH} levels")
        r = self.r
        g = Graph(name="", nodes=[], inputs=[], outputs=[])
        for num, _wire, a, b in r.fields(start, end):
            if num == 1:
                g.nodes.append(self.node(a, b))
            elif num == 2:
                g.name = r.text(a, b)
            elif num == 5:
                name, array, code = self.tensor(a, b)
                g.initializers[name] = array
                g.initializer_types[name] = code
            elif num == 15:
                sparse = self.sparse_tensor(a, b)
                g.sparse_initializers[sparse.name] = sparse
            elif num == 10:
                g.doc_string = r.text(a, b)
            elif num in (11, 12):
                (g.inputs if num == 11 else g.outputs).append(self.value_info(a, b))
            elif num == 13:
                g.value_info.append(self.value_info(a, b, deferred=True))
        self.depth -= 1
        return g

    def node(self, start: int, end: int) -> Node:
        r = self.r
        n = Node(op_type="", inputs=[], outputs=[])
        for num, wire, a, b in r.fields(start, end):
            if wire != LEN:  # inline: a node has tens of fields, all strings or messages
                self.expect(wire, LEN, "NodeProto")
            if num == 1:
                n.inputs.append(r.text(a, b))
            elif num == 2:
                n.outputs.append(r.text(a, b))
            elif num == 3:
                n.name = r.text(a, b)
            elif num == 4:
                n.op_type = r.text(a, b)
            elif num == 7:
                n.domain = r.text(a, b)
            elif num == 8:
                n.overload = r.text(a, b)
            elif num == 5:
                attribute = self.attribute(a, b)
                n.attributes[attribute.name] = attribute
            elif num == 6:
                n.doc_string = r.text(a, b)
        if n.domain == "ai.onnx":
            n.domain = ""
        return n

    def value_info(self, start: int, end: int, deferred: bool = False) -> ValueInfo:
        """A ValueInfoProto; ``deferred``: its type parsed when first read (DeferredValueInfo)."""
        name, vtype, doc, span = "", None, "", None
        for num, wire, a, b in self.r.fields(start, end):
            self.expect(wire, LEN, "ValueInfoProto")
            if num == 1:
                name = self.r.text(a, b)
            elif num == 2:
                span = (a, b)
                if not deferred:
                    vtype = self.type_proto(a, b)
            elif num == 3:
                doc = self.r.text(a, b)
        if deferred and span is not None:
            return DeferredValueInfo(name, doc, self._type_at(*span))
        return ValueInfo(name, vtype, doc)

    def _type_at(self, start: int, end: int) -> Callable[[], ValueType]:
        """type_proto(start, end) later, by a parser of its own (no state shared with this
        one or another deferred read) that counts nesting from this one's depth now."""
        depth = self.depth

        def parse() -> ValueType:
            parser = _Parser(self.r, self.external)
            parser.depth = depth
            return parser.type_proto(start, end)

        return parse

    def type_proto(self, start: int, end: int) -> ValueType:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.r.fail(f"types or subgraphs nested deeper than {MAX_DEPTH} levels")
        try:
            return self._type_proto(start, end)
        finally:
            self.depth -= 1

    def _type_proto(self, start: int, end: int) -> ValueType:
        r = self.r
        vtype = ValueType("none")
        denotation = ""
        for num, _wire, a, b in r.fields(start, end):
            if num in (1, 8):
                elem, shape = self.tensor_type(a, b)
                vtype = ValueType("tensor" if num == 1 else "sparse_tensor", elem, shape)
            elif num in (4, 9):
                inner = self.first_type(a, b, 1)
                vtype = ValueType("sequence" if num == 4 else "optional", elem=inner)
            elif num == 5:
                vtype = self.map_type(a, b)
            elif num == 7:
                vtype = ValueType("opaque")
            elif num == 6:
                denotation = r.text(a, b)
        if denotation:
            vtype = ValueType(vtype.kind, vtype.elem_type, vtype.shape, vtype.elem, denotation)
        return vtype

    def first_type(self, start: int, end: int, field: int) -> ValueType | None:
        found = None
        for num, wire, a, b in self.r.fields(start, end):
            if num == field and wire == LEN:
                found = self.type_proto(a, b)
        return found

    def map_type(self, start: int, end: int) -> ValueType:
        key, value = 0, None
        for num, _wire, a, b in self.r.fields(start, end):
            if num == 1:
                key = a
            elif num == 2:
                value = self.type_proto(a, b)
        return ValueType("map", key, elem=value)

    def tensor_type(self, start: int, end: int) -> tuple[int, tuple | None]:
        elem, shape = 0, None
        for num, _wire, a, b in self.r.fields(start, end):
            if num == 1:
                elem = a
            elif num == 2:
                shape = tuple(self.dimension(da, db) for _, _, da, db in self.r.fields(a, b))
        return elem, shape

    def dimension(self, start: int, end: int) -> int | str | None:
        dim: int | str | None = None
        for num, _wire, a, b in self.r.fields(start, end):
            if num == 1:
                dim = signed64(a)
            elif num == 2:
                dim = self.r.text(a, b)
        return dim

    # -- AttributeProto -----------------------------------------------------------------
    def attribute(self, start: int, end: int) -> Attribute:
        r = self.r
        name, ref, atype = "", "", 0
        scalar: dict[int, object] = {}
        floats, ints = _Repeated(), _Repeated()
        lists: dict[int, list] = {9: [], 10: [], 11: [], 23: [], 15: []}
        types: list[int] = []
        for num, wire, a, b in r.fields(start, end):
            if num == 1:
                name = r.text(a, b)
            elif num == 21:
                ref = r.text(a, b)
            elif num == 20:
                atype = a
            elif num == 2:
                self.expect(wire, FIXED32, "AttributeProto.f")
                scalar[2] = float(r.array(a, b, "<f4")[0])
            elif num == 3:
                scalar[3] = signed64(a)
            elif num == 4:
                scalar[4] = r.raw(a, b)
            elif num in (5, 10):
                _, array, code = self.tensor(a, b)
                scalar.setdefault(5, array) if num == 5 else lists[10].append(array)
                types.append(code)
            elif num in (6, 11):
                g = self.graph(a, b)
                scalar.setdefault(6, g) if num == 6 else lists[11].append(g)
            elif num in (22, 23):
                s = self.sparse_tensor(a, b)
                scalar.setdefault(22, s) if num == 22 else lists[23].append(s)
            elif num in (14, 15):
                t = self.type_proto(a, b)
                scalar.setdefault(14, t) if num == 14 else lists[15].append(t)
            elif num == 7:
                floats.add(wire, a, b)
            elif num == 8:
                ints.add(wire, a, b)
            elif num == 9:
                lists[9].append(r.raw(a, b))
        atype = atype or self._guess_attr_type(scalar, floats, ints, lists)
        value: object
        if atype == ATTR_FLOATS:
            value = [float(v) for v in floats.fixed(r, "<f4")] if floats else []
        elif atype == ATTR_INTS:
            value = ints.signed(r)
        elif atype in _LIST_FIELD:
            value = lists[_LIST_FIELD[atype]]
        elif atype in _SCALAR_FIELD:
            if _SCALAR_FIELD[atype] not in scalar and not ref:
                raise r.fail(f"attribute {name!r} has type {atype} but no value")
            value = scalar.get(_SCALAR_FIELD[atype])
        else:
            raise r.fail(f"attribute {name!r} has unknown type {atype}")
        return Attribute(name, atype, value, ref, tuple(types))

    @staticmethod
    def _guess_attr_type(scalar: dict, floats: _Repeated, ints: _Repeated, lists: dict) -> int:
        # IR < 3 files may omit AttributeProto.type; the field that is set decides.
        for atype, field in _SCALAR_FIELD.items():
            if field in scalar:
                return atype
        if floats:
            return ATTR_FLOATS
        if ints:
            return ATTR_INTS
        for atype, field in _LIST_FIELD.items():
            if lists[field]:
                return atype
        return 0

    # -- TensorProto ----------------------------------------------------------------------
    def tensor(self, start: int, end: int) -> tuple[str, np.ndarray, int]:
        """Returns (name, array in storage dtype, element type code)."""
        r = self.r
        name, code, raw = "", 0, None
        dims: list[int] = []
        dims_field = _Repeated()
        fields: dict[int, _Repeated] = {}
        strings: list[bytes] = []
        external: dict[str, str] = {}
        location = 0
        for num, wire, a, b in r.fields(start, end):
            if num == 1:
                dims_field.add(wire, a, b)
            elif num == 2:
                code = a
            elif num == 3:
                raise r.fail("segmented tensors are not supported")
            elif num in _TYPED_FIELDS:
                repeated = fields.get(num)
                if repeated is None:
                    repeated = fields[num] = _Repeated()
                repeated.add(wire, a, b)
            elif num == 6:
                strings.append(r.raw(a, b))
            elif num == 8:
                name = r.text(a, b)
            elif num == 9:
                self.expect(wire, LEN, "TensorProto.raw_data")
                raw = (a, b)
            elif num == 13:
                key, value = self.string_entry(a, b)
                external[key] = value
            elif num == 14:
                location = a
        if dims_field:
            dims = dims_field.signed(r)
        where = f"tensor {name!r}"
        if code not in dtypes.ELEMENT_TYPES:
            raise r.fail(f"{where} has unknown or undefined element type {code}")
        if any(d < 0 for d in dims):
            raise r.fail(f"{where} has a negative dimension {dims}")
        if len(dims) > MAX_RANK:
            raise r.fail(f"{where} has {len(dims)} dimensions, more than {MAX_RANK}")
        count = math.prod(dims)
        etype = dtypes.ELEMENT_TYPES[code]
        if location == 1:
            data = self.external_bytes(external, where)
            array = self.from_bytes(data, etype, count, where)
        elif raw is not None:
            array = self.from_bytes(r.array(raw[0], raw[1], "u1"), etype, count, where)
        else:
            array = self.from_typed(etype, fields, strings, count, where)
        # protobuf puts raw_data at any offset, so a view may be misaligned: the plan copies
        # those it runs with (Plan, _aligned); passes replace many before that (Winograd's
        # filters, folded BatchNorm), so copying here was a copy of weights no step reads
        return name, dtypes.to_runtime(array.reshape(dims), code), code

    def from_bytes(
        self, data: np.ndarray, etype: dtypes.ElementType, count: int, where: str
    ) -> np.ndarray:
        if etype.code == 8:
            raise self.r.fail(f"{where}: string tensors cannot use raw_data")
        if etype.bits < 8:
            need = -(-count * etype.bits // 8)
            if data.size != need:
                raise self.r.fail(f"{where}: holds {data.size} bytes, its shape needs {need}")
            return dtypes.unpack_bits(data, etype.code, count)
        need = count * etype.storage.itemsize
        if data.size != need:
            raise self.r.fail(f"{where}: holds {data.size} bytes, its shape needs {need}")
        return data.view(etype.storage)

    def from_typed(
        self, etype: dtypes.ElementType, fields: dict, strings: list, count: int, where: str
    ) -> np.ndarray:
        code, r = etype.code, self.r
        if code == 8:
            array = np.empty(len(strings), dtype=object)
            array[:] = strings
        elif code in (1, 14):
            array = fields[4].fixed(r, "<f4") if 4 in fields else np.zeros(0, "<f4")
            array = array.view(etype.storage)
        elif code in (11, 15):
            array = fields[10].fixed(r, "<f8") if 10 in fields else np.zeros(0, "<f8")
            array = array.view(etype.storage)
        elif code == 7:
            array = fields[7].varints(r).view(np.int64) if 7 in fields else np.zeros(0, np.int64)
        elif code in (12, 13):
            array = (fields[11].varints(r) if 11 in fields else np.zeros(0, np.uint64)).astype(
                etype.storage
            )
        else:
            words = (
                fields[5].varints(r).astype(np.uint32) if 5 in fields else np.zeros(0, np.uint32)
            )
            if etype.bits < 8 and etype.bits != 6:
                if words.size * 8 < count * etype.bits:
                    raise r.fail(f"{where}: holds too few packed values for its shape")
                array = dtypes.unpack_bits(words.astype(np.uint8), code, count)
            elif code == 9:
                array = words != 0
            elif etype.bits == 6:
                array = (words & 0x3F).astype(np.uint8)
            else:  # one element per word, in its low bits
                unsigned = np.dtype(f"u{etype.storage.itemsize}")
                array = words.astype(unsigned).view(etype.storage)
        if array.size != count:
            raise r.fail(f"{where}: holds {array.size} values, its shape needs {count}")
        return array

    def external_bytes(self, entries: dict[str, str], where: str) -> np.ndarray:
        r = self.r
        unknown = set(entries) - EXTERNAL_KEYS
        if unknown:
            raise r.fail(f"{where}: unknown external_data key(s) {sorted(unknown)}")
        location = entries.get("location", "")
        if self.external is None:
            raise r.fail(f"{where}: external data {location!r} but no folder to read it from")
        for key in ("offset", "length"):
            if key in entries and not _DIGITS.fullmatch(entries[key]):
                problem = "negative" if entries[key].startswith("-") else "not a decimal integer"
                raise r.fail(f"{where}: external_data {key} {entries[key]!r} is {problem}")
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
        buf = self.external(location)
        stop = len(buf) if length is None else offset + length
        if offset > len(buf) or stop > len(buf):
            raise r.fail(f"{where}: external data {location!r} is shorter than offset + length")
        return np.frombuffer(buf, dtype=np.uint8, count=stop - offset, offset=offset)

    def sparse_tensor(self, start: int, end: int) -> SparseTensor:
        values = indices = None
        values_type = 0
        name = ""
        dims: list[int] = []
        dims_field = _Repeated()
        for num, wire, a, b in self.r.fields(start, end):
            if num == 1:
                name, values, values_type = self.tensor(a, b)
            elif num == 2:
                _, indices, _ = self.tensor(a, b)
            elif num == 3:
                dims_field.add(wire, a, b)
        if values is None or indices is None:
            raise self.r.fail(f"sparse tensor {name!r} lacks values or indices")
        if dims_field:
            dims = dims_field.signed(self.r)
        self.check_sparse(values, indices, dims, f"sparse tensor {name!r}")
        return SparseTensor(values, indices, tuple(dims), values_type, name)

    def check_sparse(
        self, values: np.ndarray, indices: np.ndarray, dims: list[int], where: str
    ) -> None:
        """Dims within the budget and every index inside them, so densifying cannot fail."""
        if any(d < 0 for d in dims) or len(dims) > MAX_RANK:
            raise self.r.fail(f"{where} has invalid dims {dims}")
        if values.ndim != 1 or values.dtype.kind == "O":
            raise self.r.fail(f"{where}: values must be a 1-D numeric tensor")
        nnz = values.shape[0]
        if indices.dtype.kind not in "iu" or indices.shape not in ((nnz,), (nnz, len(dims))):
            raise self.r.fail(f"{where}: indices of shape {list(indices.shape)} do not fit")
        budget.check(dims, values.dtype, f"{self.r.what}: {where}")
        bounds = math.prod(dims) if indices.ndim == 1 else np.array(dims, np.int64)
        if indices.size and (np.any(indices < 0) or np.any(indices >= bounds)):
            raise self.r.fail(f"{where}: an index lies outside its dims {dims}")

    # -- FunctionProto ----------------------------------------------------------------------
    def function(self, start: int, end: int) -> Function:
        r = self.r
        f = Function("", "", [], [], [], {}, [], {})
        for num, _wire, a, b in r.fields(start, end):
            if num in (1, 10, 8, 13):
                attr = {1: "name", 10: "domain", 8: "doc_string", 13: "overload"}[num]
                setattr(f, attr, r.text(a, b))
            elif num in (4, 5, 6):
                {4: f.inputs, 5: f.outputs, 6: f.attributes}[num].append(r.text(a, b))
            elif num == 11:
                attribute = self.attribute(a, b)
                f.attribute_defaults[attribute.name] = attribute
            elif num == 7:
                f.nodes.append(self.node(a, b))
            elif num == 9:
                domain, version = self.opset_id(a, b)
                f.opset_imports[domain] = version
            elif num == 12:
                f.value_info.append(self.value_info(a, b))
        return f


_SCALAR_FIELD = {
    ATTR_FLOAT: 2,
    ATTR_INT: 3,
    ATTR_STRING: 4,
    ATTR_TENSOR: 5,
    ATTR_GRAPH: 6,
    ATTR_SPARSE_TENSOR: 22,
    ATTR_TYPE_PROTO: 14,
}
_LIST_FIELD = {
    ATTR_STRINGS: 9,
    ATTR_TENSORS: 10,
    ATTR_GRAPHS: 11,
    ATTR_SPARSE_TENSORS: 23,
    ATTR_TYPE_PROTOS: 15,
}
