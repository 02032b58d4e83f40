"""PyTorch to ONNX through torch.onnx.export, as a torch 2.x user would call it."""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from typing import Any

from edgerun import _lazy
from edgerun.errors import ConversionError
from edgerun.specs import TensorSpec

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def torch_input_specs(
    model: Any,
    example_inputs: tuple | None,
    input_shapes: dict[str, tuple[int, ...]],
    dynamic_batch: bool,
) -> list[TensorSpec]:
    """Inputs from ``--input-shape`` (float32), else from the model's ``example_inputs``."""
    batch: int | str = "batch" if dynamic_batch else 1
    if input_shapes:
        return [
            TensorSpec(name, (batch, *shape[1:]), "float32") for name, shape in input_shapes.items()
        ]
    if not example_inputs:
        raise ConversionError(
            "a PyTorch model needs its input shapes: give --input-shape NAME=1x3x224x224 "
            "(one per input), or an example_inputs attribute on the module"
        )
    names = getattr(model, "input_names", None) or _names("input", len(example_inputs))
    return [
        TensorSpec(name, (batch, *tuple(t.shape)[1:]), str(t.dtype).removeprefix("torch."))
        for name, t in zip(names, example_inputs, strict=True)
    ]


def _names(stem: str, count: int) -> list[str]:
    return [stem] if count == 1 else [f"{stem}_{i}" for i in range(count)]


def torch_to_onnx(model: Any, specs: list[TensorSpec], opset: int | None = None) -> Any:
    """An onnx.ModelProto of ``model``; a symbolic first dim in ``specs`` stays dynamic."""
    torch = _lazy.require("torch")
    dynamic = any(not isinstance(s.shape[0], int) for s in specs if s.shape)
    # torch.export specialises a size-1 dim, so a dynamic batch is traced at batch 2
    args = tuple(
        torch.randn(
            *[(2 if dynamic else 1) if i == 0 else d for i, d in enumerate(s.shape or ())]
        ).to(getattr(torch, s.dtype))
        for s in specs
    )
    names = [s.name for s in specs]
    script = isinstance(model, torch.jit.ScriptModule)
    if isinstance(model, torch.nn.Module):
        model.eval()
    kwargs: dict[str, Any] = {"input_names": names, "opset_version": opset}
    output_names = getattr(model, "output_names", None)
    if output_names:
        kwargs["output_names"] = list(output_names)
    if dynamic:
        if script:
            kwargs["dynamic_axes"] = {n: {0: "batch"} for n in names}
        else:
            batch = torch.export.Dim("batch", min=1, max=65536)
            kwargs["dynamic_shapes"] = tuple({0: batch} for _ in specs)
    try:
        with torch.no_grad(), _quiet():
            if script:
                buffer = io.BytesIO()
                torch.onnx.export(model, args, buffer, dynamo=False, **kwargs)
                return _lazy.require("onnx").load_from_string(buffer.getvalue())
            program = torch.onnx.export(model, args, dynamo=True, verbose=False, **kwargs)
    except Exception as exc:  # the exporter's own errors are many types; its message matters
        raise ConversionError(f"torch.onnx.export rejected the model: {_first_line(exc)}") from exc
    return program.model_proto


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter prints progress, and torch's loggers warn about its internals."""
    loggers = [logging.getLogger("torch")] + [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if name.startswith("torch.") and isinstance(logger, logging.Logger)
    ]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    """The root cause's first line: the exporter wraps it in a generic 'step 1/3' error."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = _ANSI.sub("", str(exc)).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}"[:400]


def run_torch(model: Any, feeds: dict[str, Any]) -> list[Any]:
    """The source model's outputs, flattened in order, as numpy arrays."""
    torch = _lazy.require("torch")
    if isinstance(model, torch.export.ExportedProgram):
        model = model.module()
    with torch.no_grad():
        result = model(*(torch.from_numpy(v) for v in feeds.values()))
    return [t.detach().numpy() for t in _flatten(result)]


def _flatten(result: Any) -> list[Any]:
    if isinstance(result, dict):
        return [t for v in result.values() for t in _flatten(v)]
    if isinstance(result, list | tuple):
        return [t for v in result for t in _flatten(v)]
    return [result]
