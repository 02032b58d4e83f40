"""``edgerun estimate``: a roofline estimate of latency and memory on a device profile."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from edgerun.cli.render import console, emit_json, human_bytes, human_count, table

if TYPE_CHECKING:
    from edgerun.estimate import Estimate

TOP_OPS = 10


def estimate(
    model: Path = typer.Argument(..., help="An .onnx file or an .edgerun bundle."),
    device: str = typer.Option(
        ...,
        "--device",
        "-d",
        help="A device profile (name or .toml path); 'this' measures this machine first.",
    ),
    save_profile: Optional[Path] = typer.Option(
        None, "--save-profile", help="Write the profile used (e.g. this machine's) as TOML."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Estimate latency and memory on a board from its profile's peak FLOP/s and bandwidth.

    Example:  edgerun estimate model.onnx --device this --save-profile mine.toml
    """
    from edgerun.estimate import estimate as run_estimate
    from edgerun.estimate import resolve_device, write_profile

    profile = resolve_device(device)
    if save_profile is not None:
        profile = write_profile(profile, save_profile)
    report = run_estimate(model, profile)
    if as_json:
        emit_json(report.to_json())
        return
    _render(report)
    if save_profile is not None:
        console().print(f"wrote device profile {profile.name!r} to {save_profile}")


def _render(e: Estimate) -> None:
    out = console()
    out.print(f"model: {e.model}")
    out.print(
        f"device: {e.device}: {e.peak_gflops_fp32:g} GFLOP/s fp32, {e.peak_gops_int8:g} GOP/s "
        f"int8, {e.memory_bandwidth_gbs:g} GB/s, depthwise Conv {e.depthwise_gflops:g} GFLOP/s"
    )
    sides = ", ".join(f"{n}^3 {rate:g}" for n, rate in e.matmul_gflops.items())
    out.print(
        f"matmul GFLOP/s by size: {sides}; elementwise pass {e.elementwise_gelems:g} G elements/s"
    )
    out.print(
        f"estimated latency: {e.total_ms:.2f} ms at batch 1 ({human_count(e.flops)} FLOPs, "
        f"{human_bytes(e.bytes_moved)} moved)"
    )
    out.print(
        f"memory: weights {human_bytes(e.weight_bytes)}, "
        f"peak activations {human_bytes(e.peak_activation_bytes)}"
    )
    rows = [
        [t.op_type, t.nodes, human_count(t.flops), human_bytes(t.bytes), f"{t.ms:.3f}",
         f"{t.share:.1%}"]
        for t in e.op_types
    ]  # fmt: skip
    out.print(table("by op type", ["op type", "nodes", "FLOPs", "bytes", "ms", "share"], rows))
    ops = sorted(e.ops, key=lambda o: -o.ms)[:TOP_OPS]
    rows = [[o.name, o.op_type, o.bound, f"{o.ms:.3f}"] for o in ops]
    out.print(table(f"slowest ops (top {len(ops)})", ["node", "op type", "bound", "ms"], rows))
    if e.unknown:
        out.print(f"{len(e.unknown)} op(s) with unknown shapes counted as 0: {e.unknown[0]}, ...")


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate)
