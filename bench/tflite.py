"""edgerun's numpy runtime against LiteRT's interpreter on the MobileNetV2-style test model.

    python -m bench.tflite [--threads 1 2] [--runs 50] [--warmup 5] [--cache bench/.cache]

The model is the one tests/runtime/kernels/test_tflite_models.py converts (seeded weights,
randomised BatchNorm statistics, nothing downloads), through the TFLite converter as float32
and as full int8 (int8 in and out); the .tflite files are cached under ``--cache``. For each
thread count both contestants are loaded with that many threads (edgerun through
``threads=N``, which caps BLAS; LiteRT with ``num_threads=N`` and its default XNNPACK
delegate) and run alternately in this one process, so load from other processes falls on
both. Times are wall clock per inference (threads other than the caller's count, so CPU
time would not do), median and p90 after warm-up; the ratio is edgerun / LiteRT. The table
goes to stdout and, with the machine it ran on, to ``--out`` (bench/TFLITE.md).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.report import ROOT, cpu_model, git_revision

MODES = ("float32", "int8")
MODEL = "mobilenet_v2"
PAIR = ("edgerun", "litert")


def build(cache: Path, size: int) -> dict[tuple[int, str], tuple[Path, list[np.ndarray]]]:
    """Each mode's .tflite path (converted now unless cached) and its feeds (the tests')."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tests.runtime.kernels import test_tflite_models as models
    from tests.runtime.kernels.test_tflite_ops import quantize_feeds

    cache.mkdir(parents=True, exist_ok=True)
    models.tf.keras.utils.set_random_seed(0)
    keras = models.MODELS[MODEL](size)
    models._randomize_batchnorm(keras)
    feeds = models.sample(keras, 7)
    out = {}
    for mode in MODES:
        path = cache / f"{MODEL}.{size}.{mode}.tflite"
        if not path.exists():
            path.write_bytes(models.convert_keras(keras, mode))
        mode_feeds = quantize_feeds(path.read_bytes(), feeds) if mode == "int8" else feeds
        out[size, mode] = (path, mode_feeds)
    return out


def litert_runner(path: Path, feeds: list[np.ndarray], threads: int) -> Callable[[], list]:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    inputs = [d["index"] for d in it.get_input_details()]
    outputs = [d["index"] for d in it.get_output_details()]

    def run() -> list:
        for i, x in zip(inputs, feeds, strict=True):
            it.set_tensor(i, x)
        it.invoke()
        return [it.get_tensor(o) for o in outputs]

    return run


def edgerun_runner(path: Path, feeds: list[np.ndarray], threads: int) -> Callable[[], list]:
    import edgerun

    session = edgerun.load(path, backend="numpy", threads=threads)
    named = {spec.name: x for spec, x in zip(session.inputs, feeds, strict=True)}
    names = [spec.name for spec in session.outputs]

    def run() -> list:
        results = session.run(named)
        return [results[n] for n in names]

    return run


def interleaved(runners: list[Callable[[], list]], runs: int, warmup: int) -> np.ndarray:
    """Seconds per run, shape (runs, contestants); the order alternates every round."""
    for _ in range(warmup):
        for run in runners:
            run()
    times = np.zeros((runs, len(runners)))
    for r in range(runs):
        order = range(len(runners)) if r % 2 == 0 else reversed(range(len(runners)))
        for i in order:
            start = time.perf_counter()
            runners[i]()
            times[r, i] = time.perf_counter() - start
    return times


def max_diff(ours: list, theirs: list) -> str:
    worst = max(
        np.abs(a.astype(np.float64) - b.astype(np.float64)).max()
        for a, b in zip(ours, theirs, strict=True)
    )
    return f"{int(worst)} steps" if ours[0].dtype.kind in "iu" else f"{worst:.1e}"


def measure(
    models: dict[tuple[int, str], tuple[Path, list[np.ndarray]]],
    threads: list[int],
    runs: int,
    warmup: int,
) -> list[dict]:
    rows = []
    for n in threads:
        for (size, mode), (path, feeds) in models.items():
            # edgerun last: its threads= sets the process-wide BLAS limit for this round
            litert = litert_runner(path, feeds, n)
            ours = edgerun_runner(path, feeds, n)
            times = interleaved([ours, litert], runs, warmup)
            med, p90 = np.median(times, axis=0), np.percentile(times, 90, axis=0)
            rows.append(
                {
                    "model": f"{MODEL} {size}x{size} {mode}",
                    "threads": n,
                    "edgerun": (med[0], p90[0]),
                    "litert": (med[1], p90[1]),
                    "ratio": med[0] / med[1],
                    "diff": max_diff(ours(), litert()),
                }
            )
            print(table(rows[-1:])[-1], flush=True)
    return rows


def table(rows: list[dict]) -> list[str]:
    lines = [
        "| model | threads | edgerun numpy median / p90 (ms) | LiteRT XNNPACK median / p90 (ms)"
        " | ratio (medians) | max abs diff |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ours, theirs = (f"{m * 1e3:.2f} / {p * 1e3:.2f}" for m, p in (row[k] for k in PAIR))
        lines.append(
            f"| {row['model']} | {row['threads']} | {ours} | {theirs} "
            f"| {row['ratio']:.2f}x | {row['diff']} |"
        )
    return lines


def load() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"


def machine_lines(runs: int, warmup: int, load_before: str) -> list[str]:
    from importlib.metadata import version

    from threadpoolctl import threadpool_info

    blas = "; ".join(f"{b['internal_api']} {b['version']}" for b in threadpool_info())
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else "?"
    return [
        f"- CPU: {cpu_model()}",
        f"- cores: {os.cpu_count()} logical, {affinity} usable by this process",
        f"- OS: {platform.system()} {platform.release()} {platform.machine()}",
        f"- Python {platform.python_version()}, numpy {np.__version__}, BLAS: {blas or 'none'}",
        f"- ai-edge-litert {version('ai-edge-litert')} (XNNPACK delegate, its default)",
        f"- edgerun {git_revision()}",
        f"- {runs} interleaved runs per row after {warmup} warm-up runs each; wall clock",
        f"- load average (1/5/15 min) before: {load_before}, after: {load()}: other processes"
        " share the cores, so rows with more threads than idle cores are the noisiest (each"
        " engine's worker threads also spin for a while after a run, taking a core from the"
        " other's)",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / ".cache")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "TFLITE.md")
    args = parser.parse_args(argv)
    if args.runs < 30:
        parser.error("--runs must be at least 30")
    models = {k: v for size in args.sizes for k, v in build(args.cache, size).items()}
    load_before = load()
    rows = measure(models, args.threads, args.runs, args.warmup)
    text = [
        "# edgerun numpy runtime vs LiteRT on the MobileNetV2-style model",
        "",
        "`python -m bench.tflite` (issue 9: edgerun at most 2x LiteRT's latency).",
        "Five inverted-residual blocks (the tests' model at 64x64x3, and the same at 224x224x3);",
        "float32 and full int8 (int8 in and out) conversions.",
        "",
        *table(rows),
        "",
        *machine_lines(args.runs, args.warmup, load_before),
        "",
    ]
    args.out.write_text("\n".join(text))
    print("\n".join(table(rows)))
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
