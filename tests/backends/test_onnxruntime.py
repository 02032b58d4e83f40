"""The onnxruntime backend against onnxruntime itself and the numpy runtime: same outputs from
files and bundles, providers from the profile, misses warned about or strict errors."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx.external_data_helper import convert_model_to_external_data

import edgerun
from edgerun.backends.onnxruntime import OnnxRuntimeSession, OrtOptions, provider_options
from edgerun.backends.select import open_source
from edgerun.bundle import write_bundle
from edgerun.errors import BackendFallbackWarning, BackendUnavailableError, MissingDependencyError
from edgerun.modelfile import open_model

MISSING_EP = "CANNExecutionProvider"  # Huawei Ascend: in no CPU build of onnxruntime


@pytest.fixture(scope="module")
def sources(tiny_cnn_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny CNN as a file, a bundle, and a bundle whose weights are external members."""
    folder = tmp_path_factory.mktemp("ort")
    model = open_model(tiny_cnn_path).model
    specs = {"inputs": model.inputs, "outputs": model.outputs, "model_format": "onnx"}
    bundle = write_bundle(folder / "cnn.edgerun", tiny_cnn_path, **specs)
    proto = onnx.load(tiny_cnn_path)
    convert_model_to_external_data(proto, location="weights.bin", size_threshold=0)
    onnx.save(proto, folder / "external.onnx")
    external = write_bundle(
        folder / "external.edgerun",
        folder / "external.onnx",
        external_data={"weights.bin": folder / "weights.bin"},
        **specs,
    )
    return {"file": tiny_cnn_path, "bundle": bundle, "external": external}


def _image() -> np.ndarray:
    return np.random.default_rng(3).random((2, 3, 32, 32), dtype=np.float32)


@pytest.mark.parametrize("kind", ["file", "bundle", "external"])
def test_same_outputs_as_onnxruntime_and_the_numpy_runtime(
    kind: str, sources: dict[str, Path], tiny_cnn_path: Path
) -> None:
    x = _image()
    raw = ort.InferenceSession(str(tiny_cnn_path), providers=["CPUExecutionProvider"])
    expected = raw.run(None, {"image": x})[0]
    session = edgerun.load(sources[kind], backend="onnxruntime")
    assert session.backend == "onnxruntime:CPUExecutionProvider"
    got = session.run({"image": x})["probabilities"]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    on_numpy = edgerun.load(sources[kind], backend="numpy").run({"image": x})["probabilities"]
    np.testing.assert_allclose(got, on_numpy, rtol=1e-4, atol=1e-6)


def test_external_data_comes_from_the_bundle_not_the_disk(
    sources: dict[str, Path], tmp_path: Path
) -> None:
    moved = tmp_path / "alone.edgerun"  # no weights.bin beside it
    moved.write_bytes(sources["external"].read_bytes())
    session = edgerun.load(moved, backend="onnxruntime")
    assert session.run({"image": _image()})["probabilities"].shape == (2, 10)


def test_specs_match_the_numpy_runtime(sources: dict[str, Path]) -> None:
    ort_session = edgerun.load(sources["file"], backend="onnxruntime")
    numpy_session = edgerun.load(sources["file"], backend="numpy")
    assert ort_session.inputs == numpy_session.inputs
    assert ort_session.outputs == numpy_session.outputs


def test_placement_is_onnxruntimes_own_partitioning(tiny_cnn_path: Path) -> None:
    # onnxruntime counts after its basic optimisations; with none, every node of the model
    unoptimised = OrtOptions(optimization="disable")
    impl = OnnxRuntimeSession(open_source(tiny_cnn_path), (), unoptimised)
    assert impl.placement == {"CPUExecutionProvider": len(onnx.load(tiny_cnn_path).graph.node)}
    session = edgerun.load(tiny_cnn_path, backend="onnxruntime")
    (taken,) = session.placement.values()
    assert f"CPUExecutionProvider took {taken} of {taken} nodes" in session.backend_reason


def test_a_missing_provider_falls_back_and_says_so(tiny_cnn_path: Path, board: Callable) -> None:
    device = board([f"onnxruntime:{MISSING_EP}", "onnxruntime:CPUExecutionProvider", "numpy"])
    with pytest.warns(BackendFallbackWarning, match=MISSING_EP):
        session = edgerun.load(tiny_cnn_path, device=device)
    assert session.backend == "onnxruntime:CPUExecutionProvider"
    assert MISSING_EP in session.backend_reason and "missing" in session.backend_reason
    assert session.run({"image": _image()})["probabilities"].shape == (2, 10)


def test_strict_refuses_a_missing_provider(tiny_cnn_path: Path, board: Callable) -> None:
    device = board([f"onnxruntime:{MISSING_EP}", "onnxruntime:CPUExecutionProvider", "numpy"])
    with pytest.raises(BackendUnavailableError, match=f"strict.*{MISSING_EP}"):
        edgerun.load(tiny_cnn_path, device=device, strict=True)


