"""Training losses that appear in exported graphs: NegativeLogLikelihoodLoss and
SoftmaxCrossEntropyLoss."""

from __future__ import annotations

import numpy as np

from edgerun.runtime.registry import kernel


def _compute_dtype(dtype):
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float32)


def _nll(x, target, weight, ignore_index, reduction):
    # x [N, C, d1...] (already in the compute dtype), target [N, d1...]
    if reduction not in ("none", "sum", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}")
    target = np.asarray(target).astype(np.int64, copy=False)
    ignored = None if ignore_index is None else target == ignore_index
    safe = target if ignored is None else np.where(ignored, 0, target)  # any valid class
    if safe.size and (safe.min() < 0 or safe.max() >= x.shape[1]):
        raise ValueError(f"a target is outside [0, {x.shape[1]}) and not ignore_index")
    picked = np.take_along_axis(x, safe[:, None], axis=1)[:, 0]
    w = np.ones_like(picked) if weight is None else weight.astype(x.dtype)[safe]
    if ignored is not None:
        w = np.where(ignored, x.dtype.type(0), w)
    loss = -picked * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return np.sum(loss)
    return np.sum(loss) / np.sum(w)


@kernel("NegativeLogLikelihoodLoss", since=12)
def negative_log_likelihood_loss_12(
    input, target, weight=None, *, ignore_index=None, reduction="mean"
):
    x = input.astype(_compute_dtype(input.dtype), copy=False)
    loss = _nll(x, target, weight, ignore_index, reduction)
    return np.asarray(loss).astype(input.dtype, copy=False)


@kernel("SoftmaxCrossEntropyLoss", since=12)
def softmax_cross_entropy_loss_12(
    scores, labels, weights=None, *, ignore_index=None, reduction="mean"
):
    x = scores.astype(_compute_dtype(scores.dtype), copy=False)
    shifted = x - np.max(x, axis=1, keepdims=True)
    log_prob = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    loss = _nll(log_prob, labels, weights, ignore_index, reduction)
    return (
        np.asarray(loss).astype(scores.dtype, copy=False),
        log_prob.astype(scores.dtype, copy=False),
    )
