"""ONNX sources and packed ONNX models: input shapes fixed, and runners for the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from converters.accuracy import Runner
from edgerun import _lazy
from edgerun.errors import ConversionError, EdgerunError
from edgerun.runtime.dtypes import dtype_name
from edgerun.specs import TensorSpec


def fix_input_shapes(
    model: Any, shapes: dict[str, tuple[int, ...]], dynamic_batch: bool
) -> list[TensorSpec]:
    """Make the model's input dims concrete (in place): ``shapes`` first, a free batch -> 1.

    Quantization calibrates and the board plans on concrete shapes; with ``dynamic_batch``
    the first dim stays free.
    """
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    unknown = sorted(set(shapes) - {i.name for i in graph_inputs})
    if unknown:
        names = ", ".join(i.name for i in graph_inputs)
        raise ConversionError(f"--input-shape names {unknown[0]!r}; the model's inputs are {names}")
    specs = []
    for value in graph_inputs:
        dims = value.type.tensor_type.shape.dim
        wanted = shapes.get(value.name)
        if wanted is not None and len(wanted) != len(dims):
            raise ConversionError(
                f"--input-shape {value.name}: {len(wanted)} dims given, the model's input has "
                f"{len(dims)}"
            )
        for i, dim in enumerate(dims):
            if dynamic_batch and i == 0:
                dim.dim_param = dim.dim_param or "batch"
            elif wanted is not None:
                dim.dim_value = wanted[i]
            elif not dim.HasField("dim_value"):
                if i != 0:
                    raise ConversionError(
                        f"input {value.name!r} has a free dim {i} ({dim.dim_param or '?'}); "
                        f"give --input-shape {value.name}=..."
                    )
                dim.dim_value = 1
        shape = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in dims)
        specs.append(TensorSpec(value.name, shape, dtype_name(value.type.tensor_type.elem_type)))
    return specs


def onnxruntime_runner(model: bytes | str) -> Runner:
    ort = _lazy.require("onnxruntime")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return lambda feeds: session.run(None, feeds)


def packed_runners(
    path: Path,
) -> tuple[dict[str, Runner], dict[str, str], list[TensorSpec], list[TensorSpec]]:
    """The packed model on the numpy runtime and on onnxruntime, where each can run it."""
    import edgerun

    runners: dict[str, Runner] = {}
    skipped: dict[str, str] = {}
    inputs = outputs = None
    try:
        session = edgerun.load(path, backend="numpy")
        inputs, outputs = session.inputs, session.outputs
        runners["numpy"] = lambda feeds: list(session.run(feeds).values())
    except EdgerunError as exc:
        skipped["numpy"] = str(exc)
    if _lazy.available("onnxruntime"):
        try:
            runners["onnxruntime"] = onnxruntime_runner(str(path))
        except Exception as exc:  # onnxruntime's Fail/InvalidGraph/... exceptions
            skipped["onnxruntime"] = str(exc).splitlines()[0]
    else:
        skipped["onnxruntime"] = "onnxruntime is not installed"
    if inputs is None or outputs is None:
        from edgerun.runtime.onnx_reader import read_onnx

        model = read_onnx(path)
        inputs, outputs = model.inputs, model.outputs
    return runners, skipped, list(inputs), list(outputs)
