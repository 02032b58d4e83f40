"""``pack``: a trained model in, a bundle made for one board out, with proof it still works.

Stages, in order: load the source, convert it to the profile's format, simplify, quantize,
check accuracy against the source on held-out samples, store golden samples, write the
bundle atomically. Any stage's failure is an ``EdgerunError`` and leaves no file behind;
so does an accuracy drop beyond ``max_accuracy_drop``.
"""

from __future__ import annotations

import io
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from converters import accuracy as acc
from converters.calibration import PackWarning, Samples, count, load_samples, split, synthetic
from converters.compression import CompressionRecipe
from converters.layout import WEIGHTS
from converters.recipe import FORMATS, QuantRecipe, host_saturates, recipe_for
from converters.sources import Source, load_source
from edgerun.bundle import Manifest, read_manifest, write_bundle
from edgerun.errors import AccuracyError, ConversionError, EdgerunError
from edgerun.profiles import load_profile
from edgerun.specs import TensorSpec

Progress = Callable[[str], None]


@dataclass(frozen=True)
class PackOptions:
    device: str
    output: Path | None = None
    quantize: str | None = None  # None: the profile's choice
    format: str | None = None  # None: the profile's choice
    calibration: Path | None = None
    validation: Path | None = None
    calibration_method: str = "minmax"
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    dynamic_batch: bool = False
    max_accuracy_drop: float | None = None
    trust_pickle: bool = False
    opset: int | None = None
    golden_samples: int = 4
    synthetic_samples: int = 32
    compression: CompressionRecipe | None = None  # pruning, low-rank, clustering (ONNX)
    train: Path | None = None  # labelled samples: fine-tune a pruned PyTorch source
    choose: str | None = None  # "fastest": measure every quantization here, keep the fastest
    choose_backend: str = "numpy"
    student: str | None = None  # module:factory distilled from the source on --train


@dataclass
class PackResult:
    path: Path
    manifest: Manifest
    warnings: list[str]
    seconds: dict[str, float]  # per stage


@dataclass
class _Data:
    calibration: Samples | None
    validation: Samples
    labels: np.ndarray | None
    origin: str  # where the validation samples came from


@dataclass
class _Packed:
    format: str
    model: bytes
    weights: bytes | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    runners: dict[str, acc.Runner]  # backend -> the packed model on it
    skipped: dict[str, str]  # backend -> why it could not run the packed model
    applied: dict[str, Any]
    recipe: QuantRecipe | None = None  # when --choose picked another than the profile's


