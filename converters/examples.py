"""Small example models built in code, so demos and tests never download anything.

Weights come from a seeded generator: the same model, byte for byte, on every machine.

    python -m converters.examples tiny-cnn model.onnx
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _weights(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    values = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
    return numpy_helper.from_array(values, name)


def tiny_cnn(classes: int = 10, seed: int = 0) -> onnx.ModelProto:
    """An image classifier shaped like the small CNNs people put on a Pi (1x3x32x32 in)."""
    rng = np.random.default_rng(seed)
    inits = [
        _weights(rng, "conv1.w", 16, 3, 3, 3),
        numpy_helper.from_array(np.zeros(16, np.float32), "conv1.b"),
        numpy_helper.from_array(np.ones(16, np.float32), "bn1.scale"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "bn1.bias"),
        numpy_helper.from_array(rng.standard_normal(16).astype(np.float32) * 0.1, "bn1.mean"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 16).astype(np.float32), "bn1.var"),
        _weights(rng, "conv2.w", 32, 16, 3, 3),
        numpy_helper.from_array(np.zeros(32, np.float32), "conv2.b"),
        _weights(rng, "fc.w", classes, 32),
        numpy_helper.from_array(np.zeros(classes, np.float32), "fc.b"),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["image", "conv1.w", "conv1.b"],
            ["c1"],
            name="conv1",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"],
            ["b1"],
            name="bn1",
        ),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node(
            "MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]
        ),
        helper.make_node(
            "Conv",
            ["p1", "conv2.w", "conv2.b"],
            ["c2"],
            name="conv2",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[2, 2],
        ),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.w", "fc.b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], name="softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    return _finish(graph)


def tiny_mlp(
    features: int = 64, hidden: int = 32, classes: int = 10, seed: int = 0
) -> onnx.ModelProto:
    """A two-layer MLP over flat features (the shape of scikit-learn's digits)."""
    rng = np.random.default_rng(seed)
    inits = [
        _weights(rng, "w1", features, hidden),
        numpy_helper.from_array(np.zeros(hidden, np.float32), "b1"),
        _weights(rng, "w2", hidden, classes),
        numpy_helper.from_array(np.zeros(classes, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1.bias"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu"),
        helper.make_node("MatMul", ["h", "w2"], ["y0"], name="fc2"),
        helper.make_node("Add", ["y0", "b2"], ["logits"], name="fc2.bias"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", features])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    return _finish(graph)


def _finish(graph: onnx.GraphProto) -> onnx.ModelProto:
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgerun.examples"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


EXAMPLES: dict[str, Callable[[], onnx.ModelProto]] = {"tiny-cnn": tiny_cnn, "tiny-mlp": tiny_mlp}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in EXAMPLES:
        print(
            f"usage: python -m converters.examples {{{','.join(EXAMPLES)}}} OUT.onnx",
            file=sys.stderr,
        )
        return 2
    out = Path(args[1])
    out.write_bytes(EXAMPLES[args[0]]().SerializeToString())
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
