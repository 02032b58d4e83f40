"""Small ONNX models built in code for the compression steps, and the oracles' runners."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import edgerun


def _model(
    nodes: list[Any], weights: dict[str, np.ndarray], x: list[int], y: list[int], opset: int = 18
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y)],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(model)
    return model


def _normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32)


def cnn(seed: int = 0, reshape: bool = False, opset: int = 18) -> onnx.ModelProto:
    """Conv-BN-Relu, Conv-Relu-MaxPool, Flatten (or Reshape), Gemm-Relu, Gemm: 8x8 in, 10 out."""
    rng = np.random.default_rng(seed)
    w = {
        "c1.w": _normal(rng, 8, 1, 3, 3),
        "c1.b": _normal(rng, 8),
        "bn.scale": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "bn.bias": _normal(rng, 8),
        "bn.mean": _normal(rng, 8),
        "bn.var": rng.uniform(0.5, 1.5, 8).astype(np.float32),
        "c2.w": _normal(rng, 16, 8, 3, 3),
        "c2.b": _normal(rng, 16),
        "fc1.w": _normal(rng, 32, 16 * 4 * 4),
        "fc1.b": _normal(rng, 32),
        "fc2.w": _normal(rng, 10, 32),
        "fc2.b": _normal(rng, 10),
    }
    if reshape:
        w["flat.shape"] = np.array([1, 16 * 4 * 4], np.int64)
        flatten = helper.make_node("Reshape", ["p", "flat.shape"], ["f"], name="flat")
    else:
        flatten = helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1)
    nodes = [
        helper.make_node("Conv", ["x", "c1.w", "c1.b"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"]
        ),
        helper.make_node("Relu", ["bn"], ["r1"]),
        helper.make_node("Conv", ["r1", "c2.w", "c2.b"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("MaxPool", ["r2"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        flatten,
        helper.make_node("Gemm", ["f", "fc1.w", "fc1.b"], ["g1"], name="fc1", transB=1),
        helper.make_node("Relu", ["g1"], ["r3"]),
        helper.make_node("Gemm", ["r3", "fc2.w", "fc2.b"], ["y"], name="fc2", transB=1),
    ]
    return _model(nodes, w, [1, 1, 8, 8], [1, 10], opset)


def mlp(seed: int = 0, hidden: int = 48) -> onnx.ModelProto:
    """MatMul + Add bias, Clip, MatMul (Gemm without transB), over [2, 5, 24] inputs."""
    rng = np.random.default_rng(seed)
    w = {
        "m1.w": _normal(rng, 24, hidden),
        "m1.b": _normal(rng, hidden),
        "lo": np.array(0.0, np.float32),
        "hi": np.array(6.0, np.float32),
        "m2.w": _normal(rng, hidden, 12),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "m1.w"], ["m1"], name="m1"),
        helper.make_node("Add", ["m1", "m1.b"], ["a1"]),
        helper.make_node("Clip", ["a1", "lo", "hi"], ["c"]),
        helper.make_node("MatMul", ["c", "m2.w"], ["y"], name="m2"),
    ]
    return _model(nodes, w, [2, 5, 24], [2, 5, 12])


def residual(seed: int = 0) -> onnx.ModelProto:
    """A Conv whose output also skips ahead to an Add: not prunable on its own."""
    rng = np.random.default_rng(seed)
    w = {"c1.w": _normal(rng, 4, 4, 3, 3), "c2.w": _normal(rng, 4, 4, 3, 3)}
    nodes = [
        helper.make_node("Conv", ["x", "c1.w"], ["c1"], name="c1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r"]),
        helper.make_node("Conv", ["r", "c2.w"], ["c2"], name="c2", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "x"], ["y"]),
    ]
    return _model(nodes, w, [1, 4, 6, 6], [1, 4, 6, 6])


def pointwise(seed: int = 0, rank: int = 3) -> onnx.ModelProto:
    """A strided 1x1 Conv (48 -> 40 channels) whose weight has rank ``rank``."""
    rng = np.random.default_rng(seed)
    w = {
        "pw.w": (rng.standard_normal((40, rank)) @ rng.standard_normal((rank, 48))).astype(
            np.float32
        )[:, :, None, None],
        "pw.b": _normal(rng, 40),
    }
    nodes = [helper.make_node("Conv", ["x", "pw.w", "pw.b"], ["y"], name="pw", strides=[2, 2])]
    return _model(nodes, w, [1, 48, 6, 6], [1, 40, 3, 3])


def inputs(model: onnx.ModelProto, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"x": rng.standard_normal(shape).astype(np.float32)}


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def run_numpy(model: onnx.ModelProto, feeds: dict[str, np.ndarray], folder: Any) -> np.ndarray:
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    session = edgerun.load(path, backend="numpy")
    return next(iter(session.run(feeds).values()))


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