def test_nothing_asked_for_nothing_warned(tiny_cnn_path: Path, board: Callable) -> None:
    device = board(["onnxruntime:CPUExecutionProvider", "numpy"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        session = edgerun.load(tiny_cnn_path, device=device, strict=True)
    assert session.backend == "onnxruntime:CPUExecutionProvider"


def test_a_missing_onnxruntime_names_the_extra(
    tiny_cnn_path: Path, board: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgerun\[onnxruntime\]'"):
        edgerun.load(tiny_cnn_path, backend="onnxruntime")
    # auto, no device: nothing was asked for, so the numpy runtime runs without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", BackendFallbackWarning)
        session = edgerun.load(tiny_cnn_path)
    assert session.backend == "numpy" and "edgerun[onnxruntime]" in session.backend_reason
    # a profile asked for onnxruntime: the numpy runtime runs, with a warning naming the extra
    device = board(["onnxruntime:CPUExecutionProvider", "numpy"])
    with pytest.warns(BackendFallbackWarning, match=r"edgerun\[onnxruntime\]"):
        assert edgerun.load(tiny_cnn_path, device=device).backend == "numpy"


def test_threads_reach_the_session(tiny_cnn_path: Path) -> None:
    impl = OnnxRuntimeSession(open_source(tiny_cnn_path), (), OrtOptions(threads=3))
    assert impl._sess.get_session_options().intra_op_num_threads == 3


@pytest.mark.parametrize(("level", "fused"), [("disable", False), ("all", True)])
def test_optimisation_level_shows_in_the_profiled_nodes(
    tiny_cnn_path: Path, level: str, fused: bool
) -> None:
    impl = OnnxRuntimeSession(open_source(tiny_cnn_path), (), OrtOptions(optimization=level))
    recorder = impl.op_recorder(max_traced_runs=10)
    for record in (False, True, True):
        recorder.run({"image": _image()}, record=record)
    result = recorder.finish()
    names = {op.name for op in result.ops}
    original = {n.name for n in onnx.load(tiny_cnn_path).graph.node}
    assert (names == original) is not fused
    assert set(result.calls) == {2}
    assert {op.provider for op in result.ops} == {"CPUExecutionProvider"}
    assert all(start >= 0 and start + s <= 1 for _, _, start, s in result.spans)


@pytest.mark.parametrize(
    "provider",
    [
        "XnnpackExecutionProvider",
        "CUDAExecutionProvider",
        "TensorrtExecutionProvider",
        "OpenVINOExecutionProvider",
        "CoreMLExecutionProvider",
        "QNNExecutionProvider",
        "NnapiExecutionProvider",
        "CPUExecutionProvider",
    ],
)
def test_provider_options_are_strings_onnxruntime_knows(provider: str) -> None:
    assert provider in ort.get_all_providers()
    options = provider_options(provider, OrtOptions(threads=4, fp16=True))
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in options.items())
    if provider == "XnnpackExecutionProvider":
        assert options == {"intra_op_num_threads": "4"}
    if provider == "TensorrtExecutionProvider":
        assert options["trt_fp16_enable"] == "True"


def test_a_provider_that_fails_to_start_is_dropped_and_named(
    tiny_cnn_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when onnxruntime-gpu finds no CUDA libraries: the next provider runs, and says so."""
    real = OnnxRuntimeSession._create

    def create(self: OnnxRuntimeSession, providers: list[str], prefix: str | None) -> object:
        if providers[0] == "AzureExecutionProvider":
            raise RuntimeError("libcudart.so.12: cannot open shared object file\nmore")
        return real(self, providers, prefix)

    monkeypatch.setattr(OnnxRuntimeSession, "_create", create)
    wanted = ("AzureExecutionProvider", "CPUExecutionProvider")
    impl = OnnxRuntimeSession(open_source(tiny_cnn_path), wanted, OrtOptions())
    assert impl.name == "onnxruntime:CPUExecutionProvider"
    assert impl.misses == [
        "onnxruntime:AzureExecutionProvider (failed to start: "
        "libcudart.so.12: cannot open shared object file)"
    ]


def test_a_model_onnxruntime_refuses_falls_back_to_numpy_under_auto(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    # an IR version newer than this onnxruntime knows: it refuses the model at load
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=99)
    path = tmp_path / "future.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(BackendUnavailableError, match="onnxruntime cannot load"):
        edgerun.load(path, backend="onnxruntime")
    with pytest.warns(BackendFallbackWarning, match="onnxruntime cannot load"):
        session = edgerun.load(path)  # nothing asked for it, but it broke: said loudly
    assert session.backend == "numpy" and "onnxruntime cannot load" in session.backend_reason
    assert session.run({"x": np.array([-1, 2], np.float32)})["y"].tolist() == [0, 2]
