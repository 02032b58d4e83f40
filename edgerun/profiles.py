"""Device profiles: boards as data (STYLE.md rule 5).

Each board is a TOML file in the ``device_profiles`` package, validated on load against
``SCHEMA`` so that a typo in a profile is an error naming the file, the key and the type
expected, never a silent default. A path to a user's own TOML works wherever a name does.

``perf.depthwise_gflops_fp32`` is optional: the rate of the numpy runtime's depthwise
convolution kernel (an einsum, far below BLAS peak), which ``edgerun estimate --device
this`` measures. Data-sheet boards leave it out, and ``edgerun.estimate`` then derives it
from the memory bandwidth (see ``edgerun.estimate.depthwise_gflops``). Likewise optional and
measured there: ``perf.matmul64_gflops_fp32`` and ``perf.matmul256_gflops_fp32`` (BLAS on
small products, which runs below the peak; absent, products run at the peak) and
``perf.elementwise_gelems`` (G elements/s of one numpy pass over cached float32 arrays;
absent, derived from the bandwidth: see ``edgerun.estimate.elementwise_gelems``).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from edgerun.errors import ProfileError

_STR, _INT, _FLOAT, _BOOL, _STRS = "string", "integer", "number", "boolean", "list of strings"
_ENUMS = {
    "cpu.arch": ("aarch64", "armv7l", "x86_64"),
    "accelerators.kind": ("gpu", "npu", "tpu", "dsp"),
    "deploy.format": ("onnx", "tflite"),
    "deploy.quantization": ("none", "fp16", "int8-dynamic", "int8-static"),
    "deploy.activation_dtype": ("float32", "float16", "int8", "uint8"),
    "deploy.weight_dtype": ("float32", "float16", "int8"),
}
# table -> key -> (type, required)
SCHEMA: dict[str, dict[str, tuple[str, bool]]] = {
    "": {
        "name": (_STR, True),
        "title": (_STR, True),
        "vendor": (_STR, True),
        "sources": (_STRS, True),
    },
    "cpu": {
        "arch": (_STR, True),
        "model": (_STR, True),
        "cores": (_INT, True),
        "clock_ghz": (_FLOAT, True),
        "features": (_STRS, True),
        "source": (_STR, True),
    },
    "memory": {
        "ram_mb": (_INT, True),
        "type": (_STR, True),
        "storage": (_STR, True),
        "source": (_STR, True),
    },
    "accelerators": {
        "name": (_STR, True),
        "kind": (_STR, True),
        "tops_int8": (_FLOAT, False),
        "source": (_STR, True),
    },
    "deploy": {
        "format": (_STR, True),
        "quantization": (_STR, True),
        "activation_dtype": (_STR, True),
        "weight_dtype": (_STR, True),
        "per_channel": (_BOOL, True),
        "threads": (_INT, True),
        "backends": (_STRS, True),
        "rationale": (_STR, True),
        "integer_io": (_BOOL, False),
    },
    "perf": {
        "peak_gflops_fp32": (_FLOAT, True),
        "peak_gops_int8": (_FLOAT, True),
        "memory_bandwidth_gbs": (_FLOAT, True),
        "depthwise_gflops_fp32": (_FLOAT, False),
        "matmul64_gflops_fp32": (_FLOAT, False),
        "matmul256_gflops_fp32": (_FLOAT, False),
        "elementwise_gelems": (_FLOAT, False),
        "source": (_STR, True),
    },
}
EXTERNAL_DELEGATES = ("edgetpu", "vx", "hexagon", "qnn")


@dataclass(frozen=True)
class Cpu:
    arch: str
    model: str
    cores: int
    clock_ghz: float
    features: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Memory:
    ram_mb: int
    type: str
    storage: str
    source: str


@dataclass(frozen=True)
class Accelerator:
    name: str
    kind: str
    source: str
    tops_int8: float | None = None


@dataclass(frozen=True)
class Deploy:
    format: str
    quantization: str
    activation_dtype: str
    weight_dtype: str
    per_channel: bool
    threads: int
    backends: tuple[str, ...]
    rationale: str
    delegates: tuple[tuple[str, str], ...] = ()  # (TFLite external delegate, library)
    integer_io: bool = False  # int8/uint8 model inputs and outputs (integer-only NPUs)


@dataclass(frozen=True)
class Perf:
    peak_gflops_fp32: float
    peak_gops_int8: float
    memory_bandwidth_gbs: float
    source: str
    depthwise_gflops_fp32: float | None = None  # measured; None: derived by the estimate
    matmul64_gflops_fp32: float | None = None  # a 64^3 matmul; None: the peak
    matmul256_gflops_fp32: float | None = None  # a 256^3 matmul; None: the peak
    elementwise_gelems: float | None = None  # in-cache numpy pass; None: from bandwidth


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    title: str
    vendor: str
    sources: tuple[str, ...]
    cpu: Cpu
    memory: Memory
    accelerators: tuple[Accelerator, ...]
    deploy: Deploy
    perf: Perf
    path: str  # where it was read from
    raw: dict[str, Any]  # the TOML as read, for bundles' full copy and --json

    def to_json(self) -> dict[str, Any]:
        return dict(self.raw)


def profile_dir() -> Path:
    return Path(str(resources.files("device_profiles")))


def profile_names() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.toml"))


def list_profiles() -> list[DeviceProfile]:
    return [load_profile(name) for name in profile_names()]


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name ("rpi4"), or the user's own TOML file by path."""
    path = _locate(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read device profile: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    return profile_from_dict(data, str(path))


def _locate(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text)
        if not path.is_file():
            raise ProfileError(f"{path}: no such device profile file")
        return path
    path = profile_dir() / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(profile_names())
        raise ProfileError(f"unknown device {text!r}; known devices: {known}")
    return path


def profile_from_dict(data: dict[str, Any], where: str) -> DeviceProfile:
    """Validate ``data`` against SCHEMA and build the profile; ``where`` names it in errors."""
    _check_table(data, "", where, extra_ok={"cpu", "memory", "accelerators", "deploy", "perf"})
    for table in ("cpu", "memory", "deploy", "perf"):
        _check_table(_table(data, table, where), table, where, extra_ok={"delegates"})
    accelerators = data.get("accelerators")
    if not isinstance(accelerators, list):
        raise ProfileError(f"{where}: key 'accelerators' must be a list of tables")
    for i, acc in enumerate(accelerators):
        if not isinstance(acc, dict):
            raise ProfileError(f"{where}: key 'accelerators[{i}]' must be a table")
        _check_table(acc, "accelerators", where)
    deploy = data["deploy"]
    delegates = _check_delegates(deploy, where)
    _check_backends(deploy["backends"], dict(delegates), where)
    if data["name"] != Path(where).stem and where.endswith(".toml"):
        raise ProfileError(f"{where}: key 'name' is {data['name']!r}, expected the file name")
    deploy_fields = {k: v for k, v in deploy.items() if k != "delegates"}
    deploy_fields["backends"] = tuple(deploy["backends"])
    return DeviceProfile(
        name=data["name"],
        title=data["title"],
        vendor=data["vendor"],
        sources=tuple(data["sources"]),
        cpu=Cpu(**{**data["cpu"], "features": tuple(data["cpu"]["features"])}),
        memory=Memory(**data["memory"]),
        accelerators=tuple(Accelerator(**a) for a in accelerators),
        deploy=Deploy(**deploy_fields, delegates=delegates),
        perf=Perf(**data["perf"]),
        path=where,
        raw=data,
    )


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ProfileError(f"{where}: missing table [{key}]")
    return value


def _check_table(
    table: dict[str, Any], prefix: str, where: str, extra_ok: set[str] | frozenset = frozenset()
) -> None:
    schema = SCHEMA[prefix]
    for key, (kind, required) in schema.items():
        dotted = f"{prefix}.{key}" if prefix else key
        if key not in table:
            if required:
                raise ProfileError(f"{where}: missing key '{dotted}' (expected {kind})")
            continue
        if not _is(table[key], kind):
            raise ProfileError(f"{where}: key '{dotted}' must be a {kind}, got {table[key]!r}")
        allowed = _ENUMS.get(dotted)
        if allowed and table[key] not in allowed:
            raise ProfileError(f"{where}: key '{dotted}' must be one of {', '.join(allowed)}")
    for key in table.keys() - schema.keys() - extra_ok:
        dotted = f"{prefix}.{key}" if prefix else key
        raise ProfileError(f"{where}: unknown key '{dotted}'")


def _is(value: Any, kind: str) -> bool:
    if kind == _STR:
        return isinstance(value, str)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _FLOAT:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == _BOOL:
        return isinstance(value, bool)
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_delegates(deploy: dict[str, Any], where: str) -> tuple[tuple[str, str], ...]:
    delegates = deploy.get("delegates", {})
    if not isinstance(delegates, dict) or not all(isinstance(v, str) for v in delegates.values()):
        raise ProfileError(f"{where}: key 'deploy.delegates' must be a table of strings")
    return tuple(sorted(delegates.items()))


def _check_backends(backends: list[str], delegates: dict[str, str], where: str) -> None:
    if not backends or backends[-1] != "numpy":
        raise ProfileError(f"{where}: key 'deploy.backends' must end with \"numpy\"")
    for entry in backends:
        kind, _, option = entry.partition(":")
        if kind not in ("numpy", "onnxruntime", "tflite") or (kind != "numpy") != bool(option):
            raise ProfileError(
                f"{where}: key 'deploy.backends' has {entry!r}; expected \"numpy\", "
                '"onnxruntime:<ExecutionProvider>" or "tflite:<delegate>"'
            )
        if kind == "tflite" and option in EXTERNAL_DELEGATES and option not in delegates:
            raise ProfileError(
                f"{where}: backend {entry!r} needs its library in [deploy.delegates]"
            )
