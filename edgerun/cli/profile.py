"""``edgerun profile``: latency percentiles, per-op breakdown, memory, environment."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from edgerun.cli.render import console, emit_json, human_bytes, table
from edgerun.cli.run import STRICT_HELP, _pairs, fallback_warnings

if TYPE_CHECKING:
    from rich.table import Table

    from edgerun.profiler import GateResult, Memory, ProfileReport, Progress

TOP_OPS = 15


def profile(
    model: Path = typer.Argument(..., help="An .onnx or .tflite file, or an .edgerun bundle."),
    backend: str = typer.Option("auto", "--backend", "-b", help="auto|numpy|onnxruntime|tflite"),
    device: Optional[str] = typer.Option(
        None, "--device", "-d", help="Device profile: its threads, and a check against its RAM."
    ),
    runs: int = typer.Option(50, "--runs", "-n", help="Timed runs."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs before them."),
    duration: Optional[float] = typer.Option(
        None, "--duration", help="Run for this many seconds instead of --runs."
    ),
    threads: Optional[int] = typer.Option(None, "--threads", help="Threads for the backend."),
    strict: bool = typer.Option(False, "--strict", help=STRICT_HELP),
    batch: Optional[int] = typer.Option(None, "--batch", help="First dimension of every input."),
    shape: list[str] = typer.Option([], "--shape", help="name=1x3x224x224 (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the random inputs."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Write the per-op table here."),
    trace: Optional[Path] = typer.Option(
        None, "--trace", help="Write a Chrome trace (chrome://tracing, Perfetto) here."
    ),
    fail_if: list[str] = typer.Option(
        [],
        "--fail-if",
        help="Exit with status 1 when this holds (repeatable): METRIC OP NUMBER[UNIT], "
        "metrics mean p50 p90 p99 max load first_inference (us ms s), peak_rss peak_live "
        "(B KB MB GB KiB MiB GiB), ram_share (a fraction or %, needs --device).",
    ),
) -> None:
    """Measure a model on this machine: latency, where the time goes, memory.

    Example:  edgerun profile model.onnx --device rpi4 --runs 100 --fail-if 'p99>50ms'
    """
    from edgerun.inference import parse_shape
    from edgerun.profiler import parse_gate
    from edgerun.profiler import profile as run_profile

    shapes = {k: parse_shape(v) for k, v in _pairs(shape, "--shape").items()}
    gates = [parse_gate(text) for text in fail_if]
    with _progress(not as_json) as progress, fallback_warnings():
        report = run_profile(
            model,
            backend,
            device,
            runs,
            warmup,
            duration,
            threads,
            batch,
            shapes,
            seed,
            progress,
            strict,
            gates,
        )
    if csv_file is not None:
        report.write_csv(csv_file)
    if trace is not None:
        report.write_chrome_trace(trace)
    if as_json:
        emit_json(report.to_json())
    else:
        _render(report)
        for what, path in (("per-op table", csv_file), ("trace", trace)):
            if path is not None:
                console().print(f"wrote {what} to {path}")
    failed = [g for g in report.gates if not g.passed]
    for g in failed:
        print(f"edgerun: gate failed: {g.gate} ({_gate_value(g)})", file=sys.stderr)
    if failed:
        raise typer.Exit(1)  # a result, not a user error (those exit 2)


@contextmanager
def _progress(wanted: bool) -> Iterator[Progress | None]:
    """A progress bar on a terminal's stderr; nothing in pipes or with --json."""
    if not (wanted and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("profiling", total=None)

        def advance(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield advance


def _render(report: ProfileReport) -> None:
    out = console()
    env, lat, mem = report.environment, report.latency, report.memory
    threads = env.threads if env.threads is not None else "the backend's default"
    out.print(f"model: {report.model}")
    out.print(f"backend: {report.backend}; threads: {threads}")
    out.print(f"why: {report.backend_reason}")
    out.print(f"cpu: {env.cpu_model} ({env.arch}, {env.cores} cores)" + _sensors(report))
    if env.throttled:
        out.print(f"WARNING: the CPU throttled: {env.throttle_detail}")
    out.print(
        f"load: {_ms(report.load_ms)} ms; first inference: {_ms(report.first_inference_ms)} ms"
    )
    columns = ["runs", "mean", "std", "min", "p50", "p90", "p99", "max", "per s"]
    times = (lat.mean_ms, lat.std_ms, lat.min_ms, lat.p50_ms, lat.p90_ms, lat.p99_ms, lat.max_ms)
    row = [lat.runs, *map(_ms, times), f"{lat.items_per_s:.1f}"]
    out.print(table(f"latency, ms (batch {report.batch})", columns, [row]))
    if report.op_coverage is None:
        out.print(f"per-op times: {report.backend} has no per-op profiler (whole-model only)")
    else:
        out.print(_ops_table(report))
        rows = [
            [t.op_type, t.nodes, _ms(t.total_ms / max(lat.runs, 1)), f"{t.share:.1%}"]
            for t in report.op_types
        ]
        out.print(table("by op type", ["op type", "nodes", "ms per run", "share"], rows))
        out.print(f"op time covers {report.op_coverage:.1%} of run time")
    out.print(table("memory", ["", "bytes"], _memory_rows(mem)))
    fit = report.device_fit
    if fit is not None:
        verdict = "fits" if fit.fits else "DOES NOT FIT"
        out.print(
            f"{fit.device}: peak RSS {human_bytes(fit.peak_rss)} is {fit.share:.1%} of its "
            f"{human_bytes(fit.ram_bytes)} RAM: {verdict} "
            f"(margin {'-' if fit.margin_bytes < 0 else ''}{human_bytes(abs(fit.margin_bytes))})"
        )
    if report.gates:
        rows = [[g.gate, _gate_value(g), "pass" if g.passed else "FAIL"] for g in report.gates]
        out.print(table("gates", ["--fail-if", "measured", "result"], rows))


def _gate_value(g: GateResult) -> str:
    if g.value is None:
        return f"{g.metric} not measured by this backend"
    if g.unit == "ms":
        shown = f"{_ms(g.value)} ms"
    elif g.unit == "bytes":
        shown = human_bytes(int(g.value))
    else:
        shown = f"{g.value:.1%}"
    return f"{g.metric} = {shown}"


def _ops_table(report: ProfileReport) -> Table:
    ops = sorted(report.ops, key=lambda o: -o.total_ms)
    rows = [
        [o.name, o.op_type, o.calls, _ms(o.mean_ms), f"{o.share:.1%}", _bytes(o.output_bytes)]
        for o in ops[:TOP_OPS]
    ]
    if len(ops) > TOP_OPS:
        rest = ops[TOP_OPS:]
        share = sum(o.share for o in rest)
        rows.append([f"({len(rest)} more)", "", "", "", f"{share:.1%}", ""])
    title = f"ops by time (top {min(TOP_OPS, len(ops))} of {len(ops)})"
    return table(title, ["node", "op type", "calls", "mean ms", "share", "output"], rows)


def _memory_rows(m: Memory) -> list[list[str]]:
    return [
        ["RSS before load", _bytes(m.rss_before_load)],
        ["RSS after load", _bytes(m.rss_after_load)],
        ["peak RSS over the runs", _bytes(m.peak_rss)],
        ["peak live tensors", _bytes(m.peak_live_bytes)],
        ["weights", _bytes(m.weights_bytes)],
        ["  mapped from the file", _bytes(m.weights_mapped_bytes)],
        ["  resident after load", _bytes(m.weights_resident_after_load)],
        ["  resident after runs", _bytes(m.weights_resident_after_runs)],
        ["constants in RAM", _bytes(m.constants_in_ram_bytes)],
    ]


def _sensors(report: ProfileReport) -> str:
    after = report.environment.after
    parts = []
    if after.cpu_mhz:
        parts.append(f"{min(after.cpu_mhz):.0f}-{max(after.cpu_mhz):.0f} MHz")
    if after.temperatures_c:
        parts.append(f"{max(after.temperatures_c.values()):.1f} °C")
    return f"; after the runs: {', '.join(parts)}" if parts else ""


def _ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def _bytes(n: int | None) -> str:
    return "n/a" if n is None else human_bytes(n)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile)
