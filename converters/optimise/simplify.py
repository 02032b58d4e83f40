"""Graph simplification for ONNX: constant folding, BatchNorm folded into Conv, dead code.

onnxslim does it (maintained, pure Python over onnx; its fusions include Conv+BatchNorm
and Conv+Add), chosen over onnxoptimizer (no wheels for new Pythons at times) and hand
rules; the model is checked by onnx's checker before and after, so a bad rewrite is caught
here rather than on the board.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

from edgerun import _lazy
from edgerun.errors import ConversionError


def simplify(model: Any) -> tuple[Any, dict[str, Any]]:
    """The simplified model and what changed (op counts before and after)."""
    onnxslim = _lazy.require("onnxslim")
    check(model, "before simplification")
    before = _op_counts(model)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            slim = onnxslim.slim(model)
    except Exception as exc:  # onnxslim's failures come in many types
        raise ConversionError(f"onnxslim could not simplify the model: {exc}") from exc
    check(slim, "after onnxslim")
    after = _op_counts(slim)
    folded = before.get("BatchNormalization", 0) - after.get("BatchNormalization", 0)
    report = {
        "tool": f"onnxslim {onnxslim.__version__}",
        "nodes_before": sum(before.values()),
        "nodes_after": sum(after.values()),
        "batchnorm_folded": folded,
        "batchnorm_left": after.get("BatchNormalization", 0),
    }
    return slim, report


def check(model: Any, when: str) -> None:
    onnx = _lazy.require("onnx")
    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"the ONNX model is invalid {when}: {_first(exc)}") from exc


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]


def _op_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
