"""edgerun.load / Session.run as DESIGN.md promises: checked feeds, clear load errors, threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import edgerun
from edgerun.errors import InputError, ModelFormatError, UnsupportedOpError


@pytest.fixture(scope="module")
def cnn(tiny_cnn_path: Path) -> edgerun.Session:
    return edgerun.load(tiny_cnn_path, backend="numpy")


def _image(batch: int = 1) -> np.ndarray:
    return np.random.default_rng(1).random((batch, 3, 32, 32), dtype=np.float32)


def test_run_matches_onnxruntime(cnn: edgerun.Session, tiny_cnn_path: Path) -> None:
    import onnxruntime as ort

    x = _image(2)
    expected = ort.InferenceSession(str(tiny_cnn_path), providers=["CPUExecutionProvider"]).run(
        None, {"image": x}
    )
    got = cnn.run({"image": x})
    assert list(got) == ["probabilities"]
    np.testing.assert_allclose(got["probabilities"], expected[0], rtol=1e-4, atol=1e-5)


def test_specs_and_backend(cnn: edgerun.Session) -> None:
    assert [(s.name, s.shape, s.dtype) for s in cnn.inputs] == [
        ("image", ("batch", 3, 32, 32), "float32")
    ]
    assert cnn.outputs[0].name == "probabilities"
    assert cnn.backend == "numpy"


WRONG_FEEDS = {
    "missing": ({}, "missing input"),
    "unknown": ({"image": _image(), "extra": _image()}, "unknown input"),
    "dtype": ({"image": _image().astype(np.float64)}, "must be float32"),
    "rank": ({"image": _image()[0]}, "must have rank 4"),
    "fixed_dim": ({"image": np.zeros((1, 4, 32, 32), np.float32)}, "size 3 on axis 1"),
    "not_a_dict": ([_image()], "must be a dict"),
}


@pytest.mark.parametrize("case", sorted(WRONG_FEEDS))
def test_wrong_feeds_are_refused_before_compute(
    case: str, cnn: edgerun.Session, monkeypatch
) -> None:
    feeds, message = WRONG_FEEDS[case]
    monkeypatch.setattr(cnn.plan, "run", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(InputError, match=message):
        cnn.run(feeds)


def test_one_session_from_eight_threads(cnn: edgerun.Session) -> None:
    inputs = [_image(1) + np.float32(i) for i in range(16)]
    sequential = [cnn.run({"image": x})["probabilities"] for x in inputs]
    with ThreadPoolExecutor(8) as pool:
        parallel = list(pool.map(lambda x: cnn.run({"image": x})["probabilities"], inputs))
    for a, b in zip(sequential, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def _save(
    tmp_path: Path, nodes: list, inputs: list[str], outputs: list[str], opset: int = 17, **kw
) -> Path:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in outputs],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), *kw.get("extra_opsets", [])]
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def test_unsupported_op_fails_at_load_naming_it(tmp_path: Path) -> None:
    node = helper.make_node("Frobnicate", ["x"], ["y"], name="frob1", domain="com.example")
    path = _save(
        tmp_path, [node], ["x"], ["y"], extra_opsets=[helper.make_opsetid("com.example", 3)]
    )
    with pytest.raises(
        UnsupportedOpError, match=r"com\.example::Frobnicate at opset 3 \(node 'frob1'"
    ):
        edgerun.load(path, backend="numpy")


def test_unknown_attribute_fails_at_load(tmp_path: Path) -> None:
    node = helper.make_node("Relu", ["x"], ["y"], name="r", bogus=1)
    with pytest.raises(UnsupportedOpError, match="bogus"):
        edgerun.load(_save(tmp_path, [node], ["x"], ["y"]), backend="numpy")


def test_a_cycle_is_a_load_error(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="first"),
        helper.make_node("Relu", ["a"], ["b"], name="second"),
    ]
    with pytest.raises(ModelFormatError, match="cycle"):
        edgerun.load(_save(tmp_path, nodes, ["x"], ["b"]), backend="numpy")


def test_an_input_nobody_produces_is_a_load_error(tmp_path: Path) -> None:
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"], name="adder")]
    with pytest.raises(ModelFormatError, match="'ghost' of node 'adder'"):
        edgerun.load(_save(tmp_path, nodes, ["x"], ["y"]), backend="numpy")


def test_nodes_out_of_order_still_run(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Neg", ["a"], ["y"], name="second"),
        helper.make_node("Relu", ["x"], ["a"], name="first"),
    ]
    session = edgerun.load(_save(tmp_path, nodes, ["x"], ["y"]), backend="numpy")
    out = session.run({"x": np.array([-1.0, 2.0], np.float32)})["y"]
    np.testing.assert_array_equal(out, [0.0, -2.0])


def test_unknown_backend_is_refused(tiny_cnn_path: Path) -> None:
    with pytest.raises(edgerun.EdgerunError, match="unknown backend"):
        edgerun.load(tiny_cnn_path, backend="cuda")


def test_onnx_checker_agrees_the_example_is_valid(tiny_cnn_path: Path) -> None:
    onnx.checker.check_model(onnx.load(tiny_cnn_path), full_check=True)


@pytest.fixture(scope="module")
def cnn_bundle(tiny_cnn_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgerun.bundle import write_bundle
    from edgerun.modelfile import open_model

    model = open_model(tiny_cnn_path).model
    path = tmp_path_factory.mktemp("bundle") / "tiny-cnn.rpi4.edgerun"
    return write_bundle(
        path,
        tiny_cnn_path,
        model_format="onnx",
        inputs=model.inputs,
        outputs=model.outputs,
        source={"framework": "onnx", "name": tiny_cnn_path.name, "sha256": None},
    )


def test_a_bundle_runs_like_its_model(cnn_bundle: Path, cnn: edgerun.Session) -> None:
    x = _image(1)
    from_bundle = edgerun.load(cnn_bundle, backend="numpy").run({"image": x})
    np.testing.assert_array_equal(
        from_bundle["probabilities"], cnn.run({"image": x})["probabilities"]
    )


def test_bundle_weights_are_mapped_not_copied(cnn_bundle: Path) -> None:
    from edgerun.modelfile import open_model

    initializers = open_model(cnn_bundle).model.graph.initializers.values()
    views = [w for w in initializers if not w.flags.owndata]
    # misaligned ones too (raw_data at any offset): the plan copies those it runs with
    assert views and all(not w.flags.writeable for w in views)


def test_run_and_inspect_a_bundle_from_the_command_line(cnn_bundle: Path, tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    out = tmp_path / "out.npz"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgerun.cli",
            "run",
            str(cnn_bundle),
            "--output",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["outputs"][0]["shape"] == [1, 10] and len(summary["outputs"][0]["top5"]) == 5
    assert np.load(out)["probabilities"].shape == (1, 10)
    inspect = subprocess.run(
        [sys.executable, "-m", "edgerun.cli", "inspect", str(cnn_bundle), "--json"],
        capture_output=True,
        text=True,
    )
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["manifest"]["source"]["name"] == "tiny-cnn.onnx"


def test_run_with_input_files(tiny_cnn_path: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    x = _image(1)
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgerun.cli",
            "run",
            str(tiny_cnn_path),
            "--input",
            f"image={tmp_path / 'x.npy'}",
            "--output",
            str(out),
            "--backend",
            "numpy",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    expected = edgerun.load(tiny_cnn_path, backend="numpy").run({"image": x})["probabilities"]
    np.testing.assert_array_equal(np.load(out)["probabilities"], expected)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "image=missing.npy"], "no such file"),
        (["--input", "image"], "write it as name=value"),
        (["--shape", "image=1xthree"], "bad shape"),
    ],
)
def test_run_refuses_bad_arguments_with_status_2(
    tiny_cnn_path: Path, args: list[str], message: str
) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "edgerun.cli", "run", str(tiny_cnn_path), *args],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_outputs_are_writable_even_when_they_are_constants(tmp_path: Path) -> None:
    weight = onnx.numpy_helper.from_array(np.arange(2, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Identity", ["w"], ["y"]), helper.make_node("Relu", ["x"], ["z"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("y", "z")],
        [weight],
    )
    path = tmp_path / "m.onnx"
    path.write_bytes(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    )
    out = edgerun.load(path, backend="numpy").run({"x": np.zeros(2, np.float32)})
    assert out["y"].flags.writeable and out["z"].flags.writeable


# --- backends: the same model on each, and what ran is said ---------------------------------


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime", "auto"])
@pytest.mark.parametrize("kind", ["onnx", "bundle"])
def test_the_same_model_gives_the_same_outputs_on_every_backend(
    backend: str, kind: str, tiny_cnn_path: Path, cnn_bundle: Path, cnn: edgerun.Session
) -> None:
    x = _image(3)
    session = edgerun.load(tiny_cnn_path if kind == "onnx" else cnn_bundle, backend=backend)
    expected = {"numpy": "numpy", "onnxruntime": "onnxruntime:CPUExecutionProvider"}
    assert session.backend == expected.get(backend, "onnxruntime:CPUExecutionProvider")
    assert session.backend_reason
    np.testing.assert_allclose(
        session.run({"image": x})["probabilities"],
        cnn.run({"image": x})["probabilities"],
        rtol=1e-4,
        atol=1e-6,
    )


def test_a_backend_for_another_format_is_refused(tiny_cnn_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="the tflite backend cannot run onnx models"):
        edgerun.load(tiny_cnn_path, backend="tflite")


def test_run_says_what_ran_and_strict_refuses_a_fallback(tiny_cnn_path: Path) -> None:
    import json
    import subprocess
    import sys

    import onnxruntime as ort

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "edgerun.cli", "run", str(tiny_cnn_path), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    plain = run("--json")
    assert plain.returncode == 0, plain.stderr
    data = json.loads(plain.stdout)
    assert data["backend"] == "onnxruntime:CPUExecutionProvider"
    assert data["providers"] == ["CPUExecutionProvider"] and sum(data["placement"].values()) > 0
    if "XnnpackExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has XNNPACK: rpi4's first choice is here")
    fallback = run("--device", "rpi4", "--json")  # rpi4 asks for XNNPACK first
    assert fallback.returncode == 0, fallback.stderr
    assert "edgerun: warning:" in fallback.stderr and "XnnpackExecutionProvider" in fallback.stderr
    assert "XnnpackExecutionProvider" in json.loads(fallback.stdout)["backend_reason"]
    strict = run("--device", "rpi4", "--strict")
    assert strict.returncode == 2 and "Traceback" not in strict.stderr
    assert "strict" in strict.stderr and "XnnpackExecutionProvider" in strict.stderr
