"""``edgerun pack``: convert, optimise and quantize a model for a board, write a bundle."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import typer

from edgerun.cli.render import console, emit_json, table
from edgerun.cli.run import _pairs

if TYPE_CHECKING:
    from converters.pack import PackResult


def pack(
    ctx: typer.Context,
    model: str = typer.Argument(
        ...,
        help="A .pt/.pt2/.onnx/.tflite/.keras/.h5 file, a SavedModel folder, or module:factory.",
    ),
    device: str = typer.Option(..., "--device", "-d", help="Device profile name or TOML path."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Bundle path (default: MODEL.DEVICE.edgerun here)."
    ),
    quantize: Optional[str] = typer.Option(
        None, "--quantize", "-q", help="none|fp16|dynamic|int8 (default: the profile's)."
    ),
    model_format: Optional[str] = typer.Option(
        None, "--format", help="onnx|tflite (default: the profile's)."
    ),
    calibration: Optional[Path] = typer.Option(
        None, "--calibration", help="Samples: an .npz (one array per input) or a folder of .npy."
    ),
    validation: Optional[Path] = typer.Option(
        None, "--validation", help="Held-out samples (optional 'label' array) for the report."
    ),
    calibration_method: str = typer.Option(
        "minmax", "--calibration-method", help="minmax|entropy|percentile."
    ),
    input_shape: list[str] = typer.Option(
        [], "--input-shape", help="name=1x3x224x224 (repeatable)."
    ),
    dynamic_batch: bool = typer.Option(False, "--dynamic-batch", help="Keep the batch dim free."),
    max_accuracy_drop: Optional[float] = typer.Option(
        None, "--max-accuracy-drop", help="Fail when accuracy drops more (points)."
    ),
    trust_pickle: bool = typer.Option(
        False, "--trust-pickle", help="Allow a pickled .pt (unpickling runs its code)."
    ),
    opset: Optional[int] = typer.Option(None, "--opset", help="ONNX opset for the export."),
    recipe: Optional[Path] = typer.Option(
        None, "--recipe", help="Compression recipe TOML: [prune], [low_rank], [cluster]."
    ),
    prune: Optional[float] = typer.Option(
        None, "--prune", help="Remove this share of each layer's channels (0-1)."
    ),
    low_rank: Optional[float] = typer.Option(
        None, "--low-rank", help="Factorise dense/1x1 layers keeping this SVD energy (0-1]."
    ),
    cluster: Optional[int] = typer.Option(
        None, "--cluster", help="Cluster weights to this many values (codebook + indices)."
    ),
    train: Optional[Path] = typer.Option(
        None, "--train", help="Labelled .npz: fine-tune a pruned PyTorch model on it."
    ),
    student: Optional[str] = typer.Option(
        None, "--student", help="module:factory: a smaller model distilled from MODEL on --train."
    ),
    choose: Optional[str] = typer.Option(
        None, "--choose", help="fastest: build none/fp16/dynamic/int8, keep the fastest here."
    ),
    choose_backend: str = typer.Option(
        "numpy",
        "--choose-backend",
        help="Backend --choose measures on, or 'estimate' (roofline for --device's profile).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary."),
) -> None:
    """Pack a trained model for a board: convert, optimise, quantize, check accuracy.

    Example:  edgerun pack converters.digits:cnn --device rpi4 --calibration digits-calibration.npz
    """
    from converters.pack import PackOptions
    from converters.pack import pack as run_pack

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ INFO/WARNING lines
    from edgerun.inference import parse_shape

    options = PackOptions(
        device=device,
        output=output,
        quantize=quantize,
        format=model_format,
        calibration=calibration,
        validation=validation,
        calibration_method=calibration_method,
        input_shapes={k: parse_shape(v) for k, v in _pairs(input_shape, "--input-shape").items()},
        dynamic_batch=dynamic_batch,
        max_accuracy_drop=max_accuracy_drop,
        trust_pickle=trust_pickle,
        opset=opset,
        compression=_compression(recipe, prune, low_rank, cluster),
        train=train,
        choose=choose,
        choose_backend=choose_backend,
        student=student,
    )
    debug = bool(ctx.find_root().params.get("debug"))
    with (
        _stages(not as_json) as progress,
        _native_stderr_silenced(not debug),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # pack returns its own warnings; shown below
        result = run_pack(model, options, progress)
    for message in result.warnings:
        print(f"edgerun: warning: {message}", file=sys.stderr)
    if as_json:
        emit_json(_summary(result))
        return
    _render(result)


def _compression(
    recipe: Path | None, prune: float | None, low_rank: float | None, cluster: int | None
) -> Any:
    from converters.compression import CompressionRecipe, load_recipe, with_flags

    base = load_recipe(recipe) if recipe is not None else CompressionRecipe()
    return with_flags(base, prune, low_rank, cluster) or None


@contextmanager
def _stages(wanted: bool) -> Iterator[Any]:
    """One spinner line per stage on a terminal's stderr; nothing in pipes or with --json."""
    if not (wanted and sys.stderr.isatty()):
        yield None
        return
    from rich.console import Console

    # its own handle on the terminal, so silencing file descriptor 2 leaves it visible
    with (
        os.fdopen(os.dup(sys.stderr.fileno()), "w") as terminal,
        Console(file=terminal).status("packing") as status,
    ):
        yield lambda stage: status.update(f"packing: {stage}")


