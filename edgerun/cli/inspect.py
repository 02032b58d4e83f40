"""``edgerun inspect``: what is inside a model or bundle."""

from __future__ import annotations

from pathlib import Path

import typer

from edgerun.cli.render import console, emit_json, human_bytes, human_count, table
from edgerun.inspection import ModelReport, inspect_model


def inspect(
    model: Path = typer.Argument(..., help="An .onnx file or an .edgerun bundle."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show a model's inputs, outputs, opsets, op histogram, parameters, size and MACs.

    Example:  edgerun inspect model.onnx --json
    """
    report = inspect_model(model)
    if as_json:
        emit_json(report.to_json())
    else:
        _render(report)


def _render(r: ModelReport) -> None:
    out = console()
    opsets = ", ".join(f"{d} {v}" for d, v in r.opsets.items())
    out.print(
        f"{r.path}  {r.format}, {human_bytes(r.file_bytes)}, IR {r.ir_version}, opsets {opsets}"
    )
    if r.producer:
        out.print(f"producer: {r.producer}")
    rows = [["input", s["name"], _shape(s["shape"]), s["dtype"]] for s in r.inputs]
    rows += [["output", s["name"], _shape(s["shape"]), s["dtype"]] for s in r.outputs]
    out.print(table(None, ["", "name", "shape", "dtype"], rows))
    out.print(
        f"{r.nodes} nodes, {human_count(r.parameters)} parameters "
        f"({human_bytes(r.parameter_bytes)}), {human_count(r.macs)} MACs at batch 1"
    )
    if r.macs_unknown:
        out.print(f"MACs not counted for {len(r.macs_unknown)} node(s) with unknown shapes")
    out.print(table("ops", ["op", "count"], [[op, n] for op, n in r.op_histogram.items()]))
    if r.manifest:
        out.print(table("bundle", ["key", "value"], [[k, v] for k, v in r.manifest.items()]))


def _shape(shape: list | None) -> str:
    return (
        "?" if shape is None else "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    )


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
