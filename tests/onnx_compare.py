"""Field-by-field comparison of edgerun's ONNX reader against ``onnx.load`` (the oracle)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from edgerun.runtime import dtypes
from edgerun.runtime.graph import Attribute, Function, Graph, Model, ValueType


def onnx_tensor_storage(t: onnx.TensorProto, base_dir: str = "") -> np.ndarray:
    """onnx's array for ``t`` in the storage edgerun uses (bits for types numpy lacks)."""
    array = numpy_helper.to_array(t, base_dir)
    etype = dtypes.element_type(t.data_type)
    if etype.code == onnx.TensorProto.STRING:
        return np.array([s.encode() for s in array.reshape(-1)], dtype=object).reshape(array.shape)
    if etype.code in (21, 22, 25, 26):  # sub-byte integers: edgerun keeps the values
        return array.astype(etype.storage)
    return array.view(etype.storage) if array.dtype.itemsize == etype.storage.itemsize else array


def assert_tensor(ours: np.ndarray, code: int, proto: onnx.TensorProto, base_dir: str = "") -> None:
    assert code == proto.data_type
    expected = onnx_tensor_storage(proto, base_dir)
    ours = dtypes.to_storage(ours, code) if ours.dtype != object else ours
    assert ours.shape == tuple(proto.dims)
    assert ours.dtype == expected.dtype, (ours.dtype, expected.dtype)
    if ours.dtype == object:
        assert ours.tolist() == expected.tolist()
    else:
        assert ours.tobytes() == expected.tobytes(), proto.name


def assert_type(ours: ValueType | None, proto: onnx.TypeProto) -> None:
    which = proto.WhichOneof("value")
    if which is None:
        assert ours is None or ours.kind == "none"
        return
    assert ours is not None
    assert ours.denotation == proto.denotation
    if which in ("tensor_type", "sparse_tensor_type"):
        t = getattr(proto, which)
        assert ours.kind == which.removesuffix("_type")
        assert ours.elem_type == t.elem_type
        if not t.HasField("shape"):
            assert ours.shape is None
        else:
            dims = [
                d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                for d in t.shape.dim
            ]
            assert list(ours.shape) == dims
    elif which in ("sequence_type", "optional_type"):
        assert ours.kind == which.removesuffix("_type")
        inner = getattr(proto, which)
        if inner.HasField("elem_type"):
            assert_type(ours.elem, inner.elem_type)
    elif which == "map_type":
        assert ours.kind == "map" and ours.elem_type == proto.map_type.key_type
        assert_type(ours.elem, proto.map_type.value_type)


def assert_attribute(ours: Attribute, proto: onnx.AttributeProto, base_dir: str) -> None:
    assert ours.name == proto.name and ours.type == proto.type
    assert ours.ref_attr_name == proto.ref_attr_name
    if proto.ref_attr_name:
        return
    A = onnx.AttributeProto
    if proto.type == A.FLOAT:
        assert np.float32(ours.value) == np.float32(proto.f)
    elif proto.type == A.INT:
        assert ours.value == proto.i
    elif proto.type == A.STRING:
        assert ours.value == proto.s
    elif proto.type == A.FLOATS:
        assert np.array_equal(np.float32(ours.value), np.float32(list(proto.floats)))
    elif proto.type == A.INTS:
        assert ours.value == list(proto.ints)
    elif proto.type == A.STRINGS:
        assert ours.value == list(proto.strings)
    elif proto.type == A.TENSOR:
        assert_tensor(ours.value, ours.tensor_type[0], proto.t, base_dir)
    elif proto.type == A.TENSORS:
        assert len(ours.value) == len(proto.tensors)
        for array, code, t in zip(ours.value, ours.tensor_type, proto.tensors, strict=True):
            assert_tensor(array, code, t, base_dir)
    elif proto.type == A.GRAPH:
        assert_graph(ours.value, proto.g, base_dir)
    elif proto.type == A.GRAPHS:
        assert len(ours.value) == len(proto.graphs)
        for g, pg in zip(ours.value, proto.graphs, strict=True):
            assert_graph(g, pg, base_dir)
    elif proto.type == A.TYPE_PROTO:
        assert_type(ours.value, proto.tp)
    elif proto.type == A.SPARSE_TENSOR:
        assert_tensor(ours.value.values, ours.value.values_type, proto.sparse_tensor.values)


def assert_nodes(ours: list, protos, base_dir: str) -> None:
    assert len(ours) == len(protos)
    for n, p in zip(ours, protos, strict=True):
        assert (n.op_type, n.name, n.inputs, n.outputs) == (
            p.op_type,
            p.name,
            list(p.input),
            list(p.output),
        )
        assert n.domain == ("" if p.domain == "ai.onnx" else p.domain)
        assert list(n.attributes) == [a.name for a in p.attribute]
        for a, pa in zip(n.attributes.values(), p.attribute, strict=True):
            assert_attribute(a, pa, base_dir)


def assert_value_infos(ours: list, protos) -> None:
    assert [v.name for v in ours] == [p.name for p in protos]
    for v, p in zip(ours, protos, strict=True):
        assert_type(v.type, p.type)


def assert_graph(ours: Graph, proto: onnx.GraphProto, base_dir: str = "") -> None:
    assert ours.name == proto.name and ours.doc_string == proto.doc_string
    assert_nodes(ours.nodes, proto.node, base_dir)
    assert_value_infos(ours.inputs, proto.input)
    assert_value_infos(ours.outputs, proto.output)
    assert_value_infos(ours.value_info, proto.value_info)
    assert list(ours.initializers) == [t.name for t in proto.initializer]
    for t in proto.initializer:
        assert_tensor(ours.initializers[t.name], ours.initializer_types[t.name], t, base_dir)
    assert list(ours.sparse_initializers) == [s.values.name for s in proto.sparse_initializer]
    for s in proto.sparse_initializer:
        mine = ours.sparse_initializers[s.values.name]
        assert mine.dims == tuple(s.dims)
        assert_tensor(mine.values, mine.values_type, s.values, base_dir)
        assert np.array_equal(mine.indices, numpy_helper.to_array(s.indices))


def assert_function(ours: Function, proto: onnx.FunctionProto) -> None:
    assert (ours.name, ours.domain, ours.overload) == (proto.name, proto.domain, proto.overload)
    assert (ours.inputs, ours.outputs, ours.attributes) == (
        list(proto.input),
        list(proto.output),
        list(proto.attribute),
    )
    assert list(ours.attribute_defaults) == [a.name for a in proto.attribute_proto]
    assert ours.opset_imports == {o.domain: o.version for o in proto.opset_import}
    assert_nodes(ours.nodes, proto.node, "")


def assert_model(ours: Model, proto: onnx.ModelProto, base_dir: str = "") -> None:
    """``ours`` (edgerun's reader) holds exactly what ``proto`` (onnx.load) holds."""
    assert ours.ir_version == proto.ir_version
    assert ours.opset_imports == {
        ("" if o.domain == "ai.onnx" else o.domain): o.version for o in proto.opset_import
    }
    assert (ours.producer_name, ours.producer_version) == (
        proto.producer_name,
        proto.producer_version,
    )
    assert (ours.domain, ours.model_version, ours.doc_string) == (
        proto.domain,
        proto.model_version,
        proto.doc_string,
    )
    assert ours.metadata == {p.key: p.value for p in proto.metadata_props}
    assert_graph(ours.graph, proto.graph, base_dir)
    assert len(ours.functions) == len(proto.functions)
    for f, pf in zip(ours.functions, proto.functions, strict=True):
        assert_function(f, pf)
