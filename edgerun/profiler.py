"""``edgerun profile``: how fast a model runs here, where the time goes, how much memory it takes.

``profile()`` loads the model, times the first inference apart, runs warm-ups, then times
``runs`` inferences (or as many as fit in ``duration`` seconds) with a timer around each plan
step. It returns a ``ProfileReport``: the same table for every backend, so the onnxruntime
and TFLite backends fill it from their own profilers later. Fields a backend cannot measure
are None (e.g. ``output_bytes`` and ``peak_live_bytes`` off the numpy runtime).

JSON schema of ``ProfileReport.to_json()``, version 1 (``SCHEMA_VERSION``): the indented
block below is the schema itself, read by ``report_schema()``, which ``validate_report()``
and the tests check reports against. One key a line, ``key: type -- meaning``; types are
``int``, ``number``, ``str``, ``bool``, ``object`` (its keys indented below it),
``list[T]``, ``map[T]`` (any keys, values T); a trailing ``?`` allows null. Times are in ms,
sizes in bytes. Values a backend cannot measure are null (the numpy runtime's own memory
accounting and output sizes off it; per-op rows on TFLite).

    schema_version: int -- bumped when a key changes meaning or goes away
    model: str -- the path given
    backend: str -- what ran it, e.g. numpy or onnxruntime:CPUExecutionProvider
    backend_reason: str -- why that backend was chosen
    inputs: map[object] -- the random feeds, by input name
        shape: list[int]
        dtype: str
    batch: int -- first dimension of the first input
    load_ms: number -- load, measured once
    first_inference_ms: number -- the first inference, apart from warm-ups and runs
    latency: object -- over the timed runs
        runs: int
        mean_ms: number
        std_ms: number
        min_ms: number
        p50_ms: number
        p90_ms: number
        p99_ms: number
        max_ms: number
        throughput_per_s: number -- runs per second
        items_per_s: number -- runs x batch per second
    runs_ms: list[number] -- every timed run, in order
    ops: list[object] -- one row per op in execution order (plan steps on numpy)
        index: int
        name: str -- the model's node name
        op_type: str
        calls: int
        total_ms: number -- over all timed runs
        mean_ms: number -- per call
        share: number -- of all op time
        output_bytes: int? -- per call
    op_types: list[object] -- ops grouped by type, by total time descending
        op_type: str
        nodes: int
        calls: int
        total_ms: number
        share: number
    op_coverage: number? -- op time over run wall time; the rest is the runtime's own loop
    memory: object
        rss_before_load: int
        rss_after_load: int
        peak_rss: int -- over the timed runs
        peak_rss_method: str -- kernel VmHWM or sampled
        peak_live_bytes: int? -- largest set of live activations at step boundaries
        peak_live_at: str? -- the step where it peaked; kernel scratch is not in it
        weights_bytes: int? -- initializers
        weights_mapped_bytes: int? -- initializers that are views over the mapped file
        weights_resident_after_load: int? -- resident pages of those mappings (smaps)
        weights_resident_after_runs: int?
        constants_in_ram_bytes: int? -- initializers and folded constants held in RAM
    environment: object
        cpu_model: str
        arch: str
        cores: int
        cpu_max_mhz: number?
        threads: int? -- requested; null for the backend's default
        blas_threads: int? -- what BLAS uses, per threadpoolctl
        backend: str
        providers: list[str] -- onnxruntime's providers, the TFLite delegate
        python: str
        numpy: str
        platform: str
        before: object -- sensors before the runs
            cpu_mhz: list[number] -- per core (cpufreq)
            temperatures_c: map[number] -- per thermal zone
            pi_throttled: int? -- vcgencmd get_throttled
            throttle_count: int? -- x86 core_throttle_count, summed
        after: object -- the same after the runs
            cpu_mhz: list[number]
            temperatures_c: map[number]
            pi_throttled: int?
            throttle_count: int?
        throttled: bool? -- null when nothing on this machine tells
        throttle_detail: str
    device_fit: object? -- with a device: peak RSS here against the profile's RAM
        device: str
        ram_bytes: int
        peak_rss: int
        share: number
        margin_bytes: int
        fits: bool
    gates: list[object] -- one per --fail-if, in the order given
        gate: str -- as written
        metric: str
        op: str
        threshold: number -- in unit
        unit: str -- ms, bytes or fraction
        value: number? -- null where the backend does not measure it (the gate fails)
        passed: bool
"""

