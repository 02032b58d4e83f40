"""The compression recipe: TOML and flags, its refusals, and pack applying it in order."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import edgerun
from converters.compression import (
    MARGIN,
    Cluster,
    CompressionRecipe,
    LowRank,
    Prune,
    check_for,
    compress,
    load_recipe,
    with_flags,
)
from converters.onnx_frontend import onnxruntime_runner
from edgerun.bundle import read_manifest
from edgerun.cli import main
from edgerun.errors import InputError
from tests.converters.optimise import nets

RECIPE = """
[prune]
sparsity = { c2 = 0.5, fc1 = 0.25 }

[low_rank]
size = 0.5

[cluster]
clusters = 8

[fine_tune]
epochs = 2
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    return path


def test_a_recipe_file(tmp_path: Path) -> None:
    recipe = load_recipe(_write(tmp_path, RECIPE))
    assert recipe.prune == Prune((("c2", 0.5), ("fc1", 0.25)), "channels", "layer")
    assert recipe.low_rank == LowRank(size=0.5)
    assert recipe.cluster == Cluster(8)
    assert recipe.fine_tune.epochs == 2
    assert recipe.to_json()["order"] == ["prune", "low_rank", "cluster"]


def test_flags_override_the_file(tmp_path: Path) -> None:
    recipe = with_flags(load_recipe(_write(tmp_path, RECIPE)), prune=0.3, low_rank=0.9)
    assert recipe.prune == Prune(0.3)
    assert recipe.low_rank == LowRank(energy=0.9)
    assert recipe.cluster == Cluster(8)
    assert not CompressionRecipe() and with_flags(CompressionRecipe(), cluster=16)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prun]\nsparsity = 0.5", "unknown section 'prun'"),
        ("prune = 3", r"\[prune\] must be a table"),
        ("[prune]\nmethod = 'channels'", "needs sparsity"),
        ("[prune]\nsparsity = 1.0", r"sparsity must be in \[0, 1\), not 1"),
        ("[prune]\nsparsity = 'half'", "must be a number"),
        ("[prune]\nsparsity = { c1 = -0.1 }", r"sparsity.c1 must be in \[0, 1\)"),
        ("[prune]\nsparsity = 0.5\nmethod = 'random'", "method must be one of channels, magnitude"),
        ("[prune]\nsparsity = 0.5\nscope = 'global'", "scope 'global' takes method 'magnitude'"),
        ("[prune]\nsparsity = 0.5\nratio = 2", "unknown key 'ratio'"),
        ("[low_rank]\n", "takes one of energy"),
        ("[low_rank]\nenergy = 0.9\nsize = 0.5", "takes one of energy"),
        ("[low_rank]\nenergy = 0", r"energy must be in \(0, 1\], not 0"),
        ("[cluster]\nclusters = 300", "from 2 to 256, not 300"),
        ("[cluster]\nclusters = 4.5", "from 2 to 256, not 4.5"),
        ("[fine_tune]\nepochs = -1", "epochs must be a whole number >= 0"),
        ("[fine_tune]\nlearning_rate = 0", "learning_rate must be a positive number"),
        ("[prune\n", "not valid TOML"),
    ],
)
def test_bad_recipes_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_recipe(_write(tmp_path, text))


def test_bad_flags_and_combinations() -> None:
    with pytest.raises(InputError, match=r"--prune sparsity must be in \[0, 1\), not 1.5"):
        with_flags(CompressionRecipe(), prune=1.5)
    with pytest.raises(InputError, match="--cluster clusters must be"):
        with_flags(CompressionRecipe(), cluster=1)
    with pytest.raises(InputError, match="pass --quantize none"):
        check_for(CompressionRecipe(cluster=Cluster()), "int8", "onnx")
    with pytest.raises(InputError, match="pass --format onnx"):
        check_for(CompressionRecipe(prune=Prune(0.5)), "none", "tflite")
    with pytest.raises(InputError, match="no such file"):
        load_recipe(Path("/nonexistent/recipe.toml"))


def test_compress_applies_the_steps_in_order_and_measures_each() -> None:
    model = nets.cnn()
    rng = np.random.default_rng(0)
    data = SimpleNamespace(
        validation={"x": rng.standard_normal((6, 1, 8, 8), np.float32)}, labels=None
    )
    recipe = CompressionRecipe(Prune(0.25), LowRank(size=0.5), Cluster(16))
    reference = onnxruntime_runner(model.SerializeToString())
    compressed, done = compress(model, recipe, data, reference)
    steps = [row["step"] for row in done.steps]
    assert steps == ["baseline", "prune", "low_rank", "cluster"]
    base = done.steps[0]
    assert base["mean_cosine"] == pytest.approx(1.0) and base["top1_agreement"] == 1.0
    assert [row["parameters"] for row in done.steps] == sorted(
        (row["parameters"] for row in done.steps), reverse=True
    )
    assert done.steps[-1]["bytes"] < done.steps[0]["bytes"] / 2
    assert all(row["latency_ms"] > 0 and row["peak_live_bytes"] > 0 for row in done.steps)
    ops = {n.op_type for n in compressed.graph.node}
    assert {"Gather", "MatMul"} <= ops  # clustered, factorised
    json.dumps(done.to_json())


