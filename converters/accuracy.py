"""The accuracy report: the packed model against its source, on held-out samples.

Per output: the largest absolute error, the mean cosine similarity, and for classifier
outputs (``[1, classes]``) how often the top-1 class agrees; with labels, both models'
accuracy. ``drop`` is the number ``--max-accuracy-drop`` is held to, in points: the loss of
label accuracy when labels are given, else the share of top-1 disagreements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from converters.calibration import Samples, count, sample

Runner = Callable[[dict[str, np.ndarray]], list[np.ndarray]]  # feeds -> outputs, in order
Outputs = list[list[np.ndarray]]  # per sample, per output


def collect(run: Runner, samples: Samples) -> Outputs:
    return [[np.asarray(o) for o in run(sample(samples, i))] for i in range(count(samples))]


def is_classifier(output: np.ndarray) -> bool:
    return output.ndim == 2 and output.shape[0] == 1 and output.shape[1] >= 2


def output_agreement(reference: Outputs, packed: Outputs, index: int) -> dict[str, float | None]:
    ref = [np.asarray(r[index], np.float64) for r in reference]
    got = [np.asarray(p[index], np.float64) for p in packed]
    errors = [float(np.max(np.abs(r - g), initial=0.0)) for r, g in zip(ref, got, strict=True)]
    cosines = [_cosine(r, g) for r, g in zip(ref, got, strict=True)]
    top1 = None
    if all(is_classifier(r) for r in ref):
        top1 = float(np.mean([np.argmax(r) == np.argmax(g) for r, g in zip(ref, got, strict=True)]))
    return {
        "max_abs_error": max(errors, default=0.0),
        "mean_cosine": float(np.mean(cosines)) if cosines else 1.0,
        "top1_agreement": top1,
    }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norms)


def label_accuracy(outputs: Outputs, labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of the first classifier output against ``labels``."""
    if labels is None or not outputs:
        return None
    first = next((i for i, o in enumerate(outputs[0]) if is_classifier(o)), None)
    if first is None:
        return None
    predicted = np.array([int(np.argmax(o[first])) for o in outputs])
    return float(np.mean(predicted == labels))


def report(
    names: list[str],
    reference: Outputs,
    packed: dict[str, Outputs],
    labels: np.ndarray | None,
) -> dict[str, Any]:
    """The manifest's ``accuracy`` section (without its ``golden`` part)."""
    source_accuracy = label_accuracy(reference, labels)
    backends: dict[str, object] = {}
    drops = []
    for backend, outputs in packed.items():
        agreement = {name: output_agreement(reference, outputs, i) for i, name in enumerate(names)}
        accuracy = label_accuracy(outputs, labels)
        backends[backend] = {"outputs": agreement, "label_accuracy": accuracy}
        drops.append(_drop(source_accuracy, accuracy, agreement))
    known = [d for d in drops if d is not None]
    return {
        "samples": len(reference),
        "source_label_accuracy": source_accuracy,
        "backends": backends,
        "drop": max(known) if known else None,
    }


def _drop(
    source: float | None, packed: float | None, agreement: dict[str, dict[str, float | None]]
) -> float | None:
    if source is not None and packed is not None:
        return round(100.0 * (source - packed), 4)
    top1 = [a["top1_agreement"] for a in agreement.values() if a["top1_agreement"] is not None]
    return round(100.0 * (1.0 - min(top1)), 4) if top1 else None


def golden_tolerance(expected: Outputs, others: list[Outputs], scheme: str) -> list[float]:
    """Per output, the largest difference ``verify`` accepts on a board.

    Another BLAS sums in another order, and a quantized model may then round one step
    differently, so: twice the largest disagreement seen between backends here, and at
    least a share of the output's magnitude (1e-4 in float32, 1e-2 for reduced precision).
    """
    share = 1e-4 if scheme == "none" else 1e-2
    tolerances = []
    for i in range(len(expected[0]) if expected else 0):
        scale = max(float(np.max(np.abs(e[i]), initial=0.0)) for e in expected)
        seen = [
            float(np.max(np.abs(np.asarray(e[i], np.float64) - o[i]), initial=0.0))
            for other in others
            for e, o in zip(expected, other, strict=True)
        ]
        tolerances.append(max(2.0 * max(seen, default=0.0), share * max(scale, 1.0)))
    return tolerances
