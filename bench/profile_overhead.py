"""What per-op timing costs on the numpy runtime, and how much of a run the op table covers.

    python -m bench.profile_overhead [--models resnet18,mobilenet_v2] [--pairs 30]
        [--clock thread|wall] [--cache bench/.cache]

One process, one session per model, the same inputs. Each pair runs the plan once plainly
(``Plan.run``) and once through the profiler's recorder (``Session.op_recorder``: a timer
around every step, its spans kept), in alternating order, so drift in clocks or in other
load falls on both alike. The overhead is the median of the per-pair ratios (recorded /
plain - 1). ``--clock thread`` (the default) reads this thread's CPU time with one BLAS
thread, so other processes on a shared machine do not count; ``--clock wall`` reads wall
time with BLAS's own threads. Coverage is ``edgerun.profiler.profile``'s ``op_coverage``
(op time over run wall time, default threads) on the same model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("resnet18", "mobilenet_v2")


def pairs(
    plain: Callable[[], object], recorded: Callable[[], object], n: int, clock: Callable[[], float]
) -> tuple[list[float], list[float]]:
    """Seconds of each plain and each recorded run, interleaved in pairs of alternating order."""
    for _ in range(2):
        plain()
        recorded()
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        for fn, into in ((plain, a), (recorded, b)) if i % 2 == 0 else ((recorded, b), (plain, a)):
            start = clock()
            fn()
            into.append(clock() - start)
    return a, b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--clock", choices=("thread", "wall"), default="thread")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import edgerun
    from bench.estimate_vs_measured import build
    from edgerun.profiler import MAX_TRACED_RUNS, profile

    names = [n for n in args.models.split(",") if n]
    manifest = build(names, args.cache)
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    threads = 1 if args.clock == "thread" else None
    rows = []
    for name in names:
        entry = manifest[name]
        if "error" in entry:
            print(f"{name}: not built: {entry['error']}")
            continue
        session = edgerun.load(entry["path"], backend="numpy", threads=threads)
        plan = session.plan
        recorder = session.op_recorder(MAX_TRACED_RUNS)
        assert plan is not None and recorder is not None
        feeds = {k: np.asarray(v) for k, v in np.load(entry["inputs"]).items()}
        if threads is not None:
            from threadpoolctl import threadpool_limits

            limits: object = threadpool_limits(threads)
        else:
            limits = nullcontext()
        with limits:  # type: ignore[attr-defined]
            plain, recorded = pairs(
                lambda p=plan, f=feeds: p.run(f),
                lambda r=recorder, f=feeds: r.run(f),
                args.pairs,
                clock,
            )
        ratios = [r / p - 1 for p, r in zip(plain, recorded, strict=True)]
        report = profile(entry["path"], backend="numpy", runs=args.pairs, warmup=2)
        rows.append((name, len(plan.steps), plain, recorded, ratios, report.op_coverage))

    print(f"clock: {args.clock}; {args.pairs} interleaved pairs per model")
    print()
    print("| model | steps | plain ms (median) | per-op timed ms (median) | overhead "
          "(median of pair ratios) | op time / run time |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, steps, plain, recorded, ratios, coverage in rows:
        print(
            f"| {name} | {steps} | {statistics.median(plain) * 1e3:.2f} "
            f"| {statistics.median(recorded) * 1e3:.2f} | {statistics.median(ratios):+.2%} "
            f"| {coverage:.1%} |"
        )


if __name__ == "__main__":
    main()
