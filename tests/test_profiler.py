"""The profiler on the tiny CNN: a report that adds up, and files other tools can read.

No test asserts on wall time: only on structure, order and memory accounting.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import edgerun
from edgerun.errors import InputError
from edgerun.profiler import (
    SCHEMA_VERSION,
    Gate,
    LiveBytes,
    ProfileReport,
    Sensors,
    evaluate_gates,
    parse_gate,
    profile,
    report_schema,
    throttling,
    validate_report,
)


@pytest.fixture(scope="module")
def report(tiny_cnn_path: Path) -> ProfileReport:
    return profile(tiny_cnn_path, runs=5, warmup=1, device="rpi-zero-2w")


def test_the_per_op_table_covers_every_plan_step(
    report: ProfileReport, tiny_cnn_path: Path
) -> None:
    plan = edgerun.load(tiny_cnn_path, backend="numpy").plan
    assert plan is not None
    steps = plan.steps
    assert [op.name for op in report.ops] == [s.node.name for s in steps]
    assert [op.op_type for op in report.ops] == [s.node.op_type for s in steps]
    assert all(op.calls == report.latency.runs for op in report.ops)
    assert sum(op.share for op in report.ops) == pytest.approx(1.0)
    assert sum(t.share for t in report.op_types) == pytest.approx(1.0)
    assert sum(t.nodes for t in report.op_types) == len(report.ops)
    assert 0 < report.op_coverage <= 1


def test_output_bytes_are_the_step_results(report: ProfileReport) -> None:
    by_name = {op.name: op.output_bytes for op in report.ops}
    assert by_name["conv1"] == 1 * 16 * 32 * 32 * 4
    assert by_name["softmax"] == 10 * 4


def test_latency_percentiles_are_ordered(report: ProfileReport) -> None:
    lat = report.latency
    assert lat.runs == 5 == len(report.runs_ms)
    assert 0 < lat.min_ms <= lat.p50_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms
    assert lat.min_ms <= lat.mean_ms <= lat.max_ms
    assert lat.throughput_per_s > 0 and lat.items_per_s == lat.throughput_per_s
    assert report.load_ms > 0 and report.first_inference_ms > 0


def test_memory(report: ProfileReport) -> None:
    mem = report.memory
    assert mem.peak_live_bytes is not None and mem.peak_live_bytes > 0
    # relu1's output (conv1 -> bn1 -> relu1 run as one fused step: 1x16x32x32 float32) and
    # pool1's (1x16x16x16) are alive together
    assert mem.peak_live_bytes >= 16 * 32 * 32 * 4 + 16 * 16 * 16 * 4
    assert mem.peak_rss >= mem.rss_before_load > 0
    # aligned tensors are views over the mmap; misaligned raw_data is copied once at load
    assert mem.weights_bytes >= mem.weights_mapped_bytes > 0
    if mem.weights_resident_after_runs is not None:  # Linux
        assert mem.weights_resident_after_runs >= mem.weights_mapped_bytes


def test_the_fit_check_compares_peak_rss_with_the_boards_ram(report: ProfileReport) -> None:
    # This process holds the whole test suite (torch, tensorflow...), so only the arithmetic
    # is checked here; a fresh process's verdict is checked below.
    fit = report.device_fit
    assert fit is not None and fit.device == "rpi-zero-2w"
    assert fit.ram_bytes == 512 * 2**20 and fit.margin_bytes == fit.ram_bytes - fit.peak_rss
    assert fit.fits == (fit.margin_bytes >= 0) and fit.share == fit.peak_rss / fit.ram_bytes


def test_a_tiny_model_fits_a_pi_zero_in_a_fresh_process(tiny_cnn_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgerun.cli",
            "profile",
            str(tiny_cnn_path),
            "--device",
            "rpi-zero-2w",
            "--runs",
            "3",
            "--warmup",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    fit = json.loads(result.stdout)["device_fit"]
    assert fit["fits"] and 0 < fit["share"] < 1


@pytest.mark.parametrize("which", ["report", "ort_report"])
def test_json_matches_the_documented_schema(which: str, request: pytest.FixtureRequest) -> None:
    report = request.getfixturevalue(which)
    report.gates = evaluate_gates(report, [parse_gate("p99>1s")])  # a gate row checked too
    data = json.loads(json.dumps(report.to_json()))
    assert data["schema_version"] == SCHEMA_VERSION
    assert validate_report(data) == []
    assert "spans" not in data and "phases" not in data


def test_the_schema_is_read_from_the_docs_and_catches_departures(report: ProfileReport) -> None:
    schema = report_schema()
    assert schema["latency"].keys["p99_ms"].type == "number"
    assert schema["environment"].keys["before"].keys["temperatures_c"].type == "map[number]"
    assert schema["device_fit"].type == "object?"
    good = json.loads(json.dumps(report.to_json()))
    bad = json.loads(json.dumps(good))
    del bad["latency"]["p99_ms"]
    bad["memory"]["unexpected"] = 1
    bad["ops"][1]["calls"] = "5"
    bad["inputs"]["image"]["shape"] = [1, 3.5]
    bad["environment"]["throttled"] = "no"
    bad["load_ms"] = None
    bad["device_fit"] = None  # allowed
    assert sorted(validate_report(bad)) == [
        "environment.throttled: expected bool, got 'no'",
        "inputs['image'].shape[1]: expected int, got 3.5",
        "latency.p99_ms: missing",
        "load_ms: expected number, got None",
        "memory.unexpected: not in the schema",
        "ops[1].calls: expected int, got '5'",
    ]


def test_csv_has_a_header_and_one_row_per_op(report: ProfileReport, tmp_path: Path) -> None:
    path = tmp_path / "ops.csv"
    report.write_csv(path)
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [op.name for op in report.ops]
    assert {"op_type", "calls", "total_ms", "share", "output_bytes"} <= set(rows[0])


@pytest.fixture(scope="module")
def ort_report(tiny_cnn_path: Path) -> ProfileReport:
    return profile(tiny_cnn_path, backend="onnxruntime", runs=4, warmup=2)


def test_onnxruntime_ops_come_from_its_own_profiler(ort_report: ProfileReport) -> None:
    assert ort_report.backend == "onnxruntime:CPUExecutionProvider"
    assert ort_report.environment.providers == ["CPUExecutionProvider"]
    assert ort_report.ops and all(op.calls == 4 for op in ort_report.ops)  # warm-ups left out
    assert {"Conv", "Gemm", "Softmax"} <= {op.op_type for op in ort_report.ops}
    assert sum(op.share for op in ort_report.ops) == pytest.approx(1.0)
    assert ort_report.op_coverage is not None and 0 < ort_report.op_coverage <= 1
    softmax = next(op for op in ort_report.ops if op.op_type == "Softmax")
    assert softmax.output_bytes == 10 * 4  # onnxruntime's own output_size
    mem = ort_report.memory  # the numpy runtime's own accounting does not apply
    assert mem.peak_live_bytes is None and mem.weights_bytes is None and mem.peak_rss > 0


@pytest.mark.parametrize("which", ["report", "ort_report"])
def test_trace_is_chrome_json_with_ops_inside_their_runs(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    report = request.getfixturevalue(which)
    path = tmp_path / "trace.json"
    report.write_chrome_trace(path)
    events = json.loads(path.read_text())["traceEvents"]
    complete = [e for e in events if e["ph"] == "X"]
    assert all({"name", "ts", "dur", "pid", "tid"} <= set(e) for e in complete)
    runs = {e["args"]["run"]: e for e in complete if e["cat"] == "run"}
    ops = [e for e in complete if e["cat"] not in ("run", "phase")]
    assert len(runs) == report.latency.runs
    assert len(ops) == report.latency.runs * len(report.ops)
    for op in ops:
        run = runs[op["args"]["run"]]
        assert run["ts"] <= op["ts"] and op["ts"] + op["dur"] <= run["ts"] + run["dur"]
    phases = [e["name"] for e in complete if e["cat"] == "phase"]
    assert phases == ["load", "first inference"]
    if report.backend == "numpy":  # one step after another, in plan order, within each run
        for run in runs:
            steps = sorted((e for e in ops if e["args"]["run"] == run), key=lambda e: e["ts"])
            assert [e["name"] for e in steps] == [op.name for op in report.ops]
            ends = [e["ts"] + e["dur"] for e in steps]
            assert all(end <= nxt["ts"] for end, nxt in zip(ends, steps[1:], strict=False))


def test_duration_replaces_runs(tiny_cnn_path: Path) -> None:
    short = profile(tiny_cnn_path, runs=1000, warmup=0, duration=0.05)
    assert short.latency.runs >= 1 and len(short.runs_ms) == short.latency.runs


def test_batch_and_shapes_set_the_inputs(tiny_cnn_path: Path) -> None:
    batched = profile(tiny_cnn_path, runs=2, warmup=0, batch=3)
    assert batched.inputs["image"]["shape"] == [3, 3, 32, 32] and batched.batch == 3
    assert batched.latency.items_per_s == pytest.approx(3 * batched.latency.throughput_per_s)
    shaped = profile(tiny_cnn_path, runs=1, warmup=0, shapes={"image": (2, 3, 32, 32)})
    assert shaped.batch == 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"runs": 0}, "runs must be at least 1"),
        ({"warmup": -1}, "warmup"),
        ({"duration": 0}, "duration"),
        ({"shapes": {"nope": (1,)}}, "unknown input"),
    ],
)
def test_bad_arguments_are_user_errors(tiny_cnn_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        profile(tiny_cnn_path, **kwargs)


class _Step:
    """Just what LiveBytes reads from a plan step."""

    def __init__(self, name: str, outputs: tuple[str, ...], free_after: tuple[str, ...]) -> None:
        self.node = type("Node", (), {"name": name, "op_type": "Op"})()
        self.outputs = outputs
        self.free_after = free_after


def test_live_bytes_count_a_view_once_and_drop_dead_values() -> None:
    a_step, b_step = _Step("a", ("a",), ("x",)), _Step("b", ("b",), ("a",))
    plan = type("Plan", (), {"steps": [a_step, b_step], "constants": {"w": np.ones(1000)}})()
    x = np.zeros(100, np.float32)
    live = LiveBytes(plan, {"x": x})  # type: ignore[arg-type]
    assert live.peak == 400
    a = np.zeros(200, np.float32)
    live.observe(a_step, (a,))  # type: ignore[arg-type]
    assert live.peak == 1200 and live.peak_at == "a"
    live.observe(b_step, (a.reshape(10, 20),))  # type: ignore[arg-type]  # a view of a
    assert live.peak == 1200 and live.output_bytes == [800, 800]
    assert live._total() == 800  # x died after a, a after b; b shares a's buffer


def test_pi_throttle_flags() -> None:
    def pi(flags: int | None, count: int | None = None) -> Sensors:
        return Sensors([], {}, flags, count)

    assert throttling(pi(None), pi(None)) == (None, "no throttling source on this machine")
    assert throttling(pi(0x0), pi(0x0)) == (False, "none")
    assert throttling(pi(0x0), pi(0x40000)) == (True, "throttled during the runs")
    assert throttling(pi(0x40000), pi(0x40000)) == (False, "none")  # before the runs
    assert throttling(pi(0x0), pi(0x50005))[1] == "under-voltage now; throttled now"
    assert throttling(pi(None, 3), pi(None, 5)) == (True, "2 thermal throttle events")


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold"),
    [
        ("p99>50ms", "p99", ">", 50.0),
        (" mean >= 1.5 s ", "mean", ">=", 1500.0),
        ("max<250us", "max", "<", 0.25),
        ("first_inference<=2e3ms", "first_inference", "<=", 2000.0),
        ("load>1s", "load", ">", 1000.0),
        ("peak_rss>200MB", "peak_rss", ">", 200e6),
        ("peak_rss>200MiB", "peak_rss", ">", 200 * 2**20),
        ("peak_live>=512KiB", "peak_live", ">=", 512 * 1024),
        ("peak_rss>1GB", "peak_rss", ">", 1e9),
        ("ram_share>0.5", "ram_share", ">", 0.5),
        ("ram_share>50%", "ram_share", ">", 0.5),
    ],
)
def test_gates_parse_into_the_reports_units(
    text: str, metric: str, op: str, threshold: float
) -> None:
    gate = parse_gate(text)
    assert (gate.metric, gate.op) == (metric, op)
    assert gate.threshold == pytest.approx(threshold)
    assert gate.text == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p99=50ms", "expected METRIC OP NUMBER"),
        ("p99>>50ms", "expected METRIC OP NUMBER"),
        ("p99>", "expected METRIC OP NUMBER"),
        ("p95>50ms", "unknown metric 'p95'"),
        ("p99>50", "p99 takes a unit"),
        ("p99>50MB", "p99 takes a unit"),
        ("peak_rss>200", "peak_rss takes a unit"),
        ("peak_rss>200ms", "peak_rss takes a unit"),
        ("ram_share>0.5MB", "ram_share takes a unit"),
        ("p99>1.2.3ms", "not a number"),
    ],
)
def test_a_malformed_gate_is_a_user_error(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_gate(text)


def test_gates_compare_the_reports_own_figures(report: ProfileReport) -> None:
    p99, rss = report.latency.p99_ms, report.memory.peak_rss
    share = report.device_fit.share if report.device_fit else 0.0
    gates = [
        Gate(f"p99>{p99 * 2}ms", "p99", ">", p99 * 2),  # passes
        Gate(f"p99>{p99 / 2}ms", "p99", ">", p99 / 2),  # fails
        Gate(f"p99>={p99}ms", "p99", ">=", p99),  # fails: the bound itself
        Gate(f"peak_rss<{rss}B", "peak_rss", "<", rss),  # passes
        Gate(f"peak_rss<={rss}B", "peak_rss", "<=", rss),  # fails
        Gate(f"ram_share>{share}", "ram_share", ">", share),  # passes
    ]
    results = evaluate_gates(report, gates)
    assert [r.passed for r in results] == [True, False, False, True, False, True]
    assert [r.value for r in results] == [p99, p99, p99, rss, rss, share]
    assert [r.unit for r in results] == ["ms", "ms", "ms", "bytes", "bytes", "fraction"]


def test_a_gate_the_backend_cannot_measure_fails(ort_report: ProfileReport) -> None:
    (result,) = evaluate_gates(ort_report, [parse_gate("peak_live>1GB")])
    assert result.value is None and not result.passed


def test_a_ram_share_gate_needs_a_device(tiny_cnn_path: Path) -> None:
    with pytest.raises(InputError, match="give --device"):
        profile(tiny_cnn_path, runs=1, gates=[parse_gate("ram_share>0.5")])


def test_gates_are_in_the_json_report(tiny_cnn_path: Path) -> None:
    gated = profile(tiny_cnn_path, runs=2, warmup=0, gates=[parse_gate("p99>1000s")])
    (entry,) = json.loads(json.dumps(gated.to_json()))["gates"]
    assert entry == {
        "gate": "p99>1000s", "metric": "p99", "op": ">", "threshold": 1e6, "unit": "ms",
        "value": gated.latency.p99_ms, "passed": True,
    }  # fmt: skip
