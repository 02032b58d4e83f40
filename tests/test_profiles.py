"""Device profiles: every shipped board validates; a broken file names file, key and type."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

import pytest

from edgerun import profiles
from edgerun.errors import ProfileError

REQUIRED_BOARDS = {
    "rpi3b",
    "rpi4",
    "rpi5",
    "rpi-zero-2w",
    "jetson-nano",
    "jetson-orin-nano",
    "coral-dev-board",
    "android-arm64",
    "apple-m1",
    "x86-64-avx2",
    "x86-64-avx512-vnni",
}


def test_the_boards_the_design_names_are_shipped() -> None:
    names = set(profiles.profile_names())
    assert names >= REQUIRED_BOARDS
    assert len(names) >= 14
    kinds = {p.name: p for p in profiles.list_profiles()}
    assert any("i.MX 8M Plus" in p.title for p in kinds.values())
    assert any("RK3588" in p.title or "RK3588" in p.cpu.model for p in kinds.values())
    assert any("onnxruntime:QNNExecutionProvider" in p.deploy.backends for p in kinds.values())


@pytest.mark.parametrize("name", profiles.profile_names())
def test_every_shipped_profile_validates(name: str) -> None:
    profile = profiles.load_profile(name)
    assert profile.name == name
    assert profile.sources and all(s.startswith("http") for s in profile.sources)
    assert profile.cpu.cores > 0 and profile.perf.peak_gflops_fp32 > 0
    assert profile.deploy.backends[-1] == "numpy"


def _rpi4() -> dict:
    return tomllib.loads((profiles.profile_dir() / "rpi4.toml").read_text())


def _drop(path: str):
    def change(data: dict) -> None:
        *parents, key = path.split(".")
        for p in parents:
            data = data[p]
        del data[key]

    return change


def _set(path: str, value: object):
    def change(data: dict) -> None:
        *parents, key = path.split(".")
        for p in parents:
            data = data[p]
        data[key] = value

    return change


BROKEN = {
    "missing_key": (_drop("cpu.cores"), r"missing key 'cpu\.cores' \(expected integer\)"),
    "wrong_type": (_set("cpu.cores", "four"), r"key 'cpu\.cores' must be a integer"),
    "float_for_int": (_set("memory.ram_mb", 4096.5), r"key 'memory\.ram_mb' must be a integer"),
    "bad_enum": (
        _set("deploy.format", "pickle"),
        r"key 'deploy\.format' must be one of onnx, tflite",
    ),
    "unknown_key": (_set("cpu.turbo", True), r"unknown key 'cpu\.turbo'"),
    "missing_table": (_drop("perf"), r"missing table \[perf\]"),
    "numpy_not_last": (
        _set("deploy.backends", ["numpy", "onnxruntime:CPUExecutionProvider"]),
        "must end with",
    ),
    "bad_backend": (_set("deploy.backends", ["cuda", "numpy"]), "has 'cuda'"),
    "delegate_without_library": (
        _set("deploy.backends", ["tflite:edgetpu", "numpy"]),
        r"needs its library",
    ),
    "name_mismatch": (_set("name", "rpi9"), "expected the file name"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_profile_names_file_key_and_type(case: str, tmp_path: Path) -> None:
    change, message = BROKEN[case]
    data = copy.deepcopy(_rpi4())
    data.get("deploy", {}).pop("delegates", None)
    change(data)
    path = tmp_path / "rpi4.toml"
    path.write_text(_dump(data))
    with pytest.raises(ProfileError, match=message) as info:
        profiles.load_profile(path)
    assert str(path) in str(info.value)


def test_invalid_toml_is_a_profile_error(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text("name = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        profiles.load_profile(path)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"known devices: .*rpi4"):
        profiles.load_profile("rpi9")


def test_a_users_own_toml_works_by_path(tmp_path: Path) -> None:
    data = _rpi4()
    data["name"] = "my-board"
    path = tmp_path / "my-board.toml"
    path.write_text(_dump(data))
    assert profiles.load_profile(str(path)).name == "my-board"


@pytest.mark.parametrize(
    "key", ["matmul64_gflops_fp32", "matmul256_gflops_fp32", "elementwise_gelems"]
)
def test_measured_perf_fields_are_optional_and_typed(key: str, tmp_path: Path) -> None:
    data = _rpi4()
    assert getattr(profiles.profile_from_dict(data, "rpi4").perf, key) is None
    data["perf"][key] = 12.5
    assert getattr(profiles.profile_from_dict(data, "rpi4").perf, key) == 12.5
    data["perf"][key] = "fast"
    with pytest.raises(ProfileError, match=rf"'perf.{key}' must be a number"):
        profiles.profile_from_dict(data, "rpi4")


def _dump(data: dict) -> str:
    """A minimal TOML writer for the profile shape (tables, arrays of tables, scalars)."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables.extend((f"[{key}]", item) for item in value)
        else:
            lines.append(f"{key} = {_value(value)}")
    for name, table in tables:
        lines.append(f"[{name}]")  # "[x]" for a table, "[[x]]" for an array-of-tables item
        nested = []
        for key, value in table.items():
            if isinstance(value, dict):
                nested.append((f"{name}.{key}", value))
            else:
                lines.append(f"{key} = {_value(value)}")
        for sub, values in nested:
            lines.append(f"[{sub}]")
            lines.extend(f"{k} = {_value(v)}" for k, v in values.items())
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return repr(value)
