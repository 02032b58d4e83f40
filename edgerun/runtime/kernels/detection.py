"""Detection post-processing: NonMaxSuppression."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.registry import kernel


def _corners(boxes, center_point_box):
    # -> (y_min, x_min, y_max, x_max) columns, float32 as onnxruntime computes
    b = boxes.astype(np.float32, copy=False)
    if center_point_box:
        half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
        return b[:, 1] - half_h, b[:, 0] - half_w, b[:, 1] + half_h, b[:, 0] + half_w
    y1, y2 = np.minimum(b[:, 0], b[:, 2]), np.maximum(b[:, 0], b[:, 2])
    x1, x2 = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])
    return y1, x1, y2, x2


def _suppressed_by(k, y1, x1, y2, x2, area, iou_threshold):
    """Which boxes box ``k`` suppresses: IoU strictly above the threshold; a box with no
    positive area or no overlap is never suppressed (onnxruntime's rules)."""
    ih = np.minimum(y2, y2[k]) - np.maximum(y1, y1[k])
    iw = np.minimum(x2, x2[k]) - np.maximum(x1, x1[k])
    inter = ih * iw
    union = area + area[k] - inter
    overlapping = (ih > 0) & (iw > 0) & (area > 0) & (area[k] > 0) & (union > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return overlapping & (inter / union > np.float32(iou_threshold))


def _select(corners, scores, limit, iou_threshold, score_threshold):
    """Greedy NMS for one (batch, class): kept box indices, best score first."""
    candidates = np.arange(scores.size)
    if score_threshold is not None:
        candidates = candidates[scores > score_threshold]
    # by score, descending; ties keep the lower index first
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")]
    y1, x1, y2, x2 = (c[candidates] for c in corners)
    area = (y2 - y1) * (x2 - x1)
    alive = np.ones(candidates.size, dtype=bool)
    kept = []
    for k in range(candidates.size):  # loop over kept boxes, at most `limit` of them
        if not alive[k]:
            continue
        kept.append(candidates[k])
        if len(kept) == limit:
            break
        alive &= ~_suppressed_by(k, y1, x1, y2, x2, area, iou_threshold)
    return kept


@kernel("NonMaxSuppression", since=10)
def non_max_suppression_10(
    boxes,
    scores,
    max_output_boxes_per_class=None,
    iou_threshold=None,
    score_threshold=None,
    *,
    center_point_box=0,
):
    limit = (
        0 if max_output_boxes_per_class is None else int(np.ravel(max_output_boxes_per_class)[0])
    )
    iou = 0.0 if iou_threshold is None else float(np.ravel(iou_threshold)[0])
    if not 0.0 <= iou <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou}")
    threshold = None
    if score_threshold is not None and np.size(score_threshold):
        threshold = np.float32(np.ravel(score_threshold)[0])
    if boxes.ndim != 3 or boxes.shape[2] != 4 or scores.ndim != 3:
        raise ValueError(
            f"boxes must be [B, N, 4], scores [B, C, N]; got {boxes.shape}, {scores.shape}"
        )
    selected = []
    if limit > 0:
        for b in range(scores.shape[0]):
            corners = _corners(boxes[b], center_point_box)
            for c in range(scores.shape[1]):
                s = scores[b, c].astype(np.float32, copy=False)
                selected += [(b, c, i) for i in _select(corners, s, limit, iou, threshold)]
    return np.array(selected, dtype=np.int64).reshape(-1, 3)