def pack(model: str, options: PackOptions, progress: Progress | None = None) -> PackResult:
    """Pack ``model`` (a file, a SavedModel folder or ``module:factory``) for a board."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PackWarning)
        result = _pack(model, options, _Stages(progress))
    messages = [str(w.message) for w in caught if issubclass(w.category, PackWarning)]
    for w in caught:  # hand them on to the caller's filters, now that they are recorded
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    result.warnings = messages
    return result


def _pack(model: str, options: PackOptions, stages: _Stages) -> PackResult:
    profile = load_profile(options.device)
    fmt = options.format or profile.deploy.format
    if fmt not in FORMATS:
        raise EdgerunError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    recipe = recipe_for(profile, options.quantize, options.calibration_method)
    if options.compression or options.train or options.student:
        from converters.compression import check_for

        scheme = None if options.choose else recipe.scheme  # --choose skips what cannot apply
        check_for(options.compression, scheme, fmt, options.train, options.student)
    if options.choose is not None:
        from converters.compression import check_choice

        check_choice(options.choose, options.quantize, fmt)
    with stages("load"):
        source = load_source(model, options.trust_pickle)
        specs = _source_specs(source, options)
        data = _data(options, specs, recipe)
        reference = _source_runner(source, specs)
    distillation = None
    if options.student is not None:
        from converters.distill import distil_source

        with stages("distill"):
            source, distillation = distil_source(
                source, specs, options.student, options.train, options.trust_pickle
            )
    with tempfile.TemporaryDirectory(prefix="edgerun-pack-") as tmp:
        if fmt == "onnx":
            packed = _pack_onnx(source, specs, recipe, data, options, stages, Path(tmp), reference)
            recipe = packed.recipe or recipe
        else:
            packed = _pack_tflite(source, specs, recipe, data, stages, Path(tmp))
        with stages("accuracy"):
            accuracy, golden = _check(packed, reference, data, recipe, options)
    path = options.output or Path.cwd() / f"{source.name}.{profile.name}.edgerun"
    with stages("write"):
        write_bundle(
            path,
            packed.model,
            model_format=packed.format,
            inputs=packed.inputs,
            outputs=packed.outputs,
            profile=profile.raw,
            applied={
                **packed.applied,
                "quantization": None if recipe.scheme == "none" else recipe.to_json(),
                "calibration_samples": 0 if data.calibration is None else count(data.calibration),
                **({"distillation": distillation} if distillation else {}),
            },
            accuracy=accuracy,
            source={"framework": source.framework, "sha256": source.sha256, "name": model},
            external_data={WEIGHTS: packed.weights} if packed.weights else None,
            golden=golden,
        )
    return PackResult(path, read_manifest(path), [], stages.seconds)


class _Stages:
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.progress:
            self.progress(name)
        start = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - start, 3)


# ---- the source ------------------------------------------------------------------------


def _source_specs(source: Source, options: PackOptions) -> list[TensorSpec]:
    shapes = dict(options.input_shapes)
    if source.framework == "torch":
        from converters.torch_frontend import torch_input_specs

        return torch_input_specs(source.model, source.example_inputs, shapes, options.dynamic_batch)
    if source.framework == "tensorflow":
        from converters.tensorflow_frontend import tensorflow_input_specs

        return tensorflow_input_specs(source.model, shapes or None, options.dynamic_batch)
    if source.framework == "tflite":
        from converters.tensorflow_frontend import tflite_io_specs

        return tflite_io_specs(source.model)[0]
    from converters.onnx_frontend import fix_input_shapes

    return fix_input_shapes(source.model, shapes, options.dynamic_batch)


def _source_runner(source: Source, specs: list[TensorSpec]) -> acc.Runner:
    if source.framework == "torch":
        from converters.torch_frontend import run_torch

        return lambda feeds: run_torch(source.model, feeds)
    if source.framework == "tensorflow":
        from converters.tensorflow_frontend import run_tensorflow

        return lambda feeds: list(run_tensorflow(source.model, feeds).values())
    if source.framework == "tflite":
        from converters.tensorflow_frontend import run_tflite

        return lambda feeds: list(run_tflite(source.model, feeds).values())
    from converters.onnx_frontend import onnxruntime_runner

    return onnxruntime_runner(source.model.SerializeToString())


def _data(options: PackOptions, specs: list[TensorSpec], recipe: QuantRecipe) -> _Data:
    """Calibration and validation samples: the user's, else a held-out part, else synthetic."""
    calibration = labels = None
    if options.calibration is not None:
        calibration, labels = load_samples(options.calibration, specs, "--calibration")
    if options.validation is not None:
        validation, labels = load_samples(options.validation, specs, "--validation")
        return _Data(calibration, validation, labels, str(options.validation))
    if calibration is not None:
        calibration, validation, labels = split(calibration, labels)
        return _Data(calibration, validation, labels, f"held-out part of {options.calibration}")
    samples = synthetic(specs, options.synthetic_samples)
    calibration, validation, _ = split(samples, None)
    return _Data(calibration if recipe.scheme == "int8" else None, validation, None, "synthetic")


# ---- ONNX ------------------------------------------------------------------------------


