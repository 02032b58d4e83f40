"""``edgerun estimate`` against measured numpy-runtime latency on this machine.

    python -m bench.estimate_vs_measured [--models resnet18,mobilenet_v2,minilm_l6]
        [--runs 10] [--clock thread|wall] [--cache bench/.cache]

Calibrates this machine (``edgerun.estimate.measure``: float32 BLAS matmuls at three sizes,
a large copy, an in-cache elementwise pass and the runtime's depthwise Conv kernel),
estimates each model on that profile, then times the numpy runtime on the model's benchmark
inputs (bench/models.py builds them in its own process, so torch never loads here) and
prints estimate / measured per model. Done when every ratio is within 2x.

``--clock thread`` (the default) runs calibration and models on one BLAS thread and reads
this thread's CPU time, so other processes on a shared machine do not count; ``--clock
wall`` uses wall time and every BLAS thread, as ``edgerun estimate --device this`` and
``edgerun profile`` do on a quiet board. Measured is the median of ``--runs`` runs after
two warm-ups; calibration is the best of its repeats (a peak), taken before and after the
models, and the estimate uses the first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = ROOT / "bench" / ".cache"
MODELS = ("resnet18", "mobilenet_v2", "minilm_l6")


def build(names: list[str], cache: Path) -> dict[str, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.models", "--models", ",".join(names), "--cache", str(cache)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def timed_runs(run: Callable[[], object], runs: int, clock: Callable[[], float]) -> list[float]:
    for _ in range(2):
        run()
    seconds = []
    for _ in range(runs):
        start = clock()
        run()
        seconds.append(clock() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument(
        "--by-type", action="store_true", help="Also compare each model's op types."
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import edgerun
    from edgerun.estimate import calibrate, estimate, measure

    names = [n for n in args.models.split(",") if n]
    manifest = build(names, args.cache)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    threads = 1 if args.clock == "thread" else None
    if threads is not None:
        from threadpoolctl import threadpool_limits

        limits: object = threadpool_limits(threads)
    else:
        limits = nullcontext()
    rows = []
    shares: dict[str, dict[str, float]] = {}
    with limits:  # type: ignore[attr-defined]
        before = measure(clock=clock)
        profile = calibrate(calibration=before)
        for name in names:
            entry = manifest[name]
            if "error" in entry:
                rows.append((name, None, None, None, entry["error"]))
                continue
            guess = estimate(entry["path"], profile)
            session = edgerun.load(entry["path"], backend="numpy", threads=threads)
            feeds = dict(np.load(entry["inputs"]))
            seconds = timed_runs(lambda s=session, f=feeds: s.run(f), args.runs, clock)
            rows.append((name, guess, statistics.median(seconds), min(seconds), ""))
            if args.by_type:
                shares[name] = op_type_shares(entry["path"], threads, args.runs)
        after = measure(clock=clock)

    print(f"clock: {args.clock}; BLAS threads: {before.blas_threads}")
    for label, c in (("before", before), ("after", after)):
        print(
            f"calibration {label}: {c.gflops_fp32:.1f} GFLOP/s fp32, "
            f"{c.bandwidth_gbs:.1f} GB/s copy, {c.depthwise_gflops:.1f} GFLOP/s depthwise Conv, "
            f"small matmuls {small(c.small_matmul_gflops)} GFLOP/s, "
            f"{c.elementwise_gelems or 0:.2f} G elements/s per elementwise pass"
        )
    print()
    print("| model | GFLOPs | estimate ms | measured ms (median) | min ms | estimate / measured |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, guess, median, fastest, error in rows:
        if guess is None:
            print(f"| {name} | | | | | not built: {error} |")
            continue
        ratio = guess.total_ms / (median * 1e3)
        verdict = "" if 0.5 <= ratio <= 2 else " (outside 2x)"
        print(
            f"| {name} | {guess.flops / 1e9:.2f} | {guess.total_ms:.1f} | {median * 1e3:.1f} "
            f"| {fastest * 1e3:.1f} | {ratio:.2f}{verdict} |"
        )

    for name, guess, median, _, _ in rows:
        if name in shares and guess is not None:
            print_by_type(name, guess, median, shares[name])


def small(rates: dict[int, float] | None) -> str:
    return ", ".join(f"{n}: {r:.0f}" for n, r in (rates or {}).items()) or "-"


def op_type_shares(path: str, threads: int | None, runs: int) -> dict[str, float]:
    """Each op type's share of run time, from the profiler's per-op table (wall time: shares
    hold up under other load better than times do)."""
    from edgerun.profiler import profile

    report = profile(path, backend="numpy", runs=runs, warmup=1, threads=threads)
    coverage = report.op_coverage or 1.0
    return {t.op_type: t.share * coverage for t in report.op_types}


def print_by_type(name: str, guess: object, median: float, shares: dict[str, float]) -> None:
    estimated = {t.op_type: t.ms for t in guess.op_types}  # type: ignore[attr-defined]
    print()
    print(f"{name}: by op type (measured = the profiler's share x the median above)")
    print("| op type | estimate ms | measured ms | estimate / measured |")
    print("| --- | ---: | ---: | ---: |")
    for op_type, share in sorted(shares.items(), key=lambda kv: -kv[1])[:8]:
        measured = share * median * 1e3
        est = estimated.get(op_type, 0.0)
        print(f"| {op_type} | {est:.2f} | {measured:.2f} | {est / measured:.2f} |")


if __name__ == "__main__":
    main()
