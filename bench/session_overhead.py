"""What edgerun's Session layer adds to onnxruntime's own latency, side by side.

    python -m bench.session_overhead [--model resnet18] [--runs 200] [--threads 1]

One process, one input, two sessions over the same file with the same threads and graph
optimisation: onnxruntime's ``InferenceSession.run`` and ``edgerun.load(...,
backend="onnxruntime").run`` (feed checks, output dict). The runs are interleaved in pairs
whose order alternates, so drift in clocks or in other load on the machine falls on both
alike; the overhead is the median of the per-pair ratios, and the mean and medians are shown.
On a machine shared with other work the pairs' noise is far larger than the layer, so the
layer is also timed alone: what ``Session.run`` does around onnxruntime's ``run`` (checking
the feeds, naming the outputs), as a share of onnxruntime's median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from time import perf_counter

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "bench" / ".cache"


def model_path(name: str) -> Path:
    path = CACHE / f"{name}.onnx"
    if not path.exists():
        from converters import zoo

        CACHE.mkdir(parents=True, exist_ok=True)
        zoo.export(name, str(path))
    return path


def sessions(path: Path, threads: int) -> tuple[object, object]:
    import onnxruntime as ort

    import edgerun

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    raw = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ours = edgerun.load(path, backend="onnxruntime", threads=threads)
    assert ours.backend == "onnxruntime:CPUExecutionProvider", ours.backend
    return raw, ours


def measure(
    path: Path, runs: int, warmup: int, threads: int
) -> tuple[dict[str, list[float]], float]:
    raw, ours = sessions(path, threads)
    spec = ours.inputs[0]
    shape = [d if isinstance(d, int) else 1 for d in spec.shape]
    feeds = {spec.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    names = [o.name for o in ours.outputs]
    contestants = {
        "onnxruntime": lambda: raw.run(names, feeds),
        "edgerun Session": lambda: ours.run(feeds),
    }
    expected, got = raw.run(names, feeds)[0], ours.run(feeds)[names[0]]
    np.testing.assert_array_equal(got, expected)
    for _ in range(warmup):
        for run in contestants.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in contestants}
    order = list(contestants)
    for i in range(runs):
        for name in order if i % 2 == 0 else order[::-1]:
            start = perf_counter()
            contestants[name]()
            times[name].append(perf_counter() - start)
    return times, layer_alone(ours, feeds)


def layer_alone(session: object, feeds: dict[str, np.ndarray], calls: int = 20000) -> float:
    """Seconds per call of Session.run's own work: the feed check and the output dict."""
    from edgerun.feeds import check_feeds

    names = [o.name for o in session.outputs]  # type: ignore[attr-defined]
    results = [np.empty(0)] * len(names)
    start = perf_counter()
    for _ in range(calls):
        dict(zip(names, results, strict=True))
        check_feeds(session.inputs, feeds)  # type: ignore[attr-defined]
    return (perf_counter() - start) / calls


def report(times: dict[str, list[float]], model: str, threads: int, layer_s: float) -> str:
    raw, ours = times["onnxruntime"], times["edgerun Session"]
    ratios = [b / a for a, b in zip(raw, ours, strict=True)]
    lines = [
        f"{model}, {len(raw)} interleaved pairs, {threads} thread(s), same process",
        f"{'':16} {'median ms':>10} {'mean ms':>10} {'min ms':>10}",
    ]
    for name, values in times.items():
        ms = [v * 1e3 for v in values]
        lines.append(
            f"{name:16} {statistics.median(ms):10.3f} {statistics.fmean(ms):10.3f} {min(ms):10.3f}"
        )
    overhead = statistics.median(ratios) - 1
    mean_overhead = statistics.fmean(ours) / statistics.fmean(raw) - 1
    lines.append(
        f"Session overhead: {overhead:+.2%} (median of per-pair ratios), "
        f"{mean_overhead:+.2%} (ratio of means)"
    )
    share = layer_s / statistics.median(raw)
    lines.append(
        f"Session layer alone: {layer_s * 1e6:.1f} us per run = {share:.3%} of onnxruntime"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    times, layer_s = measure(model_path(args.model), args.runs, args.warmup, args.threads)
    print(report(times, args.model, args.threads, layer_s))
    return 0


if __name__ == "__main__":
    sys.exit(main())
