"""TensorFlow and TFLite for pack: load a SavedModel or Keras file, convert, run the results.

TensorFlow is imported inside the functions, so importing this module costs nothing.

Names and order: a model's inputs keep the names the source gives them (Keras input names,
a SavedModel signature's argument names). The converted function returns a dict keyed by
the source's output names, and TensorFlow flattens a dict sorted by key, so TFLite's
signature and tf2onnx's graph list outputs by name; ``run_tensorflow`` returns them in that
order too. ``run_tflite`` and ``tflite_io_specs`` keep the order the flatbuffer's signature
lists (by name from TensorFlow's converter, the module's order from litert-torch), so callers
may compare outputs by position.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerun import _lazy
from edgerun.errors import ConversionError, InputError, ModelFormatError
from edgerun.specs import Dim, Quantization, TensorSpec

if TYPE_CHECKING:
    import onnx

    from converters.recipe import QuantRecipe

Samples = dict[str, np.ndarray]
BATCH = "batch"  # the symbolic name of a free first dim (--dynamic-batch)
SERVING = "serving_default"
_INTEGER_IO = ("int8", "uint8")
_Tensors = list[tuple[str, dict]]  # (name, the interpreter's details) per input or output


def _tf() -> Any:
    # Quiet TensorFlow's C++ start-up chatter before it loads; a caller's setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return _lazy.require("tensorflow")


def _first_line(exc: BaseException) -> str:
    """The line of a converter's message that says what went wrong (MLIR puts it after
    ``error:``, behind a location), else its first non-empty line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = next((x.split("error:", 1)[1].strip() for x in lines if "error:" in x), None)
    line = line or (lines[0] if lines else type(exc).__name__)
    if line.startswith("loc("):  # an MLIR location: the op's call stack, then the reason
        line = line.rsplit("): ", 1)[-1]
    return line


# ---- loading and describing the source ------------------------------------------------


def load_tensorflow(path: Path) -> Any:
    """A SavedModel folder as loaded by ``tf.saved_model.load``, or a ``.keras`` / ``.h5``
    file as a Keras model (not compiled: pack needs the forward pass only)."""
    path = Path(path)
    if not path.exists():
        raise ModelFormatError(f"{path}: no such file or folder")
    tf = _tf()
    try:
        if path.is_dir():
            model = tf.saved_model.load(str(path))
            if not _signatures(model):
                raise ValueError("the SavedModel has no serving signature")
            return model
        if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
            raise ValueError("a .keras file is a zip archive, and this one is not")
        if path.suffix.lower() in (".keras", ".h5"):
            return tf.keras.models.load_model(path, compile=False)
    except Exception as exc:  # TF and Keras raise many types for an unreadable file
        raise ModelFormatError(
            f"{path}: not a readable TensorFlow model: {_first_line(exc)}"
        ) from exc
    raise ModelFormatError(f"{path}: not a SavedModel folder, a .keras or an .h5 file")


def _is_keras(model: Any) -> bool:
    return hasattr(model, "inputs") and hasattr(model, "outputs") and hasattr(model, "layers")


def _signatures(model: Any) -> Any:
    signatures = getattr(model, "signatures", None) or {}
    if SERVING in signatures:
        return signatures[SERVING]
    return next(iter(signatures.values()), None)


def _source_inputs(model: Any) -> list[tuple[str, tuple[int | None, ...], str]]:
    """(name, shape with None for unknown dims, numpy dtype name) per input, in call order."""
    if _is_keras(model):
        return [(t.name.split(":")[0], tuple(t.shape), _np_dtype(t.dtype)) for t in model.inputs]
    signature = _signatures(model)
    _, kwargs = signature.structured_input_signature
    return [(name, tuple(s.shape), _np_dtype(s.dtype)) for name, s in kwargs.items()]


def _output_names(model: Any) -> list[str]:
    if _is_keras(model):
        return list(model.output_names)
    return list(_signatures(model).structured_outputs)


def _np_dtype(dtype: Any) -> str:
    tf = _tf()
    return np.dtype(tf.as_dtype(dtype).as_numpy_dtype).name


