"""The device side as a board runs it: numpy only, against outputs computed on the host.

Reads models, inputs, onnxruntime's outputs and onnx.load's view of each model from the
folder in EDGERUN_DEVICE_FIXTURES (written by scripts/device_fixtures.py on the host), and
skips when that is unset. Imports nothing but numpy, the standard library and edgerun, so the
same file runs on the host, on a Raspberry Pi, and in the emulated roots of
.ci/arm-device-tests (where onnx, onnxruntime and torch are absent or not used).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = os.environ.get("EDGERUN_DEVICE_FIXTURES")
pytestmark = pytest.mark.skipif(not FIXTURES, reason="EDGERUN_DEVICE_FIXTURES is not set")
HEAVY = ("onnx", "onnxruntime", "torch", "tensorflow")
RTOL, ATOL = 1e-4, 1e-5


def _folder() -> Path:
    return Path(FIXTURES or ".")


def _models() -> list[str]:
    index = _folder() / "index.json"
    return json.loads(index.read_text())["models"] if FIXTURES and index.exists() else []


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def _assert_matches_host(got: dict[str, np.ndarray], name: str) -> None:
    expected = _npz(_folder() / f"{name}.expected.npz")
    assert list(got) == list(expected)
    for key, want in expected.items():
        assert got[key].shape == want.shape, key
        assert got[key].dtype == want.dtype, key
        np.testing.assert_allclose(got[key], want, rtol=RTOL, atol=ATOL, err_msg=key)


def _edgerun(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The installed ``edgerun`` command (the console script beside this Python if any)."""
    script = Path(sys.executable).with_name("edgerun")
    command = [str(script)] if script.exists() else None
    if command is None and shutil.which("edgerun"):
        command = [shutil.which("edgerun") or "edgerun"]
    command = command or [sys.executable, "-m", "edgerun.cli"]
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=900, check=False
    )
    if check:
        assert done.returncode == 0, f"edgerun {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


models = pytest.mark.parametrize("name", _models())


def test_platform_is_the_expected_one() -> None:
    """EDGERUN_EXPECT_MACHINE (set by the CI script) guards against testing the host by mistake."""
    expected = os.environ.get("EDGERUN_EXPECT_MACHINE")
    print(f"{platform.machine()} Python {platform.python_version()} numpy {np.__version__}")
    if expected:
        assert platform.machine() == expected


@models
def test_reader_matches_onnx_load(name: str) -> None:
    from edgerun.runtime.onnx_reader import read_onnx

    oracle = json.loads((_folder() / f"{name}.reader.json").read_text())
    model = read_onnx(_folder() / f"{name}.onnx")
    g = model.graph
    assert model.ir_version == oracle["ir_version"]
    assert model.opset_imports == oracle["opset_imports"]
    assert model.producer_name == oracle["producer_name"]
    assert [[n.op_type, n.inputs, n.outputs] for n in g.nodes] == oracle["nodes"]
    assert [v.name for v in g.inputs] == oracle["inputs"]
    assert [v.name for v in g.outputs] == oracle["outputs"]
    assert sorted(g.initializers) == sorted(oracle["initializers"])
    for key, want in oracle["initializers"].items():
        array = g.initializers[key]
        assert g.initializer_types[key] == want["data_type"], key
        assert list(array.shape) == want["dims"], key
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        assert digest == want["sha256"], key


@models
def test_numpy_runtime_matches_host(name: str) -> None:
    import edgerun

    session = edgerun.load(_folder() / f"{name}.onnx", backend="numpy")
    assert session.backend == "numpy"
    _assert_matches_host(session.run(_npz(_folder() / f"{name}.inputs.npz")), name)


@models
def test_bundle_verifies_and_runs(name: str) -> None:
    import edgerun
    from edgerun.bundle import open_bundle

    path = _folder() / f"{name}.edgerun"
    with open_bundle(path) as bundle:
        assert bundle.manifest.model_format == "onnx"
        assert bytes(bundle.model) == (_folder() / f"{name}.onnx").read_bytes()
    session = edgerun.load(path, backend="numpy")
    _assert_matches_host(session.run(_npz(_folder() / f"{name}.inputs.npz")), name)


def test_tampered_bundle_is_refused(tmp_path: Path) -> None:
    from edgerun.bundle import open_bundle
    from edgerun.errors import BundleError

    data = bytearray((_folder() / "tiny-mlp.edgerun").read_bytes())
    onnx_bytes = (_folder() / "tiny-mlp.onnx").read_bytes()
    at = data.index(onnx_bytes[:64]) + len(onnx_bytes) // 2
    data[at] ^= 0xFF
    bad = tmp_path / "bad.edgerun"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256 mismatch"):
        open_bundle(bad)


def test_no_heavy_package_is_imported() -> None:
    code = (
        "import sys, numpy as np, edgerun\n"
        f"s = edgerun.load({str(_folder() / 'tiny-cnn.edgerun')!r}, backend='numpy')\n"
        "s.run({'image': np.zeros((1, 3, 32, 32), np.float32)})\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@models
def test_cli_run_saves_outputs(name: str, tmp_path: Path) -> None:
    inputs = _npz(_folder() / f"{name}.inputs.npz")
    args = []
    for key, value in inputs.items():
        np.save(tmp_path / f"{key}.npy", value)
        args += ["--input", f"{key}={tmp_path / f'{key}.npy'}"]
    out = tmp_path / "out.npz"
    _edgerun("run", str(_folder() / f"{name}.edgerun"), *args, "--output", str(out))
    _assert_matches_host(_npz(out), name)


def test_cli_run_random_inputs_json() -> None:
    done = _edgerun(
        "run", str(_folder() / "tiny-cnn.onnx"), "--device", "rpi4", "--backend", "numpy", "--json"
    )
    report = json.loads(done.stdout)
    assert report["backend"] == "numpy"
    assert report["random_inputs"]


def test_cli_inspect_json() -> None:
    done = _edgerun("inspect", str(_folder() / "tiny-cnn.edgerun"), "--json")
    assert "Conv" in done.stdout
    json.loads(done.stdout)


def test_cli_devices() -> None:
    names = json.loads(_edgerun("devices", "--json").stdout)
    assert "rpi4" in json.dumps(names)
    _edgerun("devices", "rpi4")


def test_cli_user_error_is_one_line() -> None:
    done = _edgerun("run", str(_folder() / "nope.onnx"), check=False)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout


def test_cli_profile() -> None:
    if _edgerun("profile", "--help", check=False).returncode != 0:
        pytest.skip("edgerun profile is not in this edgerun yet")
    model = str(_folder() / "tiny-cnn.onnx")
    done = _edgerun("profile", model, "--runs", "3", "--warmup", "1", "--json")
    json.loads(done.stdout)
