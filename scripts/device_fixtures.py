"""Models, inputs and host reference outputs for the device-side tests (tests/device/).

Runs on the host, where onnx, onnxruntime and torch are installed; the board (or an emulated
root) then checks edgerun against what this wrote, with nothing but numpy:

    python scripts/device_fixtures.py OUT [--zoo tiny_yolo --zoo-size 96]

For each model NAME, OUT holds NAME.onnx, NAME.edgerun (a bundle of it), NAME.inputs.npz,
NAME.expected.npz (onnxruntime's outputs) and NAME.reader.json (what onnx.load reads: the
oracle for edgerun's own ONNX reader); index.json lists the models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _example(name: str) -> bytes:
    from converters import examples

    return examples.EXAMPLES[name]().SerializeToString()


def _index_ops() -> bytes:
    """Gather with int64 indices and Resize: the ops whose index arrays must be intp on
    32-bit ARM (np.take refuses int64 indices where intp is int32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.array([0, 3, -1], np.int64), "idx"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
    ]
    nodes = [
        helper.make_node("Gather", ["x", "idx"], ["g"], axis=1),
        helper.make_node("Resize", ["g", "", "scales"], ["nearest"], mode="nearest"),
        helper.make_node("Resize", ["g", "", "scales"], ["linear"], mode="linear"),
    ]
    graph = helper.make_graph(
        nodes,
        "index_ops",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 5, 5])],
        [
            helper.make_tensor_value_info("nearest", TensorProto.FLOAT, ["batch", 3, 10, 10]),
            helper.make_tensor_value_info("linear", TensorProto.FLOAT, ["batch", 3, 10, 10]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def _zoo(name: str, size: int, folder: Path) -> bytes:
    """A zoo model exported with torch at a small input, so emulation stays quick."""
    import torch

    from converters import zoo

    model, _ = zoo.build(name)
    _, _, inputs, outputs = zoo.MODELS[name]
    path = folder / f"{name}.export.onnx"
    example = (torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)),)
    torch.onnx.export(
        model, example, str(path), input_names=inputs, output_names=outputs, dynamo=False
    )
    data = path.read_bytes()
    path.unlink()
    return data


def _feeds(model_bytes: bytes, batch: int, seed: int) -> dict[str, np.ndarray]:
    import onnx

    rng = np.random.default_rng(seed)
    model = onnx.load_from_string(model_bytes)
    init_names = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in init_names:
            continue
        t = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else batch for d in t.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)
        feeds[vi.name] = rng.random(shape, dtype=np.float32).astype(dtype)
    return feeds


def _reader_oracle(model_bytes: bytes) -> dict:
    """What onnx.load sees, in plain JSON, for comparison with edgerun's reader."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_from_string(model_bytes)
    g = model.graph
    return {
        "ir_version": model.ir_version,
        "opset_imports": {o.domain: o.version for o in model.opset_import},
        "producer_name": model.producer_name,
        "nodes": [[n.op_type, list(n.input), list(n.output)] for n in g.node],
        "inputs": [vi.name for vi in g.input],
        "outputs": [vi.name for vi in g.output],
        "initializers": {
            t.name: {
                "data_type": t.data_type,
                "dims": list(t.dims),
                "sha256": hashlib.sha256(
                    np.ascontiguousarray(numpy_helper.to_array(t)).tobytes()
                ).hexdigest(),
            }
            for t in g.initializer
        },
    }


def write_fixture(out: Path, name: str, model_bytes: bytes, batch: int = 2) -> None:
    import onnxruntime as ort

    import edgerun
    from edgerun.bundle import write_bundle

    onnx_path = out / f"{name}.onnx"
    onnx_path.write_bytes(model_bytes)
    feeds = _feeds(model_bytes, batch, seed=1)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, feeds), strict=True))
    np.savez(out / f"{name}.inputs.npz", **feeds)
    np.savez(out / f"{name}.expected.npz", **expected)
    specs = edgerun.load(onnx_path, backend="numpy")
    write_bundle(
        out / f"{name}.edgerun",
        model_bytes,
        model_format="onnx",
        inputs=specs.inputs,
        outputs=specs.outputs,
        source={"framework": "onnx", "name": onnx_path.name},
    )
    oracle = _reader_oracle(model_bytes)
    (out / f"{name}.reader.json").write_text(json.dumps(oracle, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--zoo", action="append", default=[], help="a converters.zoo model")
    parser.add_argument("--zoo-size", type=int, default=96, help="image side for zoo models")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    models = {name: _example(name) for name in ("tiny-cnn", "tiny-mlp")}
    models["index-ops"] = _index_ops()
    for name in args.zoo:
        models[name] = _zoo(name, args.zoo_size, args.out)
    for name, data in models.items():
        write_fixture(args.out, name, data, batch=1 if name in args.zoo else 2)
    (args.out / "index.json").write_text(json.dumps({"models": sorted(models)}) + "\n")
    print(f"{args.out}: {', '.join(sorted(models))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
