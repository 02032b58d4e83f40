"""onnxruntime as a backend: the profile's execution providers, in its order, that are here.

Providers asked for and missing (not in ``get_available_providers()``, or failing to start,
or dropped by onnxruntime at registration) are reported as misses, never hidden. Which
provider took which node comes from onnxruntime's own partitioning
(``session.record_ep_graph_assignment_info``; older onnxruntime cannot say). Bundles load from the
mapped archive: the model bytes and the external-data members are handed to onnxruntime in
memory (``add_external_initializers_from_files_in_memory``), nothing is written to disk.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgerun import _lazy
from edgerun.backends.base import OpInfo, OpRecord
from edgerun.errors import (
    BackendRunError,
    BackendUnavailableError,
    EdgerunError,
    MissingDependencyError,
)
from edgerun.specs import TensorSpec

if TYPE_CHECKING:
    from edgerun.backends.select import ModelSource
    from edgerun.profiles import DeviceProfile

CPU = "CPUExecutionProvider"
# Providers that do not compute on this machine: never picked without being asked for.
NOT_LOCAL = ("AzureExecutionProvider",)
OPTIMIZATION = ("disable", "basic", "extended", "all")
# onnxruntime's element type names where numpy's differ
_DTYPES = {"float": "float32", "double": "float64"}


@dataclass(frozen=True)
class OrtOptions:
    threads: int | None = None  # None: onnxruntime's default (one per physical core)
    optimization: str = "all"  # graph optimisation level, one of OPTIMIZATION
    fp16: bool = False  # let TensorRT / CoreML / NNAPI compute in float16
    device_id: int = 0  # CUDA / TensorRT device
    openvino_device: str = "CPU"
    cache_dir: str | None = None  # TensorRT engines; default ~/.cache/edgerun/tensorrt

    @classmethod
    def from_profile(cls, profile: DeviceProfile | None, threads: int | None) -> OrtOptions:
        fp16 = profile is not None and (
            profile.deploy.quantization == "fp16" or profile.deploy.activation_dtype == "float16"
        )
        return cls(threads=threads, fp16=fp16)


def provider_options(provider: str, options: OrtOptions) -> dict[str, str]:
    """The option strings each execution provider wants, spelled here and nowhere else."""
    threads = options.threads
    flag = "True" if options.fp16 else "False"
    if provider == "XnnpackExecutionProvider":  # XNNPACK has its own thread pool
        return {"intra_op_num_threads": str(threads or 1)}
    if provider == "CUDAExecutionProvider":
        return {"device_id": str(options.device_id)}
    if provider == "TensorrtExecutionProvider":
        cache = options.cache_dir or str(Path.home() / ".cache" / "edgerun" / "tensorrt")
        return {
            "device_id": str(options.device_id),
            "trt_fp16_enable": flag,
            "trt_engine_cache_enable": "True",  # building engines takes minutes on a Jetson
            "trt_engine_cache_path": cache,
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": cache,
        }
    if provider == "OpenVINOExecutionProvider":
        opts = {"device_type": options.openvino_device}
        if threads is not None:
            opts["num_of_threads"] = str(threads)
        return opts
    if provider == "CoreMLExecutionProvider":
        return {
            "ModelFormat": "MLProgram",
            "MLComputeUnits": "ALL",
            "AllowLowPrecisionAccumulationOnGPU": "1" if options.fp16 else "0",
        }
    if provider == "QNNExecutionProvider":
        backend = "QnnHtp.dll" if sys.platform == "win32" else "libQnnHtp.so"
        return {"backend_path": backend, "htp_performance_mode": "burst"}
    # CPU and NNAPI: the Python binding registers NNAPI with its default flags
    return {}


def session_options(ort: Any, options: OrtOptions, providers: list[str]) -> Any:
    so = ort.SessionOptions()
    if options.optimization not in OPTIMIZATION:
        raise EdgerunError(f"optimization must be one of {', '.join(OPTIMIZATION)}")
    level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    so.graph_optimization_level = level[options.optimization]
    so.log_severity_level = 3  # errors only: misses are reported by edgerun
    if "XnnpackExecutionProvider" in providers:
        # onnxruntime's advice: XNNPACK's pool does the work, the session's would contend
        so.intra_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif options.threads is not None:
        so.intra_op_num_threads = options.threads
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    return so


def require_ort() -> Any:
    return _lazy.require("onnxruntime")


class OnnxRuntimeSession:
    """``providers`` in preference order; empty means every local provider onnxruntime has."""

    def __init__(
        self, source: ModelSource, providers: tuple[str, ...], options: OrtOptions
    ) -> None:
        ort = require_ort()
        self._ort = ort
        self.source = source
        self.options = options
        self.threads = options.threads
        self.misses: list[str] = []  # asked for, not running: "provider: why"
        available = list(ort.get_available_providers())
        wanted = list(providers) or [p for p in available if p not in NOT_LOCAL]
        for p in wanted:
            if p not in available:
                self.misses.append(
                    f"onnxruntime:{p} (not in this onnxruntime, which has {', '.join(available)})"
                )
        self.providers = [p for p in wanted if p in available] or [CPU]
        self._sess = self._start()
        self.registered: list[str] = list(self._sess.get_providers())
        for p in self.providers:
            if p not in self.registered:
                self.misses.append(f"onnxruntime:{p} (onnxruntime did not register it)")
        self.providers = self.registered  # what onnxruntime runs with, CPU included
        self.placement = _placement(self._sess)
        took = [p for p in self.registered if not self.placement or self.placement.get(p)]
        self.name = "onnxruntime:" + "+".join(took or self.registered[:1])
        self.inputs = _specs(self._sess.get_inputs(), source)
        self.outputs = _specs(self._sess.get_outputs(), source)
        self._output_names = [o.name for o in self.outputs]
        self.reason = ""

    def _start(self, profile_prefix: str | None = None) -> Any:
        """Create the session; a provider that fails to start is dropped (a miss)."""
        while True:
            try:
                return self._create(self.providers, profile_prefix)
            except MissingDependencyError:
                raise
            except Exception as exc:  # onnxruntime's own exception types, from C++
                if len(self.providers) == 1:
                    raise BackendUnavailableError(
                        f"onnxruntime cannot load {self.source.path}: {_first_line(exc)}"
                    ) from exc
                failed = self.providers.pop(0)
                self.misses.append(f"onnxruntime:{failed} (failed to start: {_first_line(exc)})")

    def _create(self, providers: list[str], profile_prefix: str | None) -> Any:
        ort = self._ort
        so = session_options(ort, self.options, providers)
        if profile_prefix is not None:
            so.enable_profiling = True
            so.profile_file_prefix = profile_prefix
        opts = [provider_options(p, self.options) for p in providers]
        if self.source.bundle is None:
            return ort.InferenceSession(
                str(self.source.path), so, providers=providers, provider_options=opts
            )
        external = self.source.external_data()
        if external:
            if not hasattr(so, "add_external_initializers_from_files_in_memory"):
                raise MissingDependencyError(
                    f"onnxruntime {ort.__version__} cannot take a bundle's external data from "
                    "memory (SessionOptions.add_external_initializers_from_files_in_memory); "
                    "upgrade it: pip install -U 'edgerun[onnxruntime]'"
                )
            views = list(external.values())
            so.add_external_initializers_from_files_in_memory(
                list(external), views, [v.nbytes for v in views]
            )
        # onnxruntime takes the model as bytes (it parses and keeps its own copy anyway)
        model = bytes(self.source.bundle.model)
        return ort.InferenceSession(model, so, providers=providers, provider_options=opts)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        try:
            results = self._sess.run(self._output_names, feeds)
        except Exception as exc:  # onnxruntime's own exception types, from C++
            raise BackendRunError(
                f"onnxruntime failed running {self.source.path.name}: {_first_line(exc)}"
            ) from exc
        return dict(zip(self._output_names, results, strict=True))

    def op_recorder(self, max_traced_runs: int) -> OrtProfiler:
        return OrtProfiler(self, max_traced_runs)


class OrtProfiler:
    """Per-node time from onnxruntime's own profiler.

    Profiling is fixed when a session is created, so the session is re-created with it on
    and replaces the old one (memory is not doubled); every run through this recorder is
    one ``model_run`` in the profile, which ``finish`` parses and deletes.
    """

    def __init__(self, session: OnnxRuntimeSession, max_traced_runs: int) -> None:
        self.session = session
        self.max_traced_runs = max_traced_runs
        self.folder = tempfile.mkdtemp(prefix="edgerun-ort-profile-")
        session._sess = None  # free the old session before building the profiled one
        session._sess = session._start(os.path.join(self.folder, "profile"))
        self.recorded: list[bool] = []

    def run(self, feeds: Mapping[str, np.ndarray], record: bool = True) -> None:
        self.session._sess.run(None, feeds)
        self.recorded.append(record)

    def finish(self) -> OpRecord:
        try:
            path = self.session._sess.end_profiling()
            with open(path, encoding="utf-8") as f:
                events = json.load(f)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        return parse_profile(events, self.recorded, self.max_traced_runs)


def parse_profile(
    events: list[dict[str, Any]], recorded: list[bool], max_traced_runs: int
) -> OpRecord:
    """onnxruntime's profiling JSON as an OpRecord: "<node>_kernel_time" events, grouped by
    the "model_run" event that follows them; runs not ``recorded`` are left out."""
    record = OpRecord([], [], [], [])
    index: dict[str, int] = {}
    pending: list[dict[str, Any]] = []
    run = kept = 0
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            pending.append(event)
        elif event.get("cat") == "Session" and name == "model_run":
            if run < len(recorded) and recorded[run]:
                _add_run(record, index, pending, event, kept, kept < max_traced_runs)
                kept += 1
            pending, run = [], run + 1
    return record


def _add_run(
    record: OpRecord,
    index: dict[str, int],
    nodes: list[dict[str, Any]],
    model_run: dict[str, Any],
    run: int,
    traced: bool,
) -> None:
    for event in nodes:
        node = event["name"].removesuffix("_kernel_time")
        args = event.get("args", {})
        if node not in index:
            index[node] = len(record.ops)
            size = args.get("output_size")
            record.ops.append(
                OpInfo(
                    node,
                    args.get("op_name", "?"),
                    args.get("provider"),
                    int(size) if size is not None else None,
                )
            )
            record.totals_s.append(0.0)
            record.calls.append(0)
        i = index[node]
        seconds = event["dur"] / 1e6
        record.totals_s[i] += seconds
        record.calls[i] += 1
        if traced:
            record.spans.append((run, i, (event["ts"] - model_run["ts"]) / 1e6, seconds))


def _placement(sess: Any) -> dict[str, int] | None:
    """Nodes per provider from onnxruntime's partitioning; None where it cannot say."""
    try:
        subgraphs = sess.get_provider_graph_assignment_info()
    except Exception:  # older onnxruntime, or recording not enabled
        return None
    counts: dict[str, int] = {}
    for subgraph in subgraphs:
        counts[subgraph.ep_name] = counts.get(subgraph.ep_name, 0) + len(subgraph.get_nodes())
    return counts


def _specs(args: list[Any], source: ModelSource) -> list[TensorSpec]:
    quant = {}
    if source.bundle is not None:
        manifest = source.bundle.manifest
        quant = {s.name: s.quantization for s in (*manifest.inputs, *manifest.outputs)}
    return [TensorSpec(a.name, _shape(a.shape), _dtype(a.type), quant.get(a.name)) for a in args]


def _dtype(ort_type: str) -> str:
    if ort_type.startswith("tensor(") and ort_type.endswith(")"):
        inner = ort_type[len("tensor(") : -1]
        return _DTYPES.get(inner, inner)
    return ort_type  # sequences and maps: no element dtype to check


def _shape(dims: Any) -> tuple[int | str | None, ...] | None:
    if dims is None:
        return None
    return tuple(d if isinstance(d, int | str) else None for d in dims)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