from __future__ import annotations

import csv
import json
import operator
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from glob import glob
from pathlib import Path
from time import perf_counter
from typing import Any, NamedTuple

import numpy as np
import psutil

import edgerun
from edgerun.backends.base import OpRecord, OpRecorder
from edgerun.errors import InputError
from edgerun.feeds import check_feeds
from edgerun.inference import concrete_shape, random_feeds
from edgerun.runtime.plan import Plan, Step

SCHEMA_VERSION = 1
MAX_TRACED_RUNS = 200  # per-op spans kept for the trace; totals cover every run
RSS_INTERVAL_S = 0.002
# vcgencmd get_throttled bits: 0-3 now, 16-19 since boot
PI_THROTTLE_BITS = {
    0: "under-voltage",
    1: "arm frequency capped",
    2: "throttled",
    3: "soft temperature limit",
}

Progress = Callable[[int, int | None], None]  # (runs done, runs planned or None for duration)


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OpStat:
    index: int
    name: str
    op_type: str
    calls: int
    total_ms: float
    mean_ms: float
    share: float
    output_bytes: int | None  # per call; None where the backend does not say


@dataclass(frozen=True)
class OpTypeStat:
    op_type: str
    nodes: int
    calls: int
    total_ms: float
    share: float


@dataclass(frozen=True)
class Latency:
    runs: int
    mean_ms: float
    std_ms: float
    min_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    throughput_per_s: float
    items_per_s: float


@dataclass(frozen=True)
class Memory:
    rss_before_load: int
    rss_after_load: int
    peak_rss: int
    peak_rss_method: str
    peak_live_bytes: int | None
    peak_live_at: str | None
    weights_bytes: int | None  # None off the numpy runtime (here and below)
    weights_mapped_bytes: int | None
    weights_resident_after_load: int | None
    weights_resident_after_runs: int | None
    constants_in_ram_bytes: int | None


@dataclass(frozen=True)
class Sensors:
    cpu_mhz: list[float]
    temperatures_c: dict[str, float]
    pi_throttled: int | None  # vcgencmd get_throttled, where present
    throttle_count: int | None  # x86 thermal_throttle/core_throttle_count, summed


@dataclass(frozen=True)
class Environment:
    cpu_model: str
    arch: str
    cores: int
    cpu_max_mhz: float | None
    threads: int | None  # requested (None: the BLAS default)
    blas_threads: int | None  # what BLAS uses, per threadpoolctl
    backend: str
    providers: list[str]
    python: str
    numpy: str
    platform: str
    before: Sensors
    after: Sensors
    throttled: bool | None
    throttle_detail: str


@dataclass(frozen=True)
class DeviceFit:
    device: str
    ram_bytes: int
    peak_rss: int
    share: float
    margin_bytes: int
    fits: bool


class Span(NamedTuple):  # a tuple: made once per step per run, inside the timing
    run: int
    op: int  # index into ProfileReport.ops
    start_s: float  # since the profile began
    seconds: float


@dataclass
class ProfileReport:
    model: str
    backend: str
    backend_reason: str
    inputs: dict[str, dict[str, Any]]
    batch: int
    load_ms: float
    first_inference_ms: float
    latency: Latency
    runs_ms: list[float]
    ops: list[OpStat]
    op_types: list[OpTypeStat]
    op_coverage: float | None  # None where the backend has no per-op time (TFLite)
    memory: Memory
    environment: Environment
    device_fit: DeviceFit | None
    gates: list[GateResult] = field(default_factory=list)
    # for the trace: (name, start_s, seconds) of load and first inference; (start_s, seconds)
    # of the first MAX_TRACED_RUNS runs; their op spans
    phases: list[tuple[str, float, float]] = field(default_factory=list, repr=False)
    run_spans: list[tuple[float, float]] = field(default_factory=list, repr=False)
    spans: list[Span] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k not in ("phases", "run_spans", "spans")}
        return {"schema_version": SCHEMA_VERSION, **data}

    def write_csv(self, path: str | os.PathLike[str]) -> None:
        """The per-op table, one row per plan step in plan order."""
        columns = list(OpStat.__dataclass_fields__)
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            for op in self.ops:
                writer.writerow(["" if v is None else v for v in asdict(op).values()])

    def chrome_trace(self) -> dict[str, Any]:
        """chrome://tracing / Perfetto JSON: complete ("X") events, µs since the profile began.

        Ops sit on the same thread as their run, so the viewers nest them inside it.
        """
        pid = os.getpid()
        events: list[dict[str, Any]] = [
            {
                "name": "process_name",
                "ph": "M",
                "pid": pid,
                "tid": 0,
                "args": {"name": f"edgerun profile {Path(self.model).name}"},
            },
        ]
        for name, start, seconds in self.phases:
            events.append(_complete(name, "phase", start, seconds, pid, {}))
        for run, (start, seconds) in enumerate(self.run_spans):
            events.append(_complete(f"run {run}", "run", start, seconds, pid, {"run": run}))
        for span in self.spans:
            op = self.ops[span.op]
            args = {"op_type": op.op_type, "run": span.run}
            events.append(_complete(op.name, op.op_type, span.start_s, span.seconds, pid, args))
        meta = {"model": self.model, "backend": self.backend, "traced_runs": len(self.run_spans)}
        return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": meta}

    def write_chrome_trace(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.chrome_trace(), f)


