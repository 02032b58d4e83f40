"""``edgerun doctor``: what this machine is and which backends it can use."""

from __future__ import annotations

import typer

from edgerun.cli.render import console, emit_json, table


def doctor(as_json: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """Report this machine's CPU, memory, numpy and BLAS, the backends that import, a tiny
    model run on each backend, execution provider and delegate found, and the closest device
    profile.

    Example:  edgerun doctor --json
    """
    from edgerun.doctor import run_doctor

    report = run_doctor()
    if as_json:
        emit_json(report.to_json())
        return
    out = console()
    cpu = report.cpu
    clock = f", {cpu.max_mhz:.0f} MHz" if cpu.max_mhz else ""
    out.print(f"CPU: {cpu.model} ({cpu.arch}, {cpu.cores} cores{clock})")
    out.print(f"ISA features: {', '.join(cpu.features) or 'none detected'}")
    out.print(f"RAM: {report.ram_mb} MB   Python {report.python} on {report.platform}")
    blas = ", ".join(b.get("internal_api", b.get("name", "?")) for b in report.blas) or "unknown"
    out.print(f"numpy {report.numpy}, BLAS: {blas}")
    rows = [
        [b.name, "yes" if b.available else "no", b.version or "", b.detail] for b in report.backends
    ]
    out.print(table("backends", ["package", "available", "version", "detail"], rows))
    rows = [[c.backend, "yes" if c.ran else "no", c.detail] for c in report.checks]
    out.print(table("probe model run on each", ["backend", "ran", "detail"], rows))
    out.print(
        f"closest device profile: {report.closest_profile or 'none'} ({report.closest_reason})"
    )


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
