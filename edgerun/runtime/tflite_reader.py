"""Reads a TFLite flatbuffer into edgerun's graph IR with numpy only.

The file is memory-mapped and constant tensors become numpy views over the map (buffers
inside the flatbuffer and those stored after it through offset/size alike). Operators keep
their TFLite names under the ``tflite`` domain; their builtin options become attributes
named like the schema's fields, and quantized operators carry one ``quant`` attribute
holding every input's and output's quantization parameters. Field ids follow
tensorflow/compiler/mlir/lite/schema/schema.fbs.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerun.errors import ModelFormatError
from edgerun.runtime import dtypes
from edgerun.runtime.flatbuffer import FlatBuffer, Table
from edgerun.runtime.graph import (
    ATTR_FLOAT,
    ATTR_GRAPH,
    ATTR_INT,
    ATTR_INTS,
    ATTR_STRING,
    Attribute,
    Graph,
    Model,
    Node,
    SparseTensor,
    ValueInfo,
    ValueType,
)
from edgerun.runtime.onnx_reader import map_file
from edgerun.specs import Quantization, TensorSpec

DOMAIN = "tflite"
CUSTOM_DOMAIN = "tflite.custom"
ATTR_QUANT = 100  # attribute type of ``quant``: a TensorQuant, not an ONNX attribute type
MAX_DENSE_ELEMENTS = 1 << 31  # a sparse constant larger than this once dense is refused
MAX_WINDOW = 1 << 16  # strides, dilations, filter and block sizes beyond this are refused
_WINDOW = ("stride_", "dilation_", "filter_", "block_size")

# TensorType -> ONNX element type code (0: no numpy equivalent, e.g. RESOURCE, VARIANT)
TENSOR_TYPES = {
    0: 1, 1: 10, 2: 6, 3: 2, 4: 7, 5: 8, 6: 9, 7: 5, 8: 14, 9: 3, 10: 11,
    11: 15, 12: 13, 13: 0, 14: 0, 15: 12, 16: 4, 17: 22, 18: 16, 19: 26, 20: 21,
}  # fmt: skip

_BUILTIN_NAMES = (  # BuiltinOperator, in code order
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE "
    "EMBEDDING_LOOKUP FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D "
    "LOCAL_RESPONSE_NORMALIZATION LOGISTIC LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU "
    "RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX SPACE_TO_DEPTH SVDF TANH "
    "CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD "
    "UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN "
    "SUB DIV SQUEEZE UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN "
    "EXP TOPK_V2 SPLIT LOG_SOFTMAX DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM "
    "ARG_MAX MINIMUM LESS NEG PADV2 GREATER GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN "
    "TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL LOG SUM SQRT RSQRT "
    "SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND "
    "LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD "
    "RANGE RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V "
    "UNIQUE CEIL REVERSE_V2 ADD_N GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG "
    "QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF WHILE NON_MAX_SUPPRESSION_V4 "
    "NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL "
    "PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL "
    "COMPLEX_ABS HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL "
    "CONV_3D_TRANSPOSE VAR_HANDLE READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS "
    "RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL GELU DYNAMIC_UPDATE_SLICE "
    "RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 "
    "UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT"
)
BUILTIN_OPERATORS = _BUILTIN_NAMES.split()
CUSTOM = 32

PADDINGS = ("SAME", "VALID")
ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")

# op -> (BuiltinOptions union type, its table's fields in id order as "name:kind[=default]";
# "_" skips a deprecated id). kinds: i int32, b int8, ? bool, f float32, ints [int32],
# pad Padding, act ActivationFunctionType.
_ACT = "fused_activation_function:act"
_POOL = f"padding:pad stride_w:i stride_h:i filter_width:i filter_height:i {_ACT}"
_BINARY = f"{_ACT} pot_scale_int16:?=1"
_OPTIONS: dict[str, tuple[int, str]] = {
    "CONV_2D": (
        1,
        f"padding:pad stride_w:i stride_h:i {_ACT} dilation_w_factor:i=1 "
        "dilation_h_factor:i=1 quantized_bias_type:b",
    ),
    "DEPTHWISE_CONV_2D": (
        2,
        f"padding:pad stride_w:i stride_h:i depth_multiplier:i {_ACT} dilation_w_factor:i=1 "
        "dilation_h_factor:i=1",
    ),
    "AVERAGE_POOL_2D": (5, _POOL),
    "MAX_POOL_2D": (5, _POOL),
    "L2_POOL_2D": (5, _POOL),
    "FULLY_CONNECTED": (
        8,
        f"{_ACT} weights_format:b keep_num_dims:? asymmetric_quantize_inputs:? "
        "quantized_bias_type:b",
    ),
    "SOFTMAX": (9, "beta:f"),
    "CONCATENATION": (10, f"axis:i {_ACT}"),
    "ADD": (11, _BINARY),
    "L2_NORMALIZATION": (12, _ACT),
    "RESIZE_BILINEAR": (15, "_ _ align_corners:? half_pixel_centers:?"),
    "RESHAPE": (17, "new_shape:ints"),
    "SPACE_TO_DEPTH": (19, "block_size:i"),
    "MUL": (21, _ACT),
    "GATHER": (23, "axis:i batch_dims:i"),
    "MEAN": (27, "keep_dims:?"),
    "SUM": (27, "keep_dims:?"),
    "REDUCE_MAX": (27, "keep_dims:?"),
    "REDUCE_MIN": (27, "keep_dims:?"),
    "REDUCE_PROD": (27, "keep_dims:?"),
    "REDUCE_ANY": (27, "keep_dims:?"),
    "REDUCE_ALL": (27, "keep_dims:?"),
    "SUB": (28, _BINARY),
    "DIV": (29, _ACT),
    "SQUEEZE": (30, "squeeze_dims:ints"),
    "STRIDED_SLICE": (
        32,
        "begin_mask:i end_mask:i ellipsis_mask:i new_axis_mask:i shrink_axis_mask:i offset:?",
    ),
    "SPLIT": (35, "num_splits:i"),
    "ARG_MAX": (40, "output_type:b"),
    "ARG_MIN": (57, "output_type:b"),
    "TRANSPOSE_CONV": (
        49,
        f"padding:pad stride_w:i stride_h:i {_ACT} quantized_bias_type:b",
    ),
    "PACK": (59, "values_count:i axis:i"),
    "UNPACK": (64, "num:i axis:i"),
    "RESIZE_NEAREST_NEIGHBOR": (74, "align_corners:? half_pixel_centers:?"),
    "LEAKY_RELU": (75, "alpha:f"),
    "MIRROR_PAD": (77, "mode:b"),
    "SPLIT_V": (79, "num_splits:i"),
    "DEPTH_TO_SPACE": (94, "block_size:i"),
    "BATCH_MATMUL": (101, "adj_x:? adj_y:? asymmetric_quantize_inputs:?"),
    "GELU": (116, "approximate:?"),
}
# Control flow: option fields that name subgraphs, and the graph attribute each becomes.
_SUBGRAPH_OPTIONS = {
    "IF": (92, ("then_branch", "else_branch")),
    "WHILE": (93, ("cond", "body")),
}
# Ops whose kernels need their output's element type (ONNX code) as ``out_dtype``.
_OUT_DTYPE = {"CAST", "SHAPE", "ARG_MAX", "ARG_MIN", "QUANTIZE", "DEQUANTIZE"}


@dataclass(frozen=True, eq=False)
class QuantParams:
    """A tensor's affine quantization: real = scale * (q - zero_point), along ``dimension``
    when there is more than one scale."""

    scale: np.ndarray  # float32, 1-D
    zero_point: np.ndarray  # int64, 1-D, as long as scale
    dimension: int
    dtype: np.dtype  # the quantized tensor's element type

    @property
    def per_channel(self) -> bool:
        return self.scale.size > 1

    def spec(self) -> Quantization:
        axis = self.dimension if self.per_channel else None
        scale = tuple(float(s) for s in self.scale)
        return Quantization(scale, tuple(int(z) for z in self.zero_point), axis)


@dataclass(frozen=True, eq=False)
class TensorQuant:
    """The ``quant`` attribute: each input's and output's parameters (None: not quantized)."""

    inputs: tuple[QuantParams | None, ...]
    outputs: tuple[QuantParams | None, ...]


@dataclass(frozen=True)
class QuantizedValueInfo(ValueInfo):
    quant: QuantParams | None = None

    def spec(self) -> TensorSpec:
        s = super().spec()
        return TensorSpec(s.name, s.shape, s.dtype, self.quant.spec() if self.quant else None)


def read_tflite(path: str | os.PathLike[str]) -> Model:
    path = Path(path)
    return parse_tflite(map_file(path), what=str(path))


def parse_tflite(buf: memoryview, what: str = "model") -> Model:
    if len(buf) < 8:
        raise ModelFormatError(f"{what}: too short to be a TFLite model")
    fb = FlatBuffer(buf, what)
    if fb.identifier() != b"TFL3":
        raise fb.fail("not a TFLite model (no TFL3 file identifier)")
    return _Reader(fb).model()


@dataclass
class _Tensor:
    name: str
    code: int  # ONNX element type
    shape: tuple[int, ...]
    signature: tuple[int | None, ...]
    buffer: int
    quant: QuantParams | None
    sparsity: Table | None

    def info(self) -> QuantizedValueInfo:
        return QuantizedValueInfo(
            self.name, ValueType("tensor", self.code, self.signature), quant=self.quant
        )


class _Reader:
    def __init__(self, fb: FlatBuffer) -> None:
        self.fb = fb
        self.custom = False

    def fail(self, problem: str) -> ModelFormatError:
        return self.fb.fail(problem)

    def model(self) -> Model:
        root = self.fb.root()
        self.version = int(root.scalar(0, "I"))
        self.opcodes = [self.opcode(t) for t in root.tables(1)]
        subgraph_tables = root.tables(2)
        if not subgraph_tables:
            raise self.fail("the TFLite model has no subgraphs")
        self.buffers = root.tables(4)
        graphs = [self.subgraph(t, i) for i, t in enumerate(subgraph_tables)]
        self.link_subgraphs(graphs)
        opsets = {DOMAIN: 1}
        if self.custom:
            opsets[CUSTOM_DOMAIN] = 1
        return Model(
            graph=graphs[0],
            opset_imports=opsets,
            ir_version=self.version,
            producer_name="TFLite",
            doc_string=root.string(3),
            metadata=self.metadata(root),
        )

    def metadata(self, root: Table) -> dict[str, str]:
        found = {}
        for entry in root.tables(6):
            data = self.buffer_bytes(int(entry.scalar(1, "I")))
            if data is not None:
                text = data.tobytes().rstrip(b"\0")
                if text.isascii() and text.decode().isprintable():
                    found[entry.string(0)] = text.decode()
        return found

    def opcode(self, t: Table) -> tuple[str, str]:
        code = max(int(t.scalar(0, "b")), int(t.scalar(3, "i")))
        if code == CUSTOM:
            self.custom = True
            return CUSTOM_DOMAIN, t.string(1) or "CUSTOM"
        if 0 <= code < len(BUILTIN_OPERATORS):
            return DOMAIN, BUILTIN_OPERATORS[code]
        return DOMAIN, f"BUILTIN_{code}"

    # -- buffers and tensors ----------------------------------------------------------------
    def buffer_bytes(self, index: int) -> np.ndarray | None:
        """The bytes of buffer ``index``, None when it is empty (no constant)."""
        if not 0 <= index < len(self.buffers):
            raise self.fail(f"buffer index {index} is out of range")
        b = self.buffers[index]
        offset, size = int(b.scalar(1, "Q")), int(b.scalar(2, "Q"))
        if offset > 1:  # stored after the flatbuffer, from the file's start
            if offset + size > self.fb.size:
                raise self.fail(f"buffer {index} (offset {offset}, size {size}) is past the end")
            return np.frombuffer(self.fb.buf, np.uint8, count=size, offset=offset)
        data = b.array(0, "u1")
        return data if data is not None and data.size else None

    def tensor(self, t: Table, index: int) -> _Tensor:
        ttype = int(t.scalar(1, "b"))
        if ttype not in TENSOR_TYPES:
            raise self.fail(f"tensor {index} has unknown type {ttype}")
        shape = self.ints(t, 0)
        if any(d < 0 for d in shape):
            raise self.fail(f"tensor {index} has a negative dimension {list(shape)}")
        sig = self.ints(t, 7) if t.has(7) else shape
        signature = tuple(None if d < 0 else d for d in sig) if len(sig) == len(shape) else shape
        code = TENSOR_TYPES[ttype]
        quant = self.quantization(t.table(4), code, len(shape), index)
        return _Tensor(
            t.string(3), code, shape, signature, int(t.scalar(2, "I")), quant, t.table(6)
        )

    def ints(self, t: Table, field: int) -> tuple[int, ...]:
        values = t.array(field, "<i4")
        return () if values is None else tuple(int(v) for v in values)

    def quantization(self, q: Table | None, code: int, rank: int, index: int) -> QuantParams | None:
        if q is None:
            return None
        scale = q.array(2, "<f4")
        if scale is None or scale.size == 0:
            return None
        zero = q.array(3, "<i8")
        zero = np.zeros(scale.size, np.int64) if zero is None or zero.size == 0 else zero
        dim = int(q.scalar(6, "i"))
        if zero.size != scale.size:
            raise self.fail(f"tensor {index}: {scale.size} scales but {zero.size} zero points")
        if scale.size > 1 and not 0 <= dim < max(rank, 1):
            raise self.fail(f"tensor {index}: quantized_dimension {dim} is out of range")
        return QuantParams(
            scale.astype(np.float32), zero.astype(np.int64), dim, dtypes.runtime_dtype(code)
        )

    def constant(self, tensor: _Tensor, data: np.ndarray, index: int) -> np.ndarray:
        etype = dtypes.ELEMENT_TYPES.get(tensor.code)
        where = f"tensor {index} ({tensor.name!r})"
        if etype is None:
            raise self.fail(f"{where} is a constant of a type the runtime cannot hold")
        count = math.prod(tensor.shape)
        if etype.code == 8:
            return self.strings(data, count, where).reshape(tensor.shape)
        if etype.bits < 8:
            need = -(-count * etype.bits // 8)
            if data.size != need:
                raise self.fail(f"{where}: holds {data.size} bytes, its shape needs {need}")
            array = dtypes.unpack_bits(data, etype.code, count)
        else:
            need = count * etype.storage.itemsize
            if data.size != need:
                raise self.fail(f"{where}: holds {data.size} bytes, its shape needs {need}")
            array = data.view(etype.storage)
        array = dtypes.to_runtime(array.reshape(tensor.shape), etype.code)
        # numpy sends unaligned arrays down slow loops instead of BLAS; copy those once
        return array if array.flags.aligned else array.copy()

    def strings(self, data: np.ndarray, count: int, where: str) -> np.ndarray:
        # int32 count, count + 1 int32 offsets from the buffer's start, then the bytes
        if data.size < 4 or int(data[:4].view("<i4")[0]) != count or data.size < 4 * count + 8:
            raise self.fail(f"{where}: malformed string tensor")
        offsets = data[4 : 8 + 4 * count].view("<i4").astype(np.int64)
        if offsets[0] < 4 * count + 8 or np.any(np.diff(offsets) < 0) or offsets[-1] > data.size:
            raise self.fail(f"{where}: malformed string tensor offsets")
        out = np.empty(count, dtype=object)
        out[:] = [data[a:b].tobytes() for a, b in itertools.pairwise(offsets)]
        return out

    # -- subgraphs --------------------------------------------------------------------------
    def subgraph(self, t: Table, number: int) -> Graph:
        tensors = [self.tensor(tt, i) for i, tt in enumerate(t.tables(0))]
        _unique_names(tensors)
        g = Graph(name=t.string(4) or f"subgraph_{number}", nodes=[], inputs=[], outputs=[])
        for i, tensor in enumerate(tensors):
            if tensor.sparsity is not None:
                data = self.buffer_bytes(tensor.buffer)
                if data is None:
                    raise self.fail(f"sparse tensor {i} ({tensor.name!r}) has no values")
                g.sparse_initializers[tensor.name] = self.sparse(tensor, data, i)
                continue
            data = self.buffer_bytes(tensor.buffer) if tensor.buffer else None
            if data is not None:
                g.initializers[tensor.name] = self.constant(tensor, data, i)
                g.initializer_types[tensor.name] = tensor.code
        g.inputs = [tensors[i].info() for i in self.indices(t, 1, len(tensors), "input")]
        g.outputs = [tensors[i].info() for i in self.indices(t, 2, len(tensors), "output")]
        ends = {v.name for v in g.inputs} | {v.name for v in g.outputs}
        g.value_info = [x.info() for x in tensors if x.name not in ends]
        g.nodes = [self.operator(op, tensors, k) for k, op in enumerate(t.tables(3))]
        made = {o for n in g.nodes for o in n.outputs} | {v.name for v in g.inputs}
        made |= g.initializers.keys() | g.sparse_initializers.keys()
        missing = [v.name for v in g.outputs if v.name not in made]
        if missing:
            raise self.fail(f"{g.name}: output {missing[0]!r} is computed by no operator")
        return g

    def indices(self, t: Table, field: int, count: int, what: str) -> list[int]:
        values = self.ints(t, field)
        bad = [v for v in values if not 0 <= v < count]
        if bad:
            raise self.fail(f"subgraph {what} tensor index {bad[0]} is out of range")
        return list(values)

    def operator(self, op: Table, tensors: list[_Tensor], k: int) -> Node:
        index = int(op.scalar(0, "I"))
        if index >= len(self.opcodes):
            raise self.fail(f"operator {k} uses opcode {index}, beyond the model's opcodes")
        domain, name = self.opcodes[index]

        def refs(field: int, optional: bool) -> list[_Tensor | None]:
            out: list[_Tensor | None] = []
            for i in self.ints(op, field):
                if i == -1 and optional:
                    out.append(None)
                elif 0 <= i < len(tensors):
                    out.append(tensors[i])
                else:
                    raise self.fail(f"operator {k} ({name}) names tensor {i}, out of range")
            return out

        ins, outs = refs(1, True), refs(2, True)
        node = Node(
            op_type=name,
            inputs=[x.name if x else "" for x in ins],
            outputs=[x.name if x else "" for x in outs],
            name=f"{name}_{k}",
            domain=domain,
        )
        if domain == DOMAIN:
            node.attributes = self.options(op, name, k)
        if name in _OUT_DTYPE and outs and outs[0] is not None:
            node.attributes["out_dtype"] = Attribute("out_dtype", ATTR_INT, outs[0].code)
        if any(x is not None and x.quant is not None for x in (*ins, *outs)):
            quant = TensorQuant(
                tuple(x.quant if x else None for x in ins),
                tuple(x.quant if x else None for x in outs),
            )
            node.attributes["quant"] = Attribute("quant", ATTR_QUANT, quant)
        return node

    def options(self, op: Table, name: str, k: int) -> dict[str, Attribute]:
        found = int(op.scalar(3, "B"))
        if name in _SUBGRAPH_OPTIONS:
            union, names = _SUBGRAPH_OPTIONS[name]
            table = self.options_table(op, found, union, name, k)
            # graphs are attached once every subgraph is read (see link_subgraphs)
            return {
                n: Attribute(n, ATTR_INT, int(table.scalar(i, "i")) if table else 0)
                for i, n in enumerate(names)
            }
        if name not in _OPTIONS:
            return {}
        union, spec = _OPTIONS[name]
        table = self.options_table(op, found, union, name, k)
        attrs = {}
        for field, item in enumerate(spec.split()):
            if item == "_":
                continue
            attr, _, kind = item.partition(":")
            kind, _, default = kind.partition("=")
            attrs[attr] = self.option(table, field, attr, kind, default, name)
        return attrs

    def options_table(self, op: Table, found: int, union: int, name: str, k: int) -> Table | None:
        if found not in (0, union):
            raise self.fail(f"operator {k} ({name}) has options of the wrong type ({found})")
        return op.table(4) if found else None

    def option(
        self, t: Table | None, field: int, attr: str, kind: str, default: str, op: str
    ) -> Attribute:
        zero = int(default or 0)
        if kind == "ints":
            values = t.array(field, "<i4") if t else None
            return Attribute(attr, ATTR_INTS, [] if values is None else values.tolist())
        if kind == "f":
            return Attribute(attr, ATTR_FLOAT, float(t.scalar(field, "f", 0.0) if t else 0.0))
        if kind in ("pad", "act"):
            names = PADDINGS if kind == "pad" else ACTIVATIONS
            value = int(t.scalar(field, "b", zero) if t else zero)
            if not 0 <= value < len(names):
                raise self.fail(f"{op}: unknown {attr} value {value}")
            return Attribute(attr, ATTR_STRING, names[value].encode())
        fmt = {"i": "i", "b": "b", "?": "?"}[kind]
        value = int(t.scalar(field, fmt, zero) if t else zero)
        if attr.startswith(_WINDOW) and not 1 <= value <= MAX_WINDOW:
            raise self.fail(f"{op}: {attr} {value} is out of range")
        return Attribute(attr, ATTR_INT, value)

    def link_subgraphs(self, graphs: list[Graph]) -> None:
        """Replace IF/WHILE subgraph indices by the graphs; a cycle is refused."""
        calls: dict[int, set[int]] = {}
        for g_index, g in enumerate(graphs):
            for node in g.nodes:
                if node.domain == DOMAIN and node.op_type in _SUBGRAPH_OPTIONS:
                    for attr in _SUBGRAPH_OPTIONS[node.op_type][1]:
                        target = node.attributes[attr].value
                        if not 0 <= target < len(graphs):
                            raise self.fail(f"{node.name} names subgraph {target}, out of range")
                        calls.setdefault(g_index, set()).add(target)
                        node.attributes[attr] = Attribute(attr, ATTR_GRAPH, graphs[target])
        _check_acyclic(calls, self.fb)

    # -- sparse tensors ---------------------------------------------------------------------
    def sparse(self, tensor: _Tensor, data: np.ndarray, index: int) -> SparseTensor:
        where = f"sparse tensor {index} ({tensor.name!r})"
        s = tensor.sparsity
        assert s is not None
        etype = dtypes.ELEMENT_TYPES.get(tensor.code)
        if etype is None or etype.bits < 8 or etype.code == 8:
            raise self.fail(f"{where}: sparse tensors of this type are not supported")
        order = self.ints(s, 0)
        block_map = self.ints(s, 1)
        levels = s.tables(2)
        rank = len(tensor.shape)
        n = rank + len(block_map)
        if len(order) != n or sorted(order) != list(range(n)) or len(levels) != n:
            raise self.fail(f"{where}: inconsistent traversal order and dimension metadata")
        if any(not 0 <= b < rank for b in block_map):
            raise self.fail(f"{where}: block map names a dimension out of range")
        dense = math.prod(tensor.shape)
        if dense > MAX_DENSE_ELEMENTS:
            raise self.fail(f"{where}: too large once dense ({dense} elements)")
        coords = np.zeros((1, 0), dtype=np.int64)
        sizes = [0] * n
        for level, meta in zip(order, levels, strict=True):
            coords, sizes[level] = self.sparse_level(meta, coords, dense, where)
        values = data.view(etype.storage) if data.size % etype.storage.itemsize == 0 else None
        if values is None or values.size != coords.shape[0]:
            raise self.fail(f"{where}: its values do not match its sparsity structure")
        expanded = np.empty((coords.shape[0], n), dtype=np.int64)
        expanded[:, list(order)] = coords
        full = expanded[:, :rank].copy()
        for k, dim in enumerate(block_map):
            full[:, dim] = full[:, dim] * sizes[rank + k] + expanded[:, rank + k]
        shape = np.asarray(tensor.shape, dtype=np.int64)
        if full.size and (full.min() < 0 or np.any(full >= shape)):
            raise self.fail(f"{where}: an index is outside its shape {list(tensor.shape)}")
        linear = np.zeros(1, np.int64)
        if rank:
            where_ = tuple(full.T.astype(np.intp))
            linear = np.asarray(np.ravel_multi_index(where_, tensor.shape), np.int64)
        values = dtypes.to_runtime(values, tensor.code)
        return SparseTensor(values, linear, tensor.shape, tensor.code, tensor.name)

    def sparse_level(
        self, meta: Table, coords: np.ndarray, dense: int, where: str
    ) -> tuple[np.ndarray, int]:
        """Expand every position of the levels so far by one more level's coordinates."""
        count = coords.shape[0]
        if int(meta.scalar(0, "b")) == 0:  # DENSE
            size = int(meta.scalar(1, "i"))
            if size < 0 or count * size > dense:
                raise self.fail(f"{where}: a dense level's size {size} is out of range")
            column = np.tile(np.arange(size, dtype=np.int64), count)
            return np.column_stack([np.repeat(coords, size, axis=0), column]), size
        segments = self.index_vector(meta, 2, where)
        indices = self.index_vector(meta, 4, where)
        if segments.size != count + 1 or segments[0] != 0 or np.any(np.diff(segments) < 0):
            raise self.fail(f"{where}: malformed array_segments")
        if segments[-1] != indices.size or indices.size > dense:
            raise self.fail(f"{where}: array_segments and array_indices disagree")
        size = int(indices.max()) + 1 if indices.size else 0
        # counts in numpy's index type: 32-bit ARM refuses int64 ones
        counts = np.diff(segments).astype(np.intp)
        return np.column_stack([np.repeat(coords, counts, axis=0), indices]), size

    def index_vector(self, meta: Table, field: int, where: str) -> np.ndarray:
        kind = int(meta.scalar(field, "B"))
        dtype = {1: "<i4", 2: "<u2", 3: "u1"}.get(kind)
        table = meta.table(field + 1)
        values = table.array(0, dtype) if table is not None and dtype else None
        if values is None:
            raise self.fail(f"{where}: a sparse level lacks its segments or indices")
        return values.astype(np.int64)


def _unique_names(tensors: list[_Tensor]) -> None:
    """TFLite names need not be unique or present; the IR's value names must be."""
    seen: set[str] = set()
    for i, t in enumerate(tensors):
        name = t.name or f"tensor_{i}"
        while name in seen:
            name = f"{name}#{i}"
        seen.add(name)
        t.name = name


def _check_acyclic(calls: dict[int, set[int]], fb: FlatBuffer) -> None:
    state: dict[int, int] = {}  # 1: on the current path, 2: done
    for start in list(calls):
        if start in state:
            continue
        stack = [(start, iter(sorted(calls.get(start, ()))))]
        state[start] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                raise fb.fail(f"subgraph {child} calls itself through IF/WHILE")
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(sorted(calls.get(child, ())))))