def _pack_onnx(
    source: Source,
    specs: list[TensorSpec],
    recipe: QuantRecipe,
    data: _Data,
    options: PackOptions,
    stages: _Stages,
    tmp: Path,
    reference: acc.Runner,
) -> _Packed:
    from converters.layout import externalize
    from converters.onnx_frontend import packed_runners
    from converters.optimise.simplify import simplify
    from converters.quantize import quantize_onnx

    with stages("convert"):
        model, converter = _to_onnx(source, specs, options)
    with stages("optimise"):
        model, simplified = simplify(model)
    compression = None
    if options.compression:
        from converters.compression import compress, retrainer

        with stages("compress"):
            retrain = None
            if options.train is not None:
                retrain = retrainer(
                    source, specs, options.train, options.compression, options.opset
                )
            model, compression = compress(model, options.compression, data, reference, retrain)
    choice = None
    with stages("quantize"):
        if options.choose is not None:
            from converters.compression import choose_fastest

            model, recipe, choice = choose_fastest(
                model,
                recipe,
                data,
                reference,
                options.max_accuracy_drop,
                options.choose_backend,
                options.device,
            )
        else:
            model = quantize_onnx(model, recipe, data.calibration)
    if compression is not None and recipe.scheme != "none":
        compression.measure_quantized(model, recipe.scheme)
    model_bytes, weights = externalize(model)
    (tmp / "model.onnx").write_bytes(model_bytes)
    if weights:
        (tmp / WEIGHTS).write_bytes(weights)
    runners, skipped, inputs, outputs = packed_runners(tmp / "model.onnx")
    if "onnxruntime" in runners and host_saturates(recipe):
        del runners["onnxruntime"]  # its answers would widen the accuracy and the goldens
        skipped["onnxruntime"] = (
            "its uint8 x int8 kernels saturate int16 pair sums on this CPU (x86-64 without "
            "VNNI), so its answers for full-range int8 weights are wrong here"
        )
    applied = {
        "format": "onnx",
        "converter": converter,
        "folding": simplified["batchnorm_left"] == 0,  # by the exporter or by onnxslim
        "optimisation": simplified,
        **({"compression": compression.to_json()} if compression is not None else {}),
        **({"choice": choice} if choice is not None else {}),
    }
    return _Packed("onnx", model_bytes, weights, inputs, outputs, runners, skipped, applied, recipe)


def _to_onnx(source: Source, specs: list[TensorSpec], options: PackOptions) -> tuple[Any, str]:
    if source.framework == "torch":
        import torch

        from converters.torch_frontend import torch_to_onnx

        return torch_to_onnx(
            source.model, specs, options.opset
        ), f"torch.onnx.export {torch.__version__}"
    if source.framework == "tensorflow":
        import tf2onnx

        from converters.tensorflow_frontend import tensorflow_to_onnx

        model = tensorflow_to_onnx(source.model, specs, options.opset or 17)
        return model, f"tf2onnx {tf2onnx.__version__}"
    if source.framework == "onnx":
        return source.model, "none (ONNX source)"
    raise ConversionError(
        "a .tflite model packs only for a TFLite profile (or --format tflite); "
        "edgerun does not convert TFLite to ONNX"
    )


# ---- TFLite ----------------------------------------------------------------------------


def _pack_tflite(
    source: Source,
    specs: list[TensorSpec],
    recipe: QuantRecipe,
    data: _Data,
    stages: _Stages,
    tmp: Path,
) -> _Packed:
    from converters.tensorflow_frontend import run_tflite, tflite_io_specs

    with stages("convert"):
        model, converter = _to_tflite(source, specs, recipe, data)
    inputs, outputs = tflite_io_specs(model)
    runners: dict[str, acc.Runner] = {
        "tflite": lambda feeds: list(run_tflite(model, feeds).values())
    }
    skipped: dict[str, str] = {}
    path = tmp / "model.tflite"
    path.write_bytes(model)
    try:
        import edgerun

        session = edgerun.load(path, backend="numpy")
        runners["numpy"] = lambda feeds: _run_real(session, feeds)
    except EdgerunError as exc:
        skipped["numpy"] = str(exc)
    applied = {"format": "tflite", "converter": converter, "folding": True}
    return _Packed("tflite", model, None, inputs, outputs, runners, skipped, applied)


