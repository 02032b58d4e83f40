"""One contestant on one model at one thread count, in a process of its own.

    python -m bench.worker --contestant edgerun --model M.onnx --inputs M.inputs.npz \
        --threads 1 --result r.json [--outputs o.npz] [--runs 30 --warmup 5 --time-cap 60]
    python -m bench.worker --probe --result r.json     # versions and BLAS of a fresh process

bench/run.py starts one of these per row, so the peak RSS is this process's alone. Only the
contestant's own runtime is imported. Whatever goes wrong (an op edgerun does not have yet,
a crash in a kernel) is written to the result file as a failure with its reason.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
MIN_RUNS = 3  # the fewest timed runs a slow contestant is cut to under --time-cap
SAMPLE_S = 0.005

Runner = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class PeakSampler(threading.Thread):
    """Samples this process's RSS every few milliseconds, keeping the highest."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self._process = psutil.Process()
        self._stop_event = threading.Event()
        self.peak = self._process.memory_info().rss

    def run(self) -> None:
        while not self._stop_event.wait(SAMPLE_S):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, self._process.memory_info().rss)


def rss() -> int:
    return psutil.Process().memory_info().rss


def vm_hwm() -> int | None:
    """The kernel's high-water mark of this process image's RSS (Linux), in bytes.

    Unlike ru_maxrss it is not raised by the parent's memory carried over an exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def ru_maxrss() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


def blas_info() -> list[dict]:
    import threadpoolctl

    keys = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [
        {k: entry.get(k) for k in keys} | {"library": Path(entry.get("filepath", "")).name}
        for entry in threadpoolctl.threadpool_info()
    ]


# -- the contestants: import, then a loader returning a runner ---------------------------------
def load_edgerun(path: str, threads: int) -> Runner:
    sys.path.insert(0, str(ROOT))
    import edgerun

    session = edgerun.load(path, backend="numpy", threads=threads)
    return session.run


def load_onnxruntime(path: str, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return lambda feeds: dict(zip(names, session.run(None, feeds), strict=True))


def load_reference(path: str, threads: int) -> Runner:
    from onnx.reference import ReferenceEvaluator

    session = ReferenceEvaluator(path)
    names = list(session.output_names)
    return lambda feeds: dict(zip(names, session.run(None, feeds), strict=True))


def import_runtime(contestant: str) -> None:
    """Import the contestant's runtime before the 'RSS before load' reading, so the load
    figures are the model's, not the library's. ``import edgerun`` alone is light by design
    (numpy only), so the numpy runtime's own modules are imported here too: the reader, the
    backend and every kernel module, as ``import onnxruntime`` loads its whole library."""
    if contestant == "edgerun":
        sys.path.insert(0, str(ROOT))
        import edgerun.backends.numpy
        import edgerun.backends.select
        import edgerun.modelfile
        import edgerun.runtime.onnx_reader  # noqa: F401
        from edgerun.runtime import registry

        registry.load_all()
    elif contestant == "onnxruntime":
        import onnxruntime  # noqa: F401
    else:
        import onnx.reference  # noqa: F401
        import threadpoolctl

        # ReferenceEvaluator is timed once, at 1 BLAS thread
        threadpoolctl.threadpool_limits(limits=1)


LOADERS: dict[str, Callable[[str, int], Runner]] = {
    "edgerun": load_edgerun,
    "onnxruntime": load_onnxruntime,
    "reference": load_reference,
}


# -- measuring --------------------------------------------------------------------------------
def timed(runner: Runner, feeds: dict[str, np.ndarray]) -> tuple[float, dict[str, np.ndarray]]:
    start = time.perf_counter()
    outputs = runner(feeds)
    return time.perf_counter() - start, outputs


def plan_runs(estimate_s: float, runs: int, warmup: int, cap_s: float) -> tuple[int, int]:
    """(warm-up runs still to do, timed runs) fitting ``cap_s`` seconds; a slow contestant
    keeps one warm-up (already done) and at least MIN_RUNS timed runs."""
    if estimate_s * (warmup - 1 + runs) <= cap_s:
        return max(warmup - 1, 0), runs
    return 0, max(MIN_RUNS, min(runs, int(cap_s / max(estimate_s, 1e-9))))


def measure(args: argparse.Namespace, result: dict) -> None:
    """Fills ``result`` stage by stage, so a failure keeps what was measured before it."""
    feeds = dict(np.load(args.inputs))
    import_runtime(args.contestant)
    result["stage"] = "load"
    result["rss_before_load"] = rss()
    load_s, runner = timed(lambda _: LOADERS[args.contestant](args.model, args.threads), {})
    result["load_s"] = load_s
    result["rss_after_load"] = rss()

    result["stage"] = "first inference"
    first_s, outputs = timed(runner, feeds)
    result["first_s"] = first_s
    result["rss_after_first"] = rss()
    if args.outputs:
        arrays = {f"o{i}": np.asarray(v) for i, v in enumerate(outputs.values())}
        np.savez(args.outputs, **arrays)
        result["output_names"] = list(outputs)

    result["stage"] = "timed runs"
    warm_s, _ = timed(runner, feeds) if args.warmup > 0 else (first_s, None)
    # the cap counts from the first inference on
    cap_left = args.time_cap - first_s - (warm_s if args.warmup > 0 else 0.0)
    more_warmup, runs = plan_runs(warm_s, args.runs, args.warmup, cap_left)
    for _ in range(more_warmup):
        runner(feeds)
    times = [timed(runner, feeds)[0] for _ in range(runs)]
    result["warmup"] = more_warmup + (1 if args.warmup > 0 else 0)
    result["runs"] = runs
    result["runs_requested"] = args.runs
    result["times_s"] = times
    result["median_s"] = float(np.median(times))
    result["p90_s"] = float(np.percentile(times, 90))
    result["status"] = "ok"
    del result["stage"]


def probe() -> dict:
    import onnx
    import onnxruntime

    import_runtime("edgerun")
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "blas": blas_info(),
        "openblas_env": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--contestant", choices=sorted(LOADERS))
    parser.add_argument("--model")
    parser.add_argument("--inputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--time-cap", type=float, default=60.0)
    parser.add_argument("--outputs")
    parser.add_argument("--result", required=True)
    args = parser.parse_args()
    if args.probe:
        Path(args.result).write_text(json.dumps(probe()))
        return

    sampler = PeakSampler()
    sampler.start()
    result: dict = {"status": "failed", "stage": "setup", "loadavg_start": os.getloadavg()[0]}
    try:
        measure(args, result)
    except BaseException as exc:  # a failure is a result: record it and say why
        result["reason"] = f"{type(exc).__name__}: {exc}".strip()
        result["traceback"] = traceback.format_exc(limit=8)
    result["peak_rss_sampled"] = sampler.stop()
    result["peak_rss_hwm"] = vm_hwm()
    result["peak_rss_ru_maxrss"] = ru_maxrss()
    result["rss_end"] = rss()
    result["loadavg_end"] = os.getloadavg()[0]
    try:
        result["blas"] = blas_info()
    except Exception as exc:
        result["blas"] = f"unknown ({exc})"
    result["openblas_env"] = {
        k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    Path(args.result).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
