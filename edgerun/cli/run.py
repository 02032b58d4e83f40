"""``edgerun run``: one inference, outputs saved or summarised."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer

from edgerun.cli.render import console, emit_json, table
from edgerun.errors import BackendFallbackWarning, InputError

STRICT_HELP = (
    "Fail instead of falling back when an asked-for backend, provider or delegate is missing."
)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    pairs = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise InputError(f"bad {what} {item!r}; write it as name=value")
        pairs[name] = value
    return pairs


def run(
    model: Path = typer.Argument(..., help="An .onnx or .tflite file, or an .edgerun bundle."),
    input_files: list[str] = typer.Option([], "--input", "-i", help="name=file.npy (repeatable)."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="An .npz holding all inputs."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Save outputs to .npz."),
    shape: list[str] = typer.Option([], "--shape", help="name=1x3x224x224 for random inputs."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto|numpy|onnxruntime|tflite"),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device profile name."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads for the backend."),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
    seed: int = typer.Option(0, "--seed", help="Seed for random inputs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Run one inference (random inputs when none are given) and summarise the outputs, saying
    which backend ran it and why.

    Example:  edgerun run model.onnx --device rpi4 --input image=cat.npy --output out.npz
    """
    import edgerun
    from edgerun.inference import parse_shape, run_once, save_outputs, summarize

    files = {k: Path(v) for k, v in _pairs(input_files, "--input").items()}
    shapes = {k: parse_shape(v) for k, v in _pairs(shape, "--shape").items()}
    with fallback_warnings():
        session = edgerun.load(model, backend, device, threads, strict=strict)
    result = run_once(session, files, inputs, shapes, seed)
    if output is not None:
        save_outputs(result.outputs, output)
    summaries = [summarize(k, v) for k, v in result.outputs.items()]
    if as_json:
        emit_json(
            {
                "backend": result.backend,
                "backend_reason": result.backend_reason,
                "providers": session.providers,
                "placement": session.placement,
                "random_inputs": result.random_inputs,
                "inputs": {
                    k: {"shape": list(v.shape), "dtype": str(v.dtype)}
                    for k, v in result.inputs.items()
                },
                "outputs": [s.to_json() for s in summaries],
                "saved_to": None if output is None else str(output),
            }
        )
        return
    out = console()
    out.print(f"backend: {result.backend} ({result.backend_reason})")
    if result.random_inputs:
        out.print("inputs: random (give --input name=file.npy for real data)")
    rows = [[s.name, s.shape, s.dtype, _num(s.min), _num(s.max), _num(s.mean)] for s in summaries]
    out.print(table("outputs", ["name", "shape", "dtype", "min", "max", "mean"], rows))
    for s in summaries:
        if s.top5:
            out.print(f"{s.name} top-5: " + ", ".join(f"{i}: {v:.4g}" for i, v in s.top5))
    if output is not None:
        out.print(f"saved outputs to {output}")


@contextmanager
def fallback_warnings() -> Iterator[None]:
    """A backend fallback as one line on stderr (stdout stays the --json document)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BackendFallbackWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, BackendFallbackWarning):
            print(f"edgerun: warning: {warning.message}", file=sys.stderr)
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def register(app: typer.Typer) -> None:
    app.command("run")(run)