def _run_real(session: Any, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Real-valued feeds in, real outputs out, quantizing integer I/O as the interpreter does.

    Inputs go by position: the interpreter names them after the signature, the file after
    its tensors.
    """
    inputs = {s.name: s.from_real(v) for s, v in zip(session.inputs, feeds.values(), strict=True)}
    outputs = session.run(inputs)
    return [s.to_real(outputs[s.name]) for s in session.outputs]


def _to_tflite(
    source: Source, specs: list[TensorSpec], recipe: QuantRecipe, data: _Data
) -> tuple[bytes, str]:
    if source.framework == "tensorflow":
        import tensorflow as tf

        from converters.tensorflow_frontend import tensorflow_to_tflite

        model = tensorflow_to_tflite(source.model, specs, recipe, data.calibration)
        return model, f"TFLiteConverter (tensorflow {tf.__version__})"
    if source.framework == "tflite":
        if recipe.scheme != "none":
            warnings.warn(
                "a .tflite model is packed as it is: its quantization was fixed when it was "
                f"converted, so --quantize/{recipe.scheme} does not apply",
                PackWarning,
                stacklevel=2,
            )
        return source.model, "none (TFLite source)"
    if source.framework == "torch":
        # litert-torch, measured against the ONNX route (see converters/torch_tflite.py);
        # without the [torch-tflite] extra this is one line naming it
        from converters.torch_tflite import torch_to_tflite

        return torch_to_tflite(source.model, specs, recipe, data.calibration), "litert-torch"
    raise ConversionError(
        "an ONNX model cannot be packed as TFLite; pass --format onnx to pack it as ONNX"
    )


# ---- accuracy and goldens ----------------------------------------------------------------


def _check(
    packed: _Packed,
    reference: acc.Runner,
    data: _Data,
    recipe: QuantRecipe,
    options: PackOptions,
) -> tuple[dict[str, Any], bytes | None]:
    if not packed.runners:
        raise ConversionError(
            "no backend here could run the packed model: "
            + "; ".join(f"{k}: {v}" for k, v in packed.skipped.items())
        )
    for backend, why in packed.skipped.items():
        warnings.warn(
            f"the {backend} backend cannot run the packed model: {why}", PackWarning, stacklevel=2
        )
    names = [s.name for s in packed.outputs]
    expected = acc.collect(reference, data.validation)
    outputs = {
        backend: _run_all(backend, run, data.validation) for backend, run in packed.runners.items()
    }
    report = acc.report(names, expected, outputs, data.labels)
    report["validation"] = data.origin
    report["skipped"] = packed.skipped
    drop = report["drop"]
    if options.max_accuracy_drop is not None:
        if drop is None:
            raise AccuracyError(
                "--max-accuracy-drop needs a classifier output (or labels) to measure a drop"
            )
        if drop > options.max_accuracy_drop:
            raise AccuracyError(
                f"accuracy dropped by {drop:.2f} points, more than --max-accuracy-drop "
                f"{options.max_accuracy_drop:g}; no bundle written"
            )
    golden, report["golden"] = _golden(packed, outputs, data.validation, names, recipe, options)
    return report, golden


def _run_all(backend: str, run: acc.Runner, samples: Samples) -> acc.Outputs:
    try:
        return acc.collect(run, samples)
    except EdgerunError as exc:
        raise ConversionError(f"the packed model failed on the {backend} backend: {exc}") from exc


def _golden(
    packed: _Packed,
    outputs: dict[str, acc.Outputs],
    validation: Samples,
    names: list[str],
    recipe: QuantRecipe,
    options: PackOptions,
) -> tuple[bytes | None, dict[str, Any] | None]:
    """Sample inputs and the outputs the board should reproduce, from its own engine."""
    k = min(options.golden_samples, count(validation))
    if k == 0:
        return None, None
    backend = "numpy" if "numpy" in outputs else next(iter(outputs))
    expected = outputs[backend][:k]
    others = [o[:k] for b, o in outputs.items() if b != backend]
    tolerance = acc.golden_tolerance(expected, others, recipe.scheme)
    arrays = {f"input/{name}": v[:k] for name, v in validation.items()}
    for i, name in enumerate(names):
        arrays[f"output/{name}"] = np.concatenate([e[i] for e in expected])
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    section = {
        "samples": k,
        "expected_from": backend,
        "atol": dict(zip(names, tolerance, strict=True)),
    }
    return buffer.getvalue(), section
