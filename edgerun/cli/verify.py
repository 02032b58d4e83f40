"""``edgerun verify``: run a bundle's golden samples on this board and compare."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgerun.cli.render import console, emit_json, table


def verify(
    bundle: Path = typer.Argument(..., help="An .edgerun bundle made by edgerun pack."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto|numpy|onnxruntime|tflite"),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="Device profile name."),
    threads: Optional[int] = typer.Option(None, "--threads", help="BLAS threads."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Check that this machine reproduces the outputs the bundle was packed with.

    Exits with status 1 when an output is off by more than the bundle's tolerance.

    Example:  edgerun verify cnn.rpi4.edgerun --backend numpy
    """
    from edgerun.verify import verify as run_verify

    report = run_verify(bundle, backend, device, threads)
    if as_json:
        emit_json(report.to_json())
    else:
        out = console()
        out.print(f"backend: {report.backend}; golden samples: {report.samples}")
        rows = [
            [
                o.name,
                f"{o.max_abs_error:.4g}",
                f"{o.tolerance:.4g}",
                "" if o.top1_agreement is None else f"{100 * o.top1_agreement:.0f}%",
                "ok" if o.ok else "DIFFERS",
            ]
            for o in report.outputs
        ]
        out.print(table(None, ["output", "max abs err", "tolerance", "top-1", "result"], rows))
        out.print("this machine agrees with the packer" if report.ok else "this machine DIFFERS")
    if not report.ok:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)