def test_pack_from_the_command_line(tmp_path: Path) -> None:
    source = tmp_path / "cnn.onnx"
    source.write_bytes(nets.cnn().SerializeToString())
    rng = np.random.default_rng(0)
    samples = tmp_path / "samples.npz"
    np.savez(samples, x=rng.standard_normal((12, 1, 8, 8)).astype(np.float32))
    out = tmp_path / "cnn.edgerun"
    recipe = _write(tmp_path, "[low_rank]\nenergy = 0.95\n[cluster]\nclusters = 16\n")
    args = ["pack", str(source), "--device", "rpi4", "--quantize", "none", "-o", str(out)]
    assert (
        main([*args, "--calibration", str(samples), "--recipe", str(recipe), "--prune", "0.25"])
        == 0
    )
    applied = read_manifest(out).applied["compression"]
    assert applied["recipe"]["order"] == ["prune", "low_rank", "cluster"]
    assert [s["step"] for s in applied["steps"]] == ["baseline", "prune", "low_rank", "cluster"]
    session = edgerun.load(out, backend="numpy")
    feeds = nets.inputs(nets.cnn())
    assert session.run(feeds)["y"].shape == (1, 10)


def test_pack_refuses_clustering_under_int8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "cnn.onnx"
    source.write_bytes(nets.cnn().SerializeToString())
    out = tmp_path / "cnn.edgerun"
    assert main(["pack", str(source), "--device", "rpi4", "--cluster", "16", "-o", str(out)]) == 2
    assert "pass --quantize none" in capsys.readouterr().err
    assert not out.exists()


FACTORY = """
import torch
from torch import nn


def small():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 3)
    ).eval()
    model.example_inputs = (torch.zeros(1, 1, 8, 8),)
    return model
"""


def test_pack_prunes_and_fine_tunes_a_torch_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "factory_for_compression.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    labels = x[:, 0, 0, :3].argmax(axis=1)
    np.savez(tmp_path / "train.npz", input=x[:48], label=labels[:48])
    np.savez(tmp_path / "valid.npz", input=x[48:], label=labels[48:])
    out = tmp_path / "small.edgerun"
    args = ["pack", "factory_for_compression:small", "--device", "rpi4", "--quantize", "dynamic"]
    files = ["--train", str(tmp_path / "train.npz"), "--validation", str(tmp_path / "valid.npz")]
    assert main([*args, *files, "--prune", "0.5", "-o", str(out)]) == 0
    steps = read_manifest(out).applied["compression"]["steps"]
    assert [s["step"] for s in steps] == ["baseline", "prune + fine-tune", "quantize (dynamic)"]
    report = steps[1]["report"]
    assert report["layers"] == {"0": [8, 4]}
    assert len(report["fine_tune"]["losses"]) == 5
    assert steps[1]["parameters"] < steps[0]["parameters"]
    session = edgerun.load(out, backend="numpy")
    assert next(iter(session.run({"input": x[:1]}).values())).shape == (1, 3)


def test_train_needs_pruning_and_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "cnn.onnx"
    source.write_bytes(nets.cnn().SerializeToString())
    np.savez(tmp_path / "train.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    base = ["pack", str(source), "--device", "rpi4", "--quantize", "none"]
    train = ["--train", str(tmp_path / "train.npz")]
    assert main([*base, *train]) == 2
    assert "give one" in capsys.readouterr().err
    assert main([*base, *train, "--prune", "0.5"]) == 2
    assert "--train fine-tunes PyTorch models; this one is onnx" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.edgerun"))


@pytest.mark.parametrize(
    ("backend", "label"), [("numpy", "numpy"), ("estimate", "estimate for rpi4")]
)
def test_choose_fastest_measures_every_scheme(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, label: str
) -> None:
    source = tmp_path / "cnn.onnx"
    source.write_bytes(nets.cnn().SerializeToString())
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "cal.npz", x=rng.standard_normal((24, 1, 8, 8)).astype(np.float32))
    out = tmp_path / "cnn.edgerun"
    args = ["pack", str(source), "--device", "rpi4", "--choose", "fastest", "-o", str(out)]
    args += ["--choose-backend", backend, "--calibration", str(tmp_path / "cal.npz")]
    assert main([*args, "--max-accuracy-drop", "50"]) == 0
    manifest = read_manifest(out)
    choice = manifest.applied["choice"]
    candidates = choice["candidates"]
    assert set(candidates) == {"none", "fp16", "dynamic", "int8"}
    measured = {k: v for k, v in candidates.items() if "latency_ms" in v}
    assert "none" in measured
    floor = measured["none"]["latency_ms"] * (1 - MARGIN)  # quantized must beat float by this
    within = [
        k
        for k, v in measured.items()
        if k == "none" or (v["drop"] <= 50 and v["latency_ms"] < floor)
    ]
    fastest = min(within, key=lambda k: measured[k]["latency_ms"])
    assert choice["chosen"] == fastest
    assert candidates[fastest]["status"].startswith("chosen")
    scheme = (manifest.applied["quantization"] or {}).get("scheme", "none")
    assert scheme == fastest
    for name, row in measured.items():
        if row["latency_ms"] > measured["none"]["latency_ms"] and name != "none":
            assert "slower than float" in row["status"]
    assert choice["backend"] == label
    assert f"quantization chosen by latency on {label}" in capsys.readouterr().out


