"""``edgerun doctor``: what this machine is, and what edgerun can use on it.

Everything here must work on a bare board (Python, numpy, psutil), so optional packages are
probed through ``edgerun._lazy`` inside ``run_doctor`` and a missing or broken one is a row
in the report, never a crash. CPU features are read in the profile vocabulary so that the
machine can be matched against the device profiles.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import importlib.metadata
import os
import platform
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType

import numpy as np
import psutil

from edgerun._lazy import EXTRAS, available, require
from edgerun.backends.tflite import DELEGATE_LIBRARIES  # delegate -> its shared library
from edgerun.errors import EdgerunError, MissingDependencyError
from edgerun.profiles import DeviceProfile, list_profiles

ARM_FEATURES = ("neon", "asimd", "fp16", "dotprod", "i8mm", "sve", "sve2", "bf16")
# x86 flags that /proc/cpuinfo spells as profiles do
X86_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
)  # fmt: skip
# The ISA features device profiles may list; reports keep this order.
VOCABULARY = (*ARM_FEATURES, *X86_FLAGS, "amx")
# /proc/cpuinfo token ("Features" on ARM, "flags" on x86) -> profile features it implies.
# ARMv7's vfpv4 has no profile feature of its own: only its neon matters to the kernels.
CPUINFO_FEATURES: dict[str, tuple[str, ...]] = {
    "neon": ("neon",),
    "asimd": ("neon", "asimd"),
    "fphp": ("fp16",),
    "asimdhp": ("fp16",),
    "asimddp": ("dotprod",),
    "i8mm": ("i8mm",),
    "sve": ("sve",),
    "sve2": ("sve2",),
    "bf16": ("bf16",),
    "amx_tile": ("amx",),
    **{flag: (flag,) for flag in X86_FLAGS},
}
# macOS has no /proc/cpuinfo; sysctl reports features as "hw.optional.NAME: 1".
SYSCTL_FEATURES: dict[str, tuple[str, ...]] = {
    "hw.optional.neon": ("neon", "asimd"),
    "hw.optional.arm.FEAT_FP16": ("fp16",),
    "hw.optional.arm.FEAT_DotProd": ("dotprod",),
    "hw.optional.arm.FEAT_I8MM": ("i8mm",),
    "hw.optional.arm.FEAT_BF16": ("bf16",),
    "hw.optional.sse4_2": ("sse4_2",),
    "hw.optional.avx1_0": ("avx",),
    "hw.optional.avx2_0": ("avx2",),
    "hw.optional.fma": ("fma",),
    "hw.optional.avx512f": ("avx512f",),
    "hw.optional.avx512bw": ("avx512bw",),
    "hw.optional.avx512vnni": ("avx512_vnni",),
}
# Where vendor images put delegate libraries without registering them with ldconfig.
LIBRARY_DIRS = (
    "/usr/lib",
    "/usr/local/lib",
    "/lib",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/arm-linux-gnueabihf",
    "/usr/lib/x86_64-linux-gnu",
    "/vendor/lib64",
    "/vendor/lib",
)
# package -> distributions that install it (GPU and vendor builds share the module name)
DISTRIBUTIONS = {
    "onnx": ("onnx", "onnx-weekly"),
    "onnxruntime": (
        "onnxruntime",
        "onnxruntime-gpu",
        "onnxruntime-openvino",
        "onnxruntime-qnn",
        "onnxruntime-directml",
    ),
    "ai_edge_litert": ("ai-edge-litert", "ai-edge-litert-nightly"),
    "tflite_runtime": ("tflite-runtime", "tflite-runtime-nightly"),
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-aarch64", "tensorflow-macos"),
}


@dataclass(frozen=True)
class CpuInfo:
    arch: str
    model: str
    cores: int
    max_mhz: float | None
    features: tuple[str, ...]  # in VOCABULARY


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    version: str | None
    detail: str  # providers / delegates when available, the reason when not


@dataclass(frozen=True)
class BackendCheck:
    backend: str  # "numpy", "onnxruntime:<provider>", "tflite:<delegate>"
    ran: bool  # ran the probe model on it and got the right answer
    detail: str  # the error and time when it ran, else why not


@dataclass(frozen=True)
class DoctorReport:
    cpu: CpuInfo
    ram_mb: int
    python: str
    platform: str
    numpy: str
    blas: list[dict]
    backends: list[BackendInfo]
    checks: list[BackendCheck]
    closest_profile: str | None
    closest_reason: str

    def to_json(self) -> dict:
        return asdict(self)


# --- CPU ------------------------------------------------------------------------------------


def normalise_arch(machine: str, pointer_bits: int | None = None) -> str:
    """The profile spelling of ``platform.machine()``.

    A 64-bit kernel under a 32-bit userland (Raspberry Pi OS 32-bit on a Pi 4 or 5) reports
    aarch64, but only armv7l wheels run there, so the interpreter's pointer size decides.
    """
    bits = pointer_bits or struct.calcsize("P") * 8
    name = machine.lower()
    if name in ("aarch64", "arm64", "armv8l", "armv8b", "armv7l", "armv7"):
        return "aarch64" if bits == 64 and name in ("aarch64", "arm64") else "armv7l"
    if name in ("x86_64", "amd64", "x64"):
        return "x86_64"
    return name


def parse_cpuinfo(text: str, machine: str | None = None) -> CpuInfo:
    """Read a Linux ``/proc/cpuinfo``; without ``machine`` the arch is told from the text."""
    fields = _fields(text)
    tokens = _common_tokens(v for k, v in fields if k in ("flags", "Features"))
    arch = normalise_arch(machine) if machine else _guess_arch(fields, tokens)
    # Under qemu user emulation /proc/cpuinfo is the host's: keep only this arch's features.
    own = ARM_FEATURES if arch in ("aarch64", "armv7l") else (*X86_FLAGS, "amx")
    return CpuInfo(
        arch=arch,
        model=_first(fields, ("model name", "Model", "Hardware", "Processor")) or "",
        cores=sum(k == "processor" for k, _ in fields) or 1,
        max_mhz=None,
        features=tuple(f for f in _features(tokens, CPUINFO_FEATURES) if f in own),
    )


def parse_sysctl(text: str, machine: str) -> CpuInfo:
    """Read ``sysctl hw machdep.cpu`` output (macOS)."""
    fields = _fields(text)
    enabled = {k for k, v in fields if v == "1"}
    hz = _first(fields, ("hw.cpufrequency_max",))
    return CpuInfo(
        arch=normalise_arch(machine),
        model=_first(fields, ("machdep.cpu.brand_string",)) or "",
        cores=int(_first(fields, ("hw.ncpu",)) or 1),
        max_mhz=int(hz) / 1e6 if hz and hz.isdigit() else None,
        features=_features(enabled, SYSCTL_FEATURES),
    )


def cpu_info() -> CpuInfo:
    """This machine's CPU; features stay empty where the OS does not say (Windows)."""
    machine = platform.machine()
    text = _read_text("/proc/cpuinfo")
    if text:
        info = parse_cpuinfo(text, machine)
    elif sys.platform == "darwin":
        info = parse_sysctl(_run_sysctl(), machine)
    else:
        info = CpuInfo(normalise_arch(machine), platform.processor(), 1, None, ())
    return replace(
        info,
        model=info.model or platform.processor() or machine,
        cores=os.cpu_count() or info.cores,
        max_mhz=info.max_mhz or _max_mhz(),
    )