def tensorflow_input_specs(
    model: Any, input_shapes: dict[str, tuple[int, ...]] | None, dynamic_batch: bool
) -> list[TensorSpec]:
    """The model's inputs with every dim known: ``input_shapes`` (from ``--input-shape``)
    win, an unknown first dim is 1 (or ``BATCH`` with ``dynamic_batch``); any other unknown
    dim needs ``--input-shape``."""
    given = dict(input_shapes or {})
    sources = _source_inputs(model)
    unknown = sorted(set(given) - {name for name, _, _ in sources})
    if unknown:
        known = ", ".join(name for name, _, _ in sources)
        raise InputError(
            f"--input-shape names {', '.join(unknown)}; the model's inputs are {known}"
        )
    specs = []
    for name, shape, dtype in sources:
        if name in given:
            if len(given[name]) != len(shape) or any(
                d is not None and d != g for d, g in zip(shape[1:], given[name][1:], strict=True)
            ):
                raise InputError(
                    f"--input-shape {name}={'x'.join(map(str, given[name]))} does not fit the "
                    f"model's {name} of shape {_shape_text(shape)}"
                )
            shape = tuple(given[name])
        if any(d is None for d in shape[1:]):
            raise InputError(
                f"input {name} has shape {_shape_text(shape)}: give its size with "
                f"--input-shape {name}=" + "x".join("1" if d is None else str(d) for d in shape)
            )
        first: Dim = BATCH if dynamic_batch else (shape[0] if shape and shape[0] else 1)
        specs.append(TensorSpec(name, (first, *shape[1:]) if shape else (), dtype))
    return specs


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


# ---- one function over the specs, for the converters and for running the source ----------


def _function(model: Any, specs: list[TensorSpec]) -> Any:
    """A ``tf.function`` with the specs as its signature, returning ``{output name: tensor}``."""
    tf = _tf()
    signature = [
        tf.TensorSpec(
            [d if isinstance(d, int) else None for d in spec.shape or ()],
            tf.as_dtype(spec.dtype),
            name=spec.name,
        )
        for spec in specs
    ]
    names = _output_names(model)
    call = _caller(model)

    @tf.function(input_signature=signature, autograph=False)
    def serve(*args: Any) -> dict[str, Any]:
        return _by_name(call(dict(zip([s.name for s in specs], args, strict=True))), names)

    return serve


def _caller(model: Any) -> Callable[[dict[str, Any]], Any]:
    if _is_keras(model):
        order = [name for name, _, _ in _source_inputs(model)]

        def keras_call(feeds: dict[str, Any]) -> Any:
            args = [feeds[name] for name in order]
            return model(args[0] if len(args) == 1 else args, training=False)

        return keras_call
    signature = _signatures(model)
    return lambda feeds: signature(**feeds)


def _by_name(outputs: Any, names: list[str]) -> dict[str, Any]:
    if isinstance(outputs, dict):
        return outputs
    if not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return dict(zip(names, outputs, strict=True))