def _complete(
    name: str, cat: str, start: float, seconds: float, pid: int, args: dict[str, Any]
) -> dict[str, Any]:
    # duration from rounded ends, so a span inside another stays inside after rounding
    ts, end = round(start * 1e6, 3), round((start + seconds) * 1e6, 3)
    return {
        "name": name,
        "cat": cat,
        "ph": "X",
        "ts": ts,
        "dur": round(end - ts, 3),
        "pid": pid,
        "tid": 1,
        "args": args,
    }


# --- the JSON schema, read from the module docstring ---------------------------------------


@dataclass(frozen=True)
class SchemaKey:
    type: str  # int, number, str, bool, object, list[T], map[T]; "?" at the end: nullable
    keys: dict[str, SchemaKey]  # an object's (or list[object]'s, map[object]'s) own keys


def report_schema() -> dict[str, SchemaKey]:
    """The report's keys as documented in this module's docstring (the indented block)."""
    if __doc__ is None:  # python -OO strips docstrings
        raise RuntimeError("the profile report schema lives in edgerun.profiler's docstring")
    root: dict[str, SchemaKey] = {}
    stack: list[dict[str, SchemaKey]] = [root]
    for line in __doc__.splitlines():
        if not line.startswith("    ") or ":" not in line:
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 4
        key, _, rest = line.strip().partition(":")
        kind = rest.split(" -- ")[0].strip()
        del stack[depth:]
        stack[-1][key] = SchemaKey(kind, {})
        stack.append(stack[-1][key].keys)
    return root


def validate_report(data: Any) -> list[str]:
    """Where ``data`` (a parsed JSON report) departs from the schema: one line per problem."""
    return _check_object(data, report_schema(), "")


_TYPES: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
}


def _check_object(data: Any, keys: dict[str, SchemaKey], where: str) -> list[str]:
    if not isinstance(data, dict):
        return [f"{where or 'report'}: expected an object"]
    problems = [f"{where}{k}: missing" for k in keys if k not in data]
    problems += [f"{where}{k}: not in the schema" for k in data if k not in keys]
    for k, spec in keys.items():
        if k in data:
            problems += _check_value(data[k], spec.type, spec.keys, f"{where}{k}")
    return problems


def _check_value(value: Any, kind: str, keys: dict[str, SchemaKey], where: str) -> list[str]:
    if kind.endswith("?"):
        return [] if value is None else _check_value(value, kind[:-1], keys, where)
    for wrapper, items in (("list[", _list_items), ("map[", _map_items)):
        if kind.startswith(wrapper):
            inner = kind[len(wrapper) : -1]
            found = items(value)
            if found is None:
                return [f"{where}: expected a {wrapper[:-1]}"]
            return [p for at, v in found for p in _check_value(v, inner, keys, f"{where}{at}")]
    if kind == "object":
        return _check_object(value, keys, f"{where}.")
    return [] if _TYPES[kind](value) else [f"{where}: expected {kind}, got {value!r}"]


