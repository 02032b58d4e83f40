"""The LiteRT backend against the Keras source model and the numpy runtime: .tflite files and
TFLite bundles, delegates from the profile, misses warned about or strict errors."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import edgerun
from edgerun.backends.tflite import interpreter_module
from edgerun.bundle import write_bundle
from edgerun.errors import BackendFallbackWarning, BackendUnavailableError, MissingDependencyError

tf = pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_litert")


@pytest.fixture(scope="module")
def keras_model() -> object:
    tf.keras.utils.set_random_seed(0)
    return tf.keras.Sequential(
        [
            tf.keras.Input((8, 8, 3)),
            tf.keras.layers.Conv2D(4, 3, activation="relu"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(3),
        ]
    )


@pytest.fixture(scope="module")
def models(keras_model: object, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("tflite")
    path = folder / "cnn.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(keras_model).convert())
    session = edgerun.load(path, backend="tflite")
    bundle = write_bundle(
        folder / "cnn.edgerun",
        path,
        model_format="tflite",
        inputs=session.inputs,
        outputs=session.outputs,
    )
    return {"file": path, "bundle": bundle}


def _image(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(5).random((batch, 8, 8, 3), dtype=np.float32)


def _run(session: edgerun.Session, x: np.ndarray) -> np.ndarray:
    (out,) = session.run({session.inputs[0].name: x}).values()
    return out


@pytest.mark.parametrize("kind", ["file", "bundle"])
@pytest.mark.parametrize("batch", [1, 3])
def test_same_outputs_as_keras_and_the_numpy_runtime(
    kind: str, batch: int, models: dict[str, Path], keras_model: object
) -> None:
    x = _image(batch)
    expected = keras_model(x).numpy()
    session = edgerun.load(models[kind], backend="tflite", threads=2)
    assert session.backend == "tflite:xnnpack"
    np.testing.assert_allclose(_run(session, x), expected, rtol=1e-5, atol=1e-6)
    on_numpy = edgerun.load(models[kind], backend="numpy")
    np.testing.assert_allclose(_run(on_numpy, x), expected, rtol=1e-5, atol=1e-6)


def test_auto_picks_the_interpreter_for_tflite(models: dict[str, Path]) -> None:
    session = edgerun.load(models["file"])
    assert session.backend == "tflite:xnnpack" and "partition" in session.backend_reason
    assert session.inputs[0].shape == (None, 8, 8, 3) and session.inputs[0].dtype == "float32"


def test_a_missing_delegate_falls_back_and_says_so(
    models: dict[str, Path], board: Callable
) -> None:
    device = board(
        ["tflite:edgetpu", "tflite:xnnpack", "numpy"], {"edgetpu": "libedgetpu-absent.so.1"}
    )
    with pytest.warns(BackendFallbackWarning, match="tflite:edgetpu.*libedgetpu-absent"):
        session = edgerun.load(models["bundle"], device=device)
    assert session.backend == "tflite:xnnpack" and "edgetpu" in session.backend_reason
    assert _run(session, _image()).shape == (2, 3)
    with pytest.raises(BackendUnavailableError, match=r"strict.*edgetpu"):
        edgerun.load(models["bundle"], device=device, strict=True)


def test_an_onnx_only_profile_still_runs_a_tflite_model(
    models: dict[str, Path], board: Callable
) -> None:
    device = board(["onnxruntime:CPUExecutionProvider", "numpy"])
    assert edgerun.load(models["file"], device=device).backend == "numpy"


def test_without_litert_the_extra_is_named(
    models: dict[str, Path], board: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgerun\[tflite\]'"):
        edgerun.load(models["file"], backend="tflite")
    device = board(["tflite:xnnpack", "numpy"])
    with pytest.warns(BackendFallbackWarning, match=r"edgerun\[tflite\]"):
        assert edgerun.load(models["file"], device=device).backend == "numpy"


def test_tflite_runtime_is_the_second_door(monkeypatch: pytest.MonkeyPatch) -> None:
    litert = interpreter_module()
    package = types.ModuleType("tflite_runtime")
    package.interpreter = litert  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", package)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", litert)
    assert interpreter_module() is litert


def test_runs_from_eight_threads(models: dict[str, Path], keras_model: object) -> None:
    from concurrent.futures import ThreadPoolExecutor

    session = edgerun.load(models["file"], backend="tflite")
    inputs = [_image(1 + i % 3) + np.float32(i) for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        outputs = list(pool.map(lambda x: _run(session, x), inputs))
    for x, out in zip(inputs, outputs, strict=True):
        np.testing.assert_allclose(out, keras_model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_profile_on_tflite_is_whole_model(models: dict[str, Path]) -> None:
    from edgerun.profiler import profile

    report = profile(models["file"], backend="tflite", runs=3, warmup=1)
    assert report.backend == "tflite:xnnpack" and report.latency.runs == 3
    assert report.ops == [] and report.op_coverage is None
    assert report.environment.providers == ["xnnpack"]
    assert report.to_json()["op_coverage"] is None


def test_an_int8_model_keeps_its_quantization(keras_model: object, tmp_path: Path) -> None:
    def calibration() -> object:
        for _ in range(8):
            yield [_image(1)]

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = calibration
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path / "int8.tflite"
    path.write_bytes(converter.convert())

    session = edgerun.load(path, backend="tflite")
    (spec,), (out_spec,) = session.inputs, session.outputs
    assert spec.dtype == out_spec.dtype == "int8" and spec.quantization is not None
    (scale,), (zero,) = spec.quantization.scale, spec.quantization.zero_point
    x = _image(1)
    q = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    got = _run(session, q)
    (out_scale,), (out_zero,) = out_spec.quantization.scale, out_spec.quantization.zero_point
    real = (got.astype(np.float32) - out_zero) * out_scale
    # int8 end to end: within a few output steps of the float source model
    np.testing.assert_allclose(real, keras_model(x).numpy(), atol=4 * out_scale + 0.02)