def run_tensorflow(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The source model's outputs for ``feeds`` (eager), sorted by output name."""
    tf = _tf()
    tensors = {}
    for name, _, dtype in _source_inputs(model):
        if name not in feeds:
            raise InputError(f"no feed for input {name}")
        tensors[name] = tf.constant(np.asarray(feeds[name], dtype))
    outputs = _by_name(_caller(model)(tensors), _output_names(model))
    return {name: np.asarray(outputs[name]) for name in sorted(outputs)}


# ---- TFLite -----------------------------------------------------------------------------


def tensorflow_to_tflite(
    model: Any, specs: list[TensorSpec], recipe: QuantRecipe, calibration: Samples | None
) -> bytes:
    """The TFLite flatbuffer of ``model`` under ``recipe``, through ``tf.lite.TFLiteConverter``.

    ``none``: float32. ``fp16``: float16 weights (dequantized at load, or run in fp16 by a
    GPU delegate). ``dynamic``: int8 weights, activations quantized on the fly.
    ``int8``: full integer (builtin int8 kernels only, so a model that cannot be fully
    quantized fails here rather than silently keeping float ops), calibrated on
    ``calibration``; with ``recipe.integer_io`` the model's inputs and outputs are
    ``recipe.activation_dtype`` too, as the Edge TPU needs.
    """
    tf = _tf()
    with tempfile.TemporaryDirectory() as tmp:
        converter = tf.lite.TFLiteConverter.from_saved_model(_saved_model(model, specs, tmp))
        _configure(converter, recipe, specs, calibration)
        try:
            return bytes(converter.convert())
        except Exception as exc:  # ConverterError, ValueError, RuntimeError from the calibrator
            raise ConversionError(f"the TFLite converter failed: {_first_line(exc)}") from exc


def _saved_model(model: Any, specs: list[TensorSpec], folder: str) -> str:
    """``model`` saved under ``folder`` with one serving signature over ``specs``.

    TFLite's converter reads a SavedModel reliably: handing it the Keras 3 model as the
    ``trackable_obj`` of a concrete function left its variables unfrozen (READ_VARIABLE ops
    and NaN outputs, tensorflow 2.21), and without one it takes a deprecated path that drops
    the signature's names.
    """
    tf = _tf()
    serve = _function(model, specs)
    holder = tf.Module()
    # Keras 3 variables wrap tf.Variables that TensorFlow's tracking does not find through
    # the model; hand over the tf.Variables themselves (keras.export.ExportArchive does too).
    holder.tf_variables = [getattr(v, "value", v) for v in getattr(model, "variables", ())]
    holder.model = model
    tf.saved_model.save(holder, folder, signatures={SERVING: serve.get_concrete_function()})
    return folder


def _configure(
    converter: Any, recipe: QuantRecipe, specs: list[TensorSpec], calibration: Samples | None
) -> None:
    tf = _tf()
    if recipe.scheme == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif recipe.scheme == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif recipe.scheme == "int8":
        if not calibration:
            raise ConversionError("full-integer TFLite quantization needs calibration samples")
        missing = [s.name for s in specs if s.name not in calibration]
        if missing:
            raise ConversionError(f"no calibration samples for input {', '.join(missing)}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: _representative(specs, calibration)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if recipe.integer_io:
            io_type = tf.as_dtype(recipe.activation_dtype)
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
    elif recipe.scheme != "none":
        raise ConversionError(f"unknown quantization scheme {recipe.scheme!r}")
    if recipe.scheme in ("dynamic", "int8") and not recipe.per_channel:
        converter._experimental_disable_per_channel = True  # no public switch for it


def _representative(specs: list[TensorSpec], calibration: Samples) -> Iterator[Samples]:
    # keyed by name: the converter matches a dict to the signature's inputs, a list by order
    count = min(len(calibration[s.name]) for s in specs)
    for i in range(count):
        yield {s.name: np.asarray(calibration[s.name][i : i + 1], s.dtype) for s in specs}


def _interpreter(model_bytes: bytes) -> Any:
    """LiteRT's interpreter (ai-edge-litert) where installed, else TensorFlow's copy."""
    if _lazy.available("ai_edge_litert"):
        from ai_edge_litert.interpreter import Interpreter
    else:
        Interpreter = _tf().lite.Interpreter
    try:
        interpreter = Interpreter(model_content=bytes(model_bytes))
    except (ValueError, RuntimeError) as exc:
        raise ModelFormatError(f"not a readable TFLite model: {_first_line(exc)}") from exc
    return interpreter


def _io(interpreter: Any, model_bytes: bytes) -> tuple[_Tensors, _Tensors]:
    """(name, tensor details) of the inputs and outputs: the first signature's names, in the
    order the flatbuffer lists them (the TFLite converter: outputs by name; litert-torch: the
    module's order), else the subgraph's own inputs and outputs."""
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    signature = _signature(model_bytes)
    if signature is not None:
        inputs, outputs = signature
        return [(n, details[i]) for n, i in inputs], [(n, details[i]) for n, i in outputs]
    return (
        [(d["name"], d) for d in interpreter.get_input_details()],
        [(d["name"], d) for d in interpreter.get_output_details()],
    )


def _signature(model_bytes: bytes) -> tuple[list[tuple[str, int]], ...] | None:
    """(name, tensor index) of the serving (else first) signature's inputs and outputs, read
    from the flatbuffer: the interpreter's own signature list is a name-sorted dict."""
    if _lazy.available("ai_edge_litert"):
        from ai_edge_litert import schema_py_generated as schema
    else:
        schema = _lazy.require("tensorflow.lite.python.schema_py_generated", "tensorflow")
    model = schema.Model.GetRootAs(model_bytes, 0)
    signatures = [model.SignatureDefs(i) for i in range(model.SignatureDefsLength())]
    signatures = [s for s in signatures if s.SubgraphIndex() == 0]
    if not signatures:
        return None
    chosen = next((s for s in signatures if s.SignatureKey() == SERVING.encode()), signatures[0])

    def names(count: int, get: Callable[[int], Any]) -> list[tuple[str, int]]:
        return [(get(i).Name().decode(), get(i).TensorIndex()) for i in range(count)]

    return (
        names(chosen.InputsLength(), chosen.Inputs),
        names(chosen.OutputsLength(), chosen.Outputs),
    )


def _quantization(detail: dict) -> Quantization | None:
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", ()), np.float64)
    if scales.size == 0 or not np.any(scales):
        return None
    zero_points = np.asarray(params.get("zero_points", ()), np.int64)
    axis = int(params.get("quantized_dimension", 0)) if scales.size > 1 else None
    return Quantization(tuple(scales.tolist()), tuple(zero_points.tolist()), axis)


def _spec(name: str, detail: dict) -> TensorSpec:
    signature = detail.get("shape_signature")
    dims = signature if signature is not None and len(signature) else detail["shape"]
    shape: tuple[Dim, ...] = tuple(
        (BATCH if i == 0 else None) if d < 0 else int(d) for i, d in enumerate(dims)
    )
    return TensorSpec(name, shape, np.dtype(detail["dtype"]).name, _quantization(detail))


def tflite_io_specs(model_bytes: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs of a TFLite model, with the quantization of integer tensors."""
    inputs, outputs = _io(_interpreter(model_bytes), model_bytes)
    return [_spec(n, d) for n, d in inputs], [_spec(n, d) for n, d in outputs]


def run_tflite(model_bytes: bytes, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a TFLite model on float feeds and return float32 outputs, sorted by name.

    An integer-I/O model's float feeds are quantized with the input's scale and zero
    point, and its integer outputs dequantized, so callers compare like with like. A model
    with a fixed batch of 1 runs a batch of feeds one sample at a time; a free batch dim is
    resized to the feeds.
    """
    interpreter = _interpreter(model_bytes)
    interpreter.allocate_tensors()
    inputs, outputs = _io(interpreter, model_bytes)
    missing = [name for name, _ in inputs if name not in feeds]
    if missing:
        raise InputError(f"no feed for TFLite input {', '.join(missing)}")
    arrays = {name: np.asarray(feeds[name]) for name, _ in inputs}
    fixed = all(int(d["shape"][0]) == 1 and _fixed_first(d) for _, d in inputs if len(d["shape"]))
    count = len(next(iter(arrays.values()))) if inputs and arrays[inputs[0][0]].ndim else 1
    if fixed and count > 1:
        runs = [
            _invoke(interpreter, inputs, outputs, {n: a[i : i + 1] for n, a in arrays.items()})
            for i in range(count)
        ]
        return {name: np.concatenate([r[name] for r in runs]) for name, _ in outputs}
    return _invoke(interpreter, inputs, outputs, arrays)


def _fixed_first(detail: dict) -> bool:
    signature = detail.get("shape_signature")
    return signature is None or not len(signature) or int(signature[0]) >= 0


def _invoke(
    interpreter: Any,
    inputs: list[tuple[str, dict]],
    outputs: list[tuple[str, dict]],
    feeds: Samples,
) -> dict[str, np.ndarray]:
    resized = False
    for name, detail in inputs:
        if tuple(feeds[name].shape) != tuple(interpreter.get_tensor(detail["index"]).shape):
            interpreter.resize_tensor_input(detail["index"], list(feeds[name].shape))
            resized = True
    if resized:
        interpreter.allocate_tensors()
    for name, detail in inputs:
        interpreter.set_tensor(detail["index"], _to_input(feeds[name], detail))
    interpreter.invoke()
    return {
        name: _from_output(interpreter.get_tensor(detail["index"]), detail)
        for name, detail in outputs
    }


def _to_input(array: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if dtype.name in _INTEGER_IO and scale and array.dtype.kind == "f":
        info = np.iinfo(dtype)
        quantized = np.rint(array.astype(np.float32) / np.float32(scale)) + zero_point
        return np.clip(quantized, info.min, info.max).astype(dtype)
    return np.ascontiguousarray(array, dtype)


def _from_output(array: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.dtype(detail["dtype"]).name in _INTEGER_IO and scale:
        return ((array.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)).astype(
            np.float32
        )
    return np.array(array)


# ---- ONNX -------------------------------------------------------------------------------


def tensorflow_to_onnx(model: Any, specs: list[TensorSpec], opset: int) -> onnx.ModelProto:
    """The ONNX graph of ``model`` through tf2onnx, with the specs' input names and shapes
    and the source's output names (a free first dim stays symbolic)."""
    tf2onnx = _lazy.require("tf2onnx", "tensorflow")
    serve = _function(model, specs)
    try:
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=serve.input_signature, opset=opset
        )
    except Exception as exc:  # tf2onnx raises whatever its handlers raise
        raise ConversionError(f"tf2onnx failed: {_first_line(exc)}") from exc
    return proto