@contextmanager
def _native_stderr_silenced(wanted: bool) -> Iterator[None]:
    """TensorFlow's converter, LiteRT and torch print from C++ straight to file descriptor 2
    ("INFO: Created TensorFlow Lite XNNPACK delegate", converter statistics); the CLI says
    what matters itself. Python errors still surface: they are raised, and printed after."""
    if not wanted:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _summary(result: PackResult) -> dict[str, Any]:
    m = result.manifest
    return {
        "bundle": str(result.path),
        "size": result.path.stat().st_size,
        "format": m.model_format,
        "device": (m.profile or {}).get("name"),
        "applied": m.applied,
        "accuracy": m.accuracy,
        "inputs": [s.to_json() for s in m.inputs],
        "outputs": [s.to_json() for s in m.outputs],
        "warnings": result.warnings,
        "seconds": result.seconds,
    }


def _render(result: PackResult) -> None:
    out = console()
    m = result.manifest
    q = m.applied.get("quantization") or {}
    scheme = q.get("scheme", "none")
    out.print(f"packed {result.path} ({result.path.stat().st_size:,} bytes)")
    out.print(
        f"format: {m.model_format}; quantization: {scheme}"
        + (f" ({q['activation_dtype']} activations)" if scheme == "int8" else "")
        + f"; calibration samples: {m.applied.get('calibration_samples', 0)}"
    )
    accuracy = m.accuracy or {}
    out.print(
        f"accuracy against the source on {accuracy.get('samples')} samples "
        f"({accuracy.get('validation')}):"
    )
    rows = []
    source = accuracy.get("source_label_accuracy")
    for backend, result_ in (accuracy.get("backends") or {}).items():
        for name, a in result_["outputs"].items():
            rows.append(
                [
                    backend,
                    name,
                    f"{a['max_abs_error']:.4g}",
                    f"{a['mean_cosine']:.6f}",
                    _percent(a["top1_agreement"]),
                    _percent(result_["label_accuracy"]),
                    _percent(source),
                ]
            )
    columns = ["backend", "output", "max abs err", "cosine", "top-1 agree", "accuracy", "source"]
    out.print(table(None, columns, rows))
    for backend, why in (accuracy.get("skipped") or {}).items():
        out.print(f"not checked on {backend}: {why}")
    steps = (m.applied.get("compression") or {}).get("steps")
    if steps:
        out.print("compression, measured after each step on the numpy runtime:")
        columns = ["step", "parameters", "bytes", "latency ms", "peak live", "accuracy", "drop"]
        out.print(table(None, columns, [_step_row(step) for step in steps]))
    choice = m.applied.get("choice")
    if choice:
        out.print(f"quantization chosen by latency on {choice['backend']} here:")
        columns = ["scheme", "latency ms", "bytes", "accuracy", "drop", "status"]
        rows = [_choice_row(k, v) for k, v in choice["candidates"].items()]
        out.print(table(None, columns, rows))


def _step_row(step: dict[str, Any]) -> list[str]:
    drop = step.get("drop")
    return [
        step["step"],
        f"{step['parameters']:,}",
        f"{step['bytes']:,}",
        f"{step['latency_ms']:.3f}",
        "" if step.get("peak_live_bytes") is None else f"{step['peak_live_bytes']:,}",
        _percent(step.get("label_accuracy")),
        "" if drop is None else f"{drop:.2f}",
    ]


def _choice_row(scheme: str, row: dict[str, Any]) -> list[str]:
    if "latency_ms" not in row:
        return [scheme, "", "", "", "", row["status"]]
    drop = row.get("drop")
    return [
        scheme,
        f"{row['latency_ms']:.3f}",
        f"{row['bytes']:,}",
        _percent(row.get("label_accuracy")),
        "" if drop is None else f"{drop:.2f}",
        row["status"],
    ]


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.2f}%"


def register(app: typer.Typer) -> None:
    app.command("pack")(pack)