def _fields(text: str) -> list[tuple[str, str]]:
    pairs = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            pairs.append((key.strip(), value.strip()))
    return pairs


def _first(fields: list[tuple[str, str]], keys: tuple[str, ...]) -> str | None:
    for wanted in keys:
        for key, value in fields:
            if key == wanted and value:
                return value
    return None


def _common_tokens(lines: Iterable[str]) -> set[str]:
    # A feature counts only if every core has it: a thread may run on any of them.
    sets = [set(line.split()) for line in lines]
    return set.intersection(*sets) if sets else set()


def _features(tokens: set[str], table: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    found = {feature for token in tokens for feature in table.get(token, ())}
    return tuple(f for f in VOCABULARY if f in found)


def _guess_arch(fields: list[tuple[str, str]], tokens: set[str]) -> str:
    if any(k == "flags" for k, _ in fields):
        return "x86_64" if "lm" in tokens else "i686"
    # A 64-bit ARM kernel lists "fp asimd"; a 32-bit one "vfp neon" even on an ARMv8 core.
    return "aarch64" if tokens & {"fp", "asimd"} else "armv7l"


def _read_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _run_sysctl() -> str:
    try:
        return subprocess.run(
            ["sysctl", "hw", "machdep.cpu"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _max_mhz() -> float | None:
    khz = _read_text("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    if khz.isdigit():
        return int(khz) / 1000
    try:
        freq = psutil.cpu_freq()
    except (OSError, NotImplementedError, RuntimeError):
        return None
    # VMs report max 0; the current clock is then the best estimate there is.
    return (freq.max or freq.current or None) if freq else None


# --- closest profile ------------------------------------------------------------------------


def closest_profile(
    cpu: CpuInfo, ram_mb: int, profiles: Iterable[DeviceProfile]
) -> tuple[str | None, str]:
    """The profile this machine most resembles, and why; None when no profile has its arch.

    Feature overlap ranks first because it decides which kernels and quantization schemes
    pay off; cores, clock and RAM only break ties between boards with the same ISA.
    """
    profiles = list(profiles)
    same_arch = [p for p in profiles if p.cpu.arch == cpu.arch]
    if not profiles:
        return None, "no device profiles installed"
    if not same_arch:
        known = ", ".join(sorted({p.cpu.arch for p in profiles}))
        return None, f"no device profile for {cpu.arch} (profiles cover {known})"
    best = min(same_arch, key=lambda p: (*_distance(cpu, ram_mb, p), p.name))
    return best.name, _reason(cpu, ram_mb, best)


def _distance(cpu: CpuInfo, ram_mb: int, p: DeviceProfile) -> tuple[float, ...]:
    clock = abs(cpu.max_mhz / 1000 - p.cpu.clock_ghz) if cpu.max_mhz else 0.0
    ram = abs(ram_mb - p.memory.ram_mb) if ram_mb else 0
    return -_jaccard(cpu.features, p.cpu.features), abs(cpu.cores - p.cpu.cores), clock, ram


def _jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = {x.lower() for x in a}, {x.lower() for x in b}
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def _reason(cpu: CpuInfo, ram_mb: int, p: DeviceProfile) -> str:
    wanted = {f.lower() for f in p.cpu.features}
    shared = [f for f in cpu.features if f in wanted]
    parts = [
        f"same arch {cpu.arch}",
        f"{len(shared)}/{len(wanted | set(cpu.features))} ISA features shared"
        + (f" ({', '.join(shared)})" if shared else ""),
    ]
    if missing := sorted(wanted - set(cpu.features)):
        parts.append(f"this CPU lacks {', '.join(missing)}")
    parts.append(f"{cpu.cores} cores vs {p.cpu.cores}")
    if cpu.max_mhz:
        parts.append(f"{cpu.max_mhz / 1000:.2f} GHz vs {p.cpu.clock_ghz:g}")
    parts.append(f"{ram_mb} MB RAM vs {p.memory.ram_mb}")
    return "; ".join(parts)


# --- BLAS and backends ----------------------------------------------------------------------


def blas_info() -> list[dict]:
    """The BLAS numpy computes with: the thing that sets the numpy backend's speed."""
    if available("threadpoolctl"):
        with contextlib.suppress(Exception):
            info = require("threadpoolctl").threadpool_info()
            if loaded := [lib for lib in info if lib.get("user_api") == "blas"]:
                return loaded
    return _numpy_build_blas()


def _numpy_build_blas() -> list[dict]:
    try:  # mode="dicts" is numpy >= 1.26's meson build; older ones only print
        config = np.show_config(mode="dicts")
    except TypeError:
        return []
    blas = (config or {}).get("Build Dependencies", {}).get("blas")
    return [{"user_api": "blas", **blas}] if blas else []


def find_delegate_libraries() -> dict[str, str]:
    """TFLite external delegates whose library this machine has: name -> path or soname."""
    found = {}
    for name, library in DELEGATE_LIBRARIES.items():
        if path := _find_library(library):
            found[name] = path
    return found


def _find_library(filename: str) -> str | None:
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d]
    for folder in [*dirs, *LIBRARY_DIRS]:
        if (Path(folder) / filename).is_file():
            return str(Path(folder) / filename)
    return ctypes.util.find_library(filename.removeprefix("lib").split(".so")[0])


def probe_backends() -> list[BackendInfo]:
    """One row per optional package; importing is the only honest test that one works."""
    probes: list[tuple[str, str, Callable[[ModuleType], str]]] = [
        ("onnx", "onnx", _onnx_detail),
        ("onnxruntime", "onnxruntime", _ort_detail),
        ("ai_edge_litert", "ai_edge_litert.interpreter", _tflite_detail),
        ("tflite_runtime", "tflite_runtime.interpreter", _tflite_detail),
        ("torch", "torch", _torch_detail),
        ("tensorflow", "tensorflow", _tf_detail),
    ]
    return [_probe(name, module, detail) for name, module, detail in probes]


def _probe(name: str, module: str, detail: Callable[[ModuleType], str]) -> BackendInfo:
    version = _installed_version(name)
    if not available(name):
        return BackendInfo(
            name, False, version, f"not installed: pip install 'edgerun[{EXTRAS[name]}]'"
        )
    try:
        # Some packages print on import; --json output must stay one document on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            loaded = require(module)
            text = detail(loaded)
    except Exception as exc:
        return BackendInfo(name, False, version, f"import failed: {_why(exc)}")
    top = sys.modules.get(name)
    found = getattr(top, "__version__", None)
    return BackendInfo(name, True, str(found) if found else version, text)


def _installed_version(name: str) -> str | None:
    for dist in DISTRIBUTIONS[name]:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            return importlib.metadata.version(dist)
    return None


def _why(exc: Exception) -> str:
    # require() wraps ImportError as "not installed"; the package is installed, so show why.
    cause = exc.__cause__ if isinstance(exc, MissingDependencyError) and exc.__cause__ else exc
    return f"{type(cause).__name__}: {cause}"


def _onnx_detail(onnx: ModuleType) -> str:
    return f"opset {onnx.defs.onnx_opset_version()}, IR version {onnx.IR_VERSION}"


def _ort_detail(ort: ModuleType) -> str:
    return "providers: " + ", ".join(ort.get_available_providers())


def _tflite_detail(interpreter: ModuleType) -> str:
    if not hasattr(interpreter, "Interpreter"):
        raise ImportError(f"{interpreter.__name__} has no Interpreter")
    delegates = ["xnnpack (built in)"]
    delegates += [f"{name} ({lib})" for name, lib in find_delegate_libraries().items()]
    return "delegates: " + ", ".join(delegates)


def _torch_detail(torch: ModuleType) -> str:
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return "devices: " + ", ".join(devices)


def _tf_detail(tf: ModuleType) -> str:
    kinds = sorted({d.device_type for d in tf.config.list_physical_devices()})
    return "devices: " + ", ".join(kinds)


# --- running the probe model ---------------------------------------------------------------


def check_backends() -> list[BackendCheck]:
    """Run a tiny model (``backends.probe``) on the numpy runtime, on every local onnxruntime
    execution provider and on every TFLite delegate found: what ran, not what imported."""
    from edgerun.backends import probe

    with tempfile.TemporaryDirectory(prefix="edgerun-doctor-") as folder:
        onnx_path, tflite_path = Path(folder, "probe.onnx"), Path(folder, "probe.tflite")
        onnx_path.write_bytes(probe.onnx_model())
        tflite_path.write_bytes(probe.TFLITE)
        checks = [_check("numpy", lambda: _numpy_session(onnx_path))]
        if available("onnxruntime"):
            checks += [_check(f"onnxruntime:{p}", _ort_maker(onnx_path, p)) for p in _providers()]
        if available("ai_edge_litert") or available("tflite_runtime"):
            delegates = ["xnnpack", *find_delegate_libraries()]
            checks += [_check(f"tflite:{d}", _tflite_maker(tflite_path, d)) for d in delegates]
    return checks


def _check(name: str, make: Callable[[], object]) -> BackendCheck:
    from time import perf_counter

    from edgerun.backends import probe

    try:
        with contextlib.redirect_stdout(sys.stderr):
            session = make()
            feeds = {session.inputs[0].name: probe.INPUT}  # type: ignore[attr-defined]
            start = perf_counter()
            (out,) = session.run(feeds).values()  # type: ignore[attr-defined]
            ms = (perf_counter() - start) * 1e3
    except Exception as exc:  # a broken install is a row of the report, never a crash
        return BackendCheck(name, False, _why(exc))
    error = float(np.max(np.abs(np.asarray(out) - probe.expected())))
    ok = error <= 1e-5
    verdict = "ran the probe model" if ok else "WRONG ANSWER from the probe model"
    return BackendCheck(name, ok, f"{verdict}: max error {error:.1e}, {ms:.2f} ms")


def _numpy_session(path: Path) -> object:
    import edgerun

    return edgerun.load(path, backend="numpy")


def _providers() -> list[str]:
    from edgerun.backends.onnxruntime import NOT_LOCAL

    with contextlib.suppress(Exception):
        return [p for p in require("onnxruntime").get_available_providers() if p not in NOT_LOCAL]
    return []


def _ort_maker(path: Path, provider: str) -> Callable[[], object]:
    def make() -> object:
        from edgerun.api import Session
        from edgerun.backends.onnxruntime import OnnxRuntimeSession, OrtOptions
        from edgerun.backends.select import open_source

        impl = OnnxRuntimeSession(open_source(path), (provider,), OrtOptions())
        if impl.misses:
            raise EdgerunError("; ".join(impl.misses))
        if impl.placement is not None and not impl.placement.get(provider):
            raise EdgerunError(f"{provider} registered but took no node of the probe model")
        return Session(impl)

    return make


def _tflite_maker(path: Path, delegate: str) -> Callable[[], object]:
    def make() -> object:
        from edgerun.api import Session
        from edgerun.backends.select import open_source
        from edgerun.backends.tflite import TfliteSession

        libraries = find_delegate_libraries()
        impl = TfliteSession(open_source(path), (delegate,), None, libraries)
        if impl.misses:
            raise EdgerunError("; ".join(impl.misses))
        return Session(impl)

    return make


# --- the report -----------------------------------------------------------------------------


def run_doctor() -> DoctorReport:
    """Everything ``edgerun doctor`` shows, gathered without failing on a broken install."""
    cpu = cpu_info()
    ram_mb = psutil.virtual_memory().total // 2**20
    try:
        closest, reason = closest_profile(cpu, ram_mb, list_profiles())
    except EdgerunError as exc:  # a malformed profile should not hide the rest of the report
        closest, reason = None, f"device profiles unreadable: {exc}"
    return DoctorReport(
        cpu=cpu,
        ram_mb=ram_mb,
        python=platform.python_version(),
        platform=platform.platform(),
        numpy=np.__version__,
        blas=blas_info(),
        backends=probe_backends(),
        checks=check_backends(),
        closest_profile=closest,
        closest_reason=reason,
    )