def test_choose_refuses_a_fixed_quantization(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "cnn.onnx"
    source.write_bytes(nets.cnn().SerializeToString())
    args = ["pack", str(source), "--device", "rpi4", "--choose", "fastest", "-q", "int8"]
    assert main(args) == 2
    assert "drop --quantize" in capsys.readouterr().err
    assert main(["pack", str(source), "--device", "rpi4", "--choose", "smallest"]) == 2
    assert "choose one of fastest" in capsys.readouterr().err


def test_choose_with_clustering_keeps_the_codebook(tmp_path: Path) -> None:
    source = tmp_path / "cnn.onnx"
    source.write_bytes(nets.cnn().SerializeToString())
    out = tmp_path / "cnn.edgerun"
    args = ["pack", str(source), "--device", "rpi4", "--choose", "fastest", "--cluster", "16"]
    assert main([*args, "-o", str(out)]) == 0
    candidates = read_manifest(out).applied["choice"]["candidates"]
    assert {k for k, v in candidates.items() if "latency_ms" in v} == {"none", "fp16"}
    assert candidates["int8"]["status"] == "not built: clustered weights keep their codebook"


@pytest.fixture(scope="module")
def digits_onnx():
    """The digits CNN (briefly trained), its simplified ONNX graph, and the test split."""
    from converters import digits
    from converters.optimise.simplify import simplify
    from converters.torch_frontend import torch_input_specs, torch_to_onnx

    model = digits.cnn(epochs=4)
    specs = torch_input_specs(model, model.example_inputs, {}, False)
    graph, _ = simplify(torch_to_onnx(model, specs))
    return model, specs, graph, digits.digits_split()


def _stored_bytes(model) -> int:
    from converters.layout import externalize

    return sum(len(b or b"") for b in externalize(model))


def _digits_accuracy(model, x: np.ndarray, y: np.ndarray, tmp_path: Path) -> float:
    from converters.compression import _write_model

    path = _write_model(model, tmp_path / f"m{len(list(tmp_path.iterdir()))}")
    session = edgerun.load(path, backend="numpy")
    logits = np.concatenate([session.run({"image": x[i : i + 1]})["logits"] for i in range(len(x))])
    return 100.0 * float(np.mean(logits.argmax(axis=1) == y))


def test_digits_steps_shrink_the_bundle_and_keep_accuracy(digits_onnx, tmp_path: Path) -> None:
    """The issue's bar: 50% channels pruned and fine-tuned within 2 points; low-rank dense
    layers and 16 clusters each within 1 point; every one stores fewer bytes."""
    from converters.optimise import cluster, lowrank, prune_torch
    from converters.optimise.simplify import simplify
    from converters.torch_frontend import torch_to_onnx

    model, specs, graph, (x, y, x_test, y_test) = digits_onnx
    base = _digits_accuracy(graph, x_test, y_test, tmp_path)
    pruned, _ = prune_torch.channels(model, 0.5)
    # 5 epochs: 3 left it 2.2 points short on an AMD EPYC (Zen 3), whose BLAS rounds the
    # training differently, and 98.9 % (the unpruned figure) after 5
    prune_torch.fine_tune(pruned, [x], y, epochs=5, learning_rate=3e-3, batch_size=64)
    variants = {
        "prune": (simplify(torch_to_onnx(pruned, specs))[0], 2.0),
        "low_rank": (lowrank.factorise(graph, energy=0.95)[0], 1.0),
        "cluster": (cluster.cluster(graph, 16)[0], 1.0),
    }
    for name, (variant, budget) in variants.items():
        assert _stored_bytes(variant) < _stored_bytes(graph), name
        assert _digits_accuracy(variant, x_test, y_test, tmp_path) >= base - budget, name