def _list_items(value: Any) -> list[tuple[str, Any]] | None:
    return [(f"[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else None


def _map_items(value: Any) -> list[tuple[str, Any]] | None:
    return [(f"[{k!r}]", v) for k, v in value.items()] if isinstance(value, dict) else None


# --- gates for CI -------------------------------------------------------------------------

# metric -> (quantity, where the report keeps it); quantities are ms, bytes or a fraction
GATE_METRICS: dict[str, tuple[str, Callable[[ProfileReport], float | None]]] = {
    "mean": ("time", lambda r: r.latency.mean_ms),
    "p50": ("time", lambda r: r.latency.p50_ms),
    "p90": ("time", lambda r: r.latency.p90_ms),
    "p99": ("time", lambda r: r.latency.p99_ms),
    "max": ("time", lambda r: r.latency.max_ms),
    "load": ("time", lambda r: r.load_ms),
    "first_inference": ("time", lambda r: r.first_inference_ms),
    "peak_rss": ("bytes", lambda r: r.memory.peak_rss),
    "peak_live": ("bytes", lambda r: r.memory.peak_live_bytes),
    "ram_share": ("share", lambda r: None if r.device_fit is None else r.device_fit.share),
}
# quantity -> unit -> factor to the report's unit (ms, bytes, fraction)
GATE_UNITS: dict[str, dict[str, float]] = {
    "time": {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3},
    "bytes": {
        "B": 1,
        "KB": 1e3,
        "MB": 1e6,
        "GB": 1e9,
        "KiB": 2**10,
        "MiB": 2**20,
        "GiB": 2**30,
    },
    "share": {"": 1.0, "%": 0.01},
}
GATE_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
}  # fmt: skip
_GATE = re.compile(r"\s*([a-z0-9_]+)\s*(>=|<=|>|<)\s*([0-9.]+(?:[eE][+-]?[0-9]+)?)\s*(\S*)\s*")


@dataclass(frozen=True)
class Gate:
    """``--fail-if METRIC OP NUMBER UNIT``: the run fails when the comparison holds.

    ``threshold`` is in the report's unit for the metric: ms, bytes, or a fraction of the
    device's RAM.
    """

    text: str
    metric: str
    op: str
    threshold: float

    @property
    def unit(self) -> str:
        return {"time": "ms", "bytes": "bytes", "share": "fraction"}[GATE_METRICS[self.metric][0]]


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    op: str
    threshold: float
    unit: str
    value: float | None  # None: this backend does not measure the metric
    passed: bool


def parse_gate(text: str) -> Gate:
    """``'p99>50ms'``, ``'peak_rss>=200MiB'``, ``'ram_share>0.5'`` (or ``>50%``) as a Gate."""
    match = _GATE.fullmatch(text)
    if match is None:
        raise InputError(
            f"bad gate {text!r}: expected METRIC OP NUMBER[UNIT] such as 'p99>50ms', "
            f"with OP one of {', '.join(GATE_OPERATORS)}"
        )
    metric, op, number, unit = match.groups()
    if metric not in GATE_METRICS:
        raise InputError(
            f"bad gate {text!r}: unknown metric {metric!r}; known: {', '.join(GATE_METRICS)}"
        )
    quantity = GATE_METRICS[metric][0]
    units = GATE_UNITS[quantity]
    if unit not in units:
        known = ", ".join(u or "none" for u in units)
        raise InputError(
            f"bad gate {text!r}: {metric} takes a unit among {known}, got {unit or 'none'!r}"
        )
    try:
        value = float(number)
    except ValueError:
        raise InputError(f"bad gate {text!r}: {number!r} is not a number") from None
    return Gate(text=text.strip(), metric=metric, op=op, threshold=value * units[unit])


def check_gates(gates: Sequence[Gate], device: str | None) -> None:
    """Refuse, before any run, a gate that could never be evaluated."""
    if device is None:
        needs = [g.text for g in gates if GATE_METRICS[g.metric][0] == "share"]
        if needs:
            raise InputError(f"gate {needs[0]!r} compares with a device's RAM: give --device")


def evaluate_gates(report: ProfileReport, gates: Sequence[Gate]) -> list[GateResult]:
    """Each gate against the report. A metric the backend does not measure fails its gate:
    a CI check that cannot be made must not pass silently."""
    results = []
    for gate in gates:
        value = GATE_METRICS[gate.metric][1](report)
        failed = value is None or GATE_OPERATORS[gate.op](value, gate.threshold)
        results.append(
            GateResult(
                gate=gate.text,
                metric=gate.metric,
                op=gate.op,
                threshold=gate.threshold,
                unit=gate.unit,
                value=None if value is None else float(value),
                passed=not failed,
            )
        )
    return results


# --- profiling ----------------------------------------------------------------------------


def profile(
    path: str | os.PathLike[str],
    backend: str = "numpy",
    device: str | None = None,
    runs: int = 50,
    warmup: int = 5,
    duration: float | None = None,
    threads: int | None = None,
    batch: int | None = None,
    shapes: Mapping[str, tuple[int, ...]] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    strict: bool = False,
    gates: Sequence[Gate] = (),
) -> ProfileReport:
    """Profile the model at ``path`` on random inputs.

    ``duration`` (seconds), when given, replaces ``runs``: runs go on until it has passed
    (at least one). ``batch`` sets the first dimension of every input not in ``shapes``.
    Per-op time comes from the backend's own instrument (``Session.op_recorder``): the numpy
    runtime's step hook, onnxruntime's profiler; TFLite is timed whole-model. ``gates``
    (see ``parse_gate``) are evaluated on the report into ``report.gates``.
    """
    _check_counts(runs, warmup, duration, batch)
    check_gates(gates, device)
    process = psutil.Process()
    t0 = perf_counter()
    rss_before = process.memory_info().rss
    session = edgerun.load(path, backend=backend, device=device, threads=threads, strict=strict)
    load_s = perf_counter() - t0
    rss_after = process.memory_info().rss
    plan = session.plan
    weights = _weights(plan.graph.initializers, plan.constants) if plan is not None else None

    feeds = random_feeds(session.inputs, _shapes(session.inputs, shapes, batch), seed)
    start = perf_counter()
    session.run(feeds)
    first_s = perf_counter() - start
    feeds = check_feeds(session.inputs, feeds)
    live = None
    if plan is not None:
        live = LiveBytes(plan, feeds)
        plan.run(feeds, hook=lambda step, _seconds, results: live.observe(step, results))
    recorder = session.op_recorder(MAX_TRACED_RUNS) or _WholeModel(session)
    for _ in range(warmup):
        recorder.run(feeds, record=False)

    before = sensors()
    with _peak_rss(process) as peak:
        run_s, run_starts = _timed_runs(recorder, feeds, runs, duration, progress)
    after = sensors()
    record = recorder.finish()

    memory = Memory(
        rss_before_load=rss_before,
        rss_after_load=rss_after,
        peak_rss=peak.value,
        peak_rss_method=peak.method,
        peak_live_bytes=None if live is None else live.peak,
        peak_live_at=None if live is None else live.peak_at,
        weights_bytes=None if weights is None else weights.total,
        weights_mapped_bytes=None if weights is None else weights.mapped,
        weights_resident_after_load=None if weights is None else weights.resident_after_load,
        weights_resident_after_runs=(
            None if weights is None else _resident(weights.mapped_addresses)
        ),
        constants_in_ram_bytes=None if weights is None else weights.in_ram,
    )
    used_batch = _batch_of(feeds)
    ops = op_stats(record, None if live is None else live.output_bytes)
    traced = [(s - t0, d) for s, d in zip(run_starts, run_s, strict=True)][:MAX_TRACED_RUNS]
    report = ProfileReport(
        model=str(path),
        backend=session.backend,
        backend_reason=session.backend_reason,
        inputs={k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
        batch=used_batch,
        load_ms=load_s * 1e3,
        first_inference_ms=first_s * 1e3,
        latency=latency(run_s, used_batch),
        runs_ms=[s * 1e3 for s in run_s],
        ops=ops,
        op_types=group_by_type(ops),
        op_coverage=sum(record.totals_s) / sum(run_s) if record.ops else None,
        memory=memory,
        environment=environment(session.backend, session.threads, before, after, session.providers),
        device_fit=None if device is None else device_fit(device, peak.value),
        phases=[("load", 0.0, load_s), ("first inference", start - t0, first_s)],
        run_spans=traced,
        spans=[
            Span(run, op, traced[run][0] + offset, seconds)
            for run, op, offset, seconds in record.spans
            if run < len(traced)
        ],
    )
    report.gates = evaluate_gates(report, gates)
    return report


def _check_counts(runs: int, warmup: int, duration: float | None, batch: int | None) -> None:
    if duration is None and runs < 1:
        raise InputError(f"runs must be at least 1, got {runs}")
    if duration is not None and duration <= 0:
        raise InputError(f"duration must be positive, got {duration}")
    if warmup < 0:
        raise InputError(f"warmup must be 0 or more, got {warmup}")
    if batch is not None and batch < 1:
        raise InputError(f"batch must be at least 1, got {batch}")


def _shapes(
    specs: list[Any], shapes: Mapping[str, tuple[int, ...]] | None, batch: int | None
) -> dict[str, tuple[int, ...]]:
    chosen = dict(shapes or {})
    unknown = sorted(set(chosen) - {s.name for s in specs})
    if unknown:
        raise InputError(f"--shape names unknown input(s): {', '.join(unknown)}")
    if batch is not None:
        for spec in specs:
            if spec.name not in chosen and spec.shape:
                chosen[spec.name] = (batch, *concrete_shape(spec, None)[1:])
    return chosen


def _batch_of(feeds: Mapping[str, np.ndarray]) -> int:
    first = next(iter(feeds.values()), None)
    return int(first.shape[0]) if first is not None and first.ndim else 1


class _WholeModel:
    """A recorder for backends with no per-op timing: runs the session, records no ops."""

    def __init__(self, session: edgerun.Session) -> None:
        self.session = session

    def run(self, feeds: Mapping[str, np.ndarray], record: bool = True) -> None:
        self.session.run(feeds)

    def finish(self) -> OpRecord:
        return OpRecord([], [], [], [])


def _timed_runs(
    recorder: OpRecorder | _WholeModel,
    feeds: dict[str, np.ndarray],
    runs: int,
    duration: float | None,
    progress: Progress | None,
) -> tuple[list[float], list[float]]:
    """Seconds of each run and when it started (perf_counter)."""
    seconds: list[float] = []
    starts: list[float] = []
    stop = None if duration is None else perf_counter() + duration
    while (len(seconds) < runs) if stop is None else (not seconds or perf_counter() < stop):
        start = perf_counter()
        recorder.run(feeds)
        seconds.append(perf_counter() - start)
        starts.append(start)
        if progress is not None:
            progress(len(seconds), None if stop is not None else runs)
    return seconds, starts


def op_stats(record: OpRecord, output_bytes: list[int | None] | None = None) -> list[OpStat]:
    """The per-op table: the backend's ops in its order; ``output_bytes`` (the numpy
    runtime's, per step) replace what the backend said."""
    everything = sum(record.totals_s) or 1.0
    return [
        OpStat(
            index=i,
            name=op.name,
            op_type=op.op_type,
            calls=record.calls[i],
            total_ms=record.totals_s[i] * 1e3,
            mean_ms=record.totals_s[i] * 1e3 / max(record.calls[i], 1),
            share=record.totals_s[i] / everything,
            output_bytes=op.output_bytes if output_bytes is None else output_bytes[i],
        )
        for i, op in enumerate(record.ops)
    ]


def latency(seconds: list[float], batch: int = 1) -> Latency:
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    p50, p90, p99 = np.percentile(ms, [50, 90, 99])
    per_s = len(ms) / (ms.sum() / 1e3) if ms.sum() > 0 else 0.0
    return Latency(
        runs=len(ms),
        mean_ms=float(ms.mean()),
        std_ms=float(ms.std()),
        min_ms=float(ms.min()),
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
        max_ms=float(ms.max()),
        throughput_per_s=per_s,
        items_per_s=per_s * batch,
    )


def group_by_type(ops: list[OpStat]) -> list[OpTypeStat]:
    groups: dict[str, list[OpStat]] = {}
    for op in ops:
        groups.setdefault(op.op_type, []).append(op)
    rows = [
        OpTypeStat(
            op_type=kind,
            nodes=len(members),
            calls=sum(m.calls for m in members),
            total_ms=sum(m.total_ms for m in members),
            share=sum(m.share for m in members),
        )
        for kind, members in groups.items()
    ]
    return sorted(rows, key=lambda r: -r.total_ms)


# --- the runtime's own memory -------------------------------------------------------------


def _owner(value: np.ndarray) -> np.ndarray | None:
    """The array that owns ``value``'s buffer; None for a view over a foreign buffer (mmap)."""
    while isinstance(value.base, np.ndarray):
        value = value.base
    return value if value.base is None else None


class LiveBytes:
    """Bytes of live activations after each step: feeds and step results until their last
    use, each buffer counted once (a view shares its base's), constants not counted."""

    def __init__(self, plan: Plan, feeds: Mapping[str, np.ndarray]) -> None:
        self.index = {id(s): i for i, s in enumerate(plan.steps)}
        self.constants = {id(o) for v in plan.constants.values() for o in _owners(v)}
        self.live: dict[str, list[np.ndarray]] = {k: _owners(v) for k, v in feeds.items()}
        self.output_bytes: list[int | None] = [None] * len(plan.steps)
        self.peak = self._total()
        self.peak_at: str | None = "inputs"

    def observe(self, step: Step, results: tuple) -> None:
        named = [(n, r) for n, r in zip(step.outputs, results, strict=False) if n]
        self.output_bytes[self.index[id(step)]] = sum(_nbytes(r) for _, r in named)
        for name, value in named:
            self.live[name] = _owners(value)
        total = self._total()  # inputs and outputs of this step are both alive here
        if total > self.peak:
            self.peak, self.peak_at = total, step.node.name or step.node.op_type
        for name in step.free_after:
            self.live.pop(name, None)

    def _total(self) -> int:
        unique = {id(o): o.nbytes for owners in self.live.values() for o in owners}
        return sum(n for key, n in unique.items() if key not in self.constants)


def _owners(value: Any) -> list[np.ndarray]:
    if isinstance(value, list):
        return [o for v in value for o in _owners(v)]
    owner = _owner(value) if isinstance(value, np.ndarray) else None
    return [] if owner is None else [owner]


def _nbytes(value: Any) -> int:
    if isinstance(value, list):
        return sum(_nbytes(v) for v in value)
    return int(getattr(value, "nbytes", 0))


@dataclass(frozen=True)
class _Weights:
    total: int
    mapped: int
    in_ram: int
    mapped_addresses: tuple[int, ...]
    resident_after_load: int | None


def _weights(initializers: Mapping[str, Any], constants: Mapping[str, Any]) -> _Weights:
    arrays = [v for v in initializers.values() if isinstance(v, np.ndarray)]
    mapped = [a for a in arrays if a.nbytes and _owner(a) is None]
    in_ram = {id(o): o.nbytes for v in constants.values() for o in _owners(v)}
    addresses = tuple(a.__array_interface__["data"][0] for a in mapped)
    return _Weights(
        total=sum(a.nbytes for a in arrays),
        mapped=sum(a.nbytes for a in mapped),
        in_ram=sum(in_ram.values()),
        mapped_addresses=addresses,
        resident_after_load=_resident(addresses),
    )


def _resident(addresses: tuple[int, ...]) -> int | None:
    """Resident bytes of the file mappings holding ``addresses`` (Linux smaps), else None."""
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return None
    regions = _smaps_regions(text)
    starts = [r[0] for r in regions]
    hit: dict[int, int] = {}
    for address in addresses:
        i = bisect_right(starts, address) - 1
        if i >= 0 and address < regions[i][1]:
            hit[regions[i][0]] = regions[i][2]
    return sum(hit.values())


def _smaps_regions(text: str) -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of each mapping in /proc/self/smaps, sorted by start."""
    regions: list[tuple[int, int, int]] = []
    start = end = 0
    for line in text.splitlines():
        head = line.split(None, 1)[0] if line else ""
        if "-" in head and not head.endswith(":"):
            a, _, b = head.partition("-")
            start, end = int(a, 16), int(b, 16)
        elif head == "Rss:":
            regions.append((start, end, int(line.split()[1]) * 1024))
    return sorted(regions)


# --- peak RSS -----------------------------------------------------------------------------


@dataclass
class _Peak:
    value: int = 0
    method: str = f"sampled every {RSS_INTERVAL_S * 1e3:g} ms"


@contextmanager
def _peak_rss(process: psutil.Process) -> Iterator[_Peak]:
    """Peak RSS over the block: the kernel's VmHWM when it can be reset at the start
    (Linux), else (and also) psutil sampled from a background thread."""
    peak = _Peak(process.memory_info().rss)
    exact = _reset_hwm()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(RSS_INTERVAL_S):
            peak.value = max(peak.value, process.memory_info().rss)

    thread = threading.Thread(target=sample, name="edgerun-rss", daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak.value = max(peak.value, process.memory_info().rss)
        hwm = _hwm() if exact else None
        if hwm is not None:
            peak.value = max(peak.value, hwm)
            peak.method = "kernel VmHWM, reset when the runs began"


def _reset_hwm() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS (VmHWM)
    except OSError:
        return False
    return _hwm() is not None


def _hwm() -> int | None:
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


# --- environment --------------------------------------------------------------------------


def sensors() -> Sensors:
    """CPU clocks, temperatures and throttling flags, where the OS exposes them."""
    return Sensors(
        cpu_mhz=[_read_number(p) / 1e3 for p in _cpu_paths("cpufreq/scaling_cur_freq")],
        temperatures_c=_temperatures(),
        pi_throttled=_pi_throttled(),
        throttle_count=_throttle_count(),
    )


def _cpu_paths(leaf: str) -> list[str]:
    paths = glob(f"/sys/devices/system/cpu/cpu[0-9]*/{leaf}")
    return sorted(paths, key=lambda p: int(p.split("/")[5][3:]))


def _read_number(path: str) -> float:
    try:
        return float(Path(path).read_text().strip())
    except (OSError, ValueError):
        return float("nan")


def _temperatures() -> dict[str, float]:
    temps = {}
    for zone in sorted(glob("/sys/class/thermal/thermal_zone*")):
        try:
            kind = Path(zone, "type").read_text().strip()
        except OSError:
            continue
        value = _read_number(f"{zone}/temp")
        if value == value:  # not NaN: some zones refuse to read
            temps[f"{Path(zone).name}:{kind}"] = value / 1e3
    return temps


def _pi_throttled() -> int | None:
    tool = shutil.which("vcgencmd")
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "get_throttled"], capture_output=True, text=True, timeout=5)
        return int(out.stdout.strip().partition("=")[2], 16)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def _throttle_count() -> int | None:
    paths = _cpu_paths("thermal_throttle/core_throttle_count")
    return int(sum(_read_number(p) for p in paths)) if paths else None


def throttling(before: Sensors, after: Sensors) -> tuple[bool | None, str]:
    """Whether the CPU throttled during the runs, and what says so."""
    notes = []
    if after.pi_throttled is not None:
        now = after.pi_throttled & 0xF
        new = (after.pi_throttled & ~(before.pi_throttled or 0)) >> 16 & 0xF
        for bit, name in PI_THROTTLE_BITS.items():
            if now >> bit & 1:
                notes.append(f"{name} now")
            elif new >> bit & 1:
                notes.append(f"{name} during the runs")
    if after.throttle_count is not None and before.throttle_count is not None:
        events = after.throttle_count - before.throttle_count
        if events > 0:
            notes.append(f"{events} thermal throttle events")
    if after.pi_throttled is None and after.throttle_count is None:
        return None, "no throttling source on this machine"
    return bool(notes), "; ".join(notes) or "none"


def environment(
    backend: str,
    threads: int | None,
    before: Sensors,
    after: Sensors,
    providers: list[str] | None = None,
) -> Environment:
    from edgerun.doctor import cpu_info

    cpu = cpu_info()
    throttled, detail = throttling(before, after)
    return Environment(
        cpu_model=cpu.model,
        arch=cpu.arch,
        cores=cpu.cores,
        cpu_max_mhz=cpu.max_mhz,
        threads=threads,
        blas_threads=_blas_threads(),
        backend=backend,
        providers=list(providers or []),
        python=platform.python_version(),
        numpy=np.__version__,
        platform=f"{sys.platform} {platform.machine()}",
        before=before,
        after=after,
        throttled=throttled,
        throttle_detail=detail,
    )


def _blas_threads() -> int | None:
    from edgerun import _lazy

    if not _lazy.available("threadpoolctl"):
        return None
    info = _lazy.require("threadpoolctl").threadpool_info()
    blas = [i["num_threads"] for i in info if i.get("user_api") == "blas"]
    return max(blas) if blas else None


def device_fit(device: str, peak_rss: int) -> DeviceFit:
    from edgerun.profiles import load_profile

    profile = load_profile(device)
    ram = profile.memory.ram_mb << 20
    return DeviceFit(
        device=profile.name,
        ram_bytes=ram,
        peak_rss=peak_rss,
        share=peak_rss / ram,
        margin_bytes=ram - peak_rss,
        fits=peak_rss < ram,
    )
