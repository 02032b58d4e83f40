"""The machine a benchmark ran on, and the results as Markdown tables."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
MB = 1024 * 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        else:
            return platform.processor() or platform.machine()
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lscpu.splitlines())
        )
        family, model = fields.get("CPU family"), fields.get("Model")
        return f"{name} (family {family}, model {model})" if family else name
    except OSError:
        return platform.processor() or platform.machine()


def git_revision() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return (
        f"{head} (working tree has uncommitted changes)" if git("status", "--porcelain") else head
    )


def machine(probe: dict, parent_env: dict[str, str | None]) -> list[tuple[str, str]]:
    """(label, value) lines describing this machine and the software that ran."""
    blas = "; ".join(
        f"{b['internal_api']} {b['version']} kernel {b['architecture']} "
        f"({b['threading_layer']}, {b['library']})"
        for b in probe.get("blas", [])
        if isinstance(b, dict)
    )
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    unset = ", ".join(f"{k}={v!r}" for k, v in parent_env.items() if v is not None)
    return [
        ("date", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")),
        ("CPU", cpu_model()),
        ("cores", f"{os.cpu_count()} logical, {affinity} usable by this process"),
        ("memory", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()} {platform.machine()}"),
        ("Python", probe.get("python", platform.python_version())),
        ("numpy", probe.get("numpy", "?")),
        ("BLAS (threadpoolctl)", blas or "none found"),
        ("onnxruntime", probe.get("onnxruntime", "?")),
        ("onnx", probe.get("onnx", "?")),
        ("edgerun", git_revision()),
        (
            "environment",
            f"{', '.join(parent_env)} unset for every contestant"
            + (f" (the driver had {unset})" if unset else " (none was set in the driver)")
            + "; edgerun's bytecode compiled before the runs",
        ),
    ]


def fmt_ms(seconds: float | None) -> str:
    return (
        ""
        if seconds is None
        else f"{seconds * 1e3:.1f}"
        if seconds < 10
        else f"{seconds * 1e3:.0f}"
    )


def fmt_mb(value: float | None) -> str:
    return "" if value is None else f"{value / MB:.1f}"


def fmt_diff(value: float | None) -> str:
    return "" if value is None else f"{value:.1e}"


def peak_rss(row: dict) -> int | None:
    """The higher of the sampler's peak and the kernel's VmHWM (ru_maxrss is shown apart:
    after an exec it may still hold the parent's peak)."""
    values = [row.get("peak_rss_sampled"), row.get("peak_rss_hwm")]
    values = [v for v in values if v]
    return max(values) if values else None


def main_table(rows: list[dict]) -> list[str]:
    head = (
        "| model | contestant | threads | load ms | first ms | median ms | p90 ms "
        "| x onnxruntime | peak RSS MB | weight MB | runs | max abs diff vs onnxruntime |"
    )
    lines = [head, "|" + "---|" * 12]
    for row in rows:
        ident = f"| {row['model']} | {row['contestant']} | {row['threads']} "
        weight = fmt_mb(row.get("weight_bytes"))
        if row.get("status") != "ok":
            reason = short_reason(row)
            lines.append(f"{ident}| | | failed: {reason} | | | | {weight} | | |")
            continue
        ratio = row.get("ratio")
        runs = f"{row['runs']}" + ("*" if row["runs"] < row["runs_requested"] else "")
        lines.append(
            f"{ident}| {fmt_ms(row['load_s'])} | {fmt_ms(row['first_s'])} "
            f"| {fmt_ms(row['median_s'])} | {fmt_ms(row['p90_s'])} "
            f"| {'' if ratio is None else f'{ratio:.2f}'} | {fmt_mb(peak_rss(row))} | {weight} "
            f"| {runs} | {fmt_diff(row.get('max_abs_diff'))} |"
        )
    return lines


def memory_table(rows: list[dict]) -> list[str]:
    lines = [
        "| model | contestant | threads | RSS before load | after load | after first run "
        "| peak (sampled) | peak (VmHWM) | ru_maxrss | numpy BLAS threads | load avg start/end |",
        "|" + "---|" * 11,
    ]
    for row in rows:
        blas = row.get("blas")
        blas_threads = (
            ",".join(str(b.get("num_threads")) for b in blas) if isinstance(blas, list) else ""
        )
        lines.append(
            f"| {row['model']} | {row['contestant']} | {row['threads']} "
            f"| {fmt_mb(row.get('rss_before_load'))} | {fmt_mb(row.get('rss_after_load'))} "
            f"| {fmt_mb(row.get('rss_after_first'))} | {fmt_mb(row.get('peak_rss_sampled'))} "
            f"| {fmt_mb(row.get('peak_rss_hwm'))} | {fmt_mb(row.get('peak_rss_ru_maxrss'))} "
            f"| {blas_threads} | {fmt_load(row)} |"
        )
    return lines


def fmt_load(row: dict) -> str:
    start, end = row.get("loadavg_start"), row.get("loadavg_end")
    return "" if start is None or end is None else f"{start:.1f} / {end:.1f}"


def short_reason(row: dict, width: int = 110) -> str:
    reason = (row.get("reason") or "unknown").splitlines()[0].replace("|", "/")
    stage = row.get("stage")
    text = f"{reason} (at {stage})" if stage else reason
    return text if len(text) <= width else text[: width - 1] + "…"


def targets(rows: list[dict]) -> list[str]:
    """Issue 4's targets for edgerun at 1 thread, per model, where all three ran."""
    lines = [
        "| model | edgerun / onnxruntime median | reference / edgerun median "
        "| edgerun / onnxruntime peak RSS | edgerun / onnxruntime load + first |",
        "|---|---|---|---|---|",
    ]
    by_key = {(r["model"], r["contestant"], r["threads"]): r for r in rows}
    for model in dict.fromkeys(r["model"] for r in rows):
        er, ort = by_key.get((model, "edgerun", 1)), by_key.get((model, "onnxruntime", 1))
        ref = by_key.get((model, "reference", 1))
        if not (er and ort and er.get("status") == ort.get("status") == "ok"):
            lines.append(f"| {model} | needs edgerun and onnxruntime at 1 thread | | | |")
            continue
        vs_ref = (
            f"{ref['median_s'] / er['median_s']:.1f}" if ref and ref.get("status") == "ok" else ""
        )
        peak_er, peak_ort = peak_rss(er), peak_rss(ort)
        startup = (er["load_s"] + er["first_s"]) / (ort["load_s"] + ort["first_s"])
        lines.append(
            f"| {model} | {er['median_s'] / ort['median_s']:.2f} | {vs_ref} "
            f"| {peak_er / peak_ort:.2f} | {startup:.2f} |"
        )
    return lines


def failures(rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        if row.get("status") != "ok":
            reason = (row.get("reason") or "unknown").strip()
            lines.append(
                f"- {row['model']} / {row['contestant']} / {row['threads']} thread(s)"
                + (f", at {row['stage']}" if row.get("stage") else "")
                + f": `{reason[:600]}`"
            )
    return lines or ["- none"]
