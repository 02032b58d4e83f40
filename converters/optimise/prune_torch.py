"""Structured channel pruning on a PyTorch ``nn.Sequential``, so it can be fine-tuned after.

The same rule as ``prune.channels`` on ONNX graphs: each Conv2d/Linear loses the output
channels with the smallest L1 norm, and what reads them follows (BatchNorm, activations,
pooling and Dropout in between; the next Conv2d's input channels, or the next Linear's
input features, in blocks of H*W behind a Flatten). Layers whose outputs reach anything
else, and the last layer, keep their channels. ``fine_tune`` then retrains a few epochs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgerun import _lazy
from edgerun.errors import ConversionError

_PASS_THROUGH = (
    "ReLU",
    "ReLU6",
    "LeakyReLU",
    "GELU",
    "SiLU",
    "Sigmoid",
    "Tanh",
    "Hardswish",
    "Hardsigmoid",
    "ELU",
    "Dropout",
    "Dropout2d",
    "Identity",
    "MaxPool2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "AdaptiveMaxPool2d",
)


def channels(module: Any, sparsity: float | Mapping[str, float]) -> tuple[Any, dict[str, Any]]:
    """A pruned deep copy of ``module`` (an nn.Sequential; layers named by their index)."""
    nn = _lazy.require("torch").nn
    if not isinstance(module, nn.Sequential):
        raise ConversionError(
            "fine-tuning after pruning handles nn.Sequential models; "
            f"this one is {type(module).__name__} (prune without --train instead)"
        )
    module = copy.deepcopy(module)
    layers = list(module)
    before = sum(p.numel() for p in module.parameters())
    report: dict[str, Any] = {"layers": {}, "skipped": {}}
    for i, layer in enumerate(layers):
        if not isinstance(layer, nn.Conv2d | nn.Linear):
            continue
        target = sparsity.get(str(i), 0.0) if isinstance(sparsity, Mapping) else sparsity
        if target == 0.0:
            continue
        chain = _chain(layers, i)
        if isinstance(chain, str):
            report["skipped"][str(i)] = chain
            continue
        count = layer.weight.shape[0]
        keep = _keep(layer.weight.detach().numpy(), target)
        _prune(layer, chain, keep)
        report["layers"][str(i)] = [count, len(keep)]
    report["parameters"] = [before, sum(p.numel() for p in module.parameters())]
    return module, report


def _keep(weight: np.ndarray, sparsity: float) -> np.ndarray:
    count = weight.shape[0]
    kept = max(1, round(count * (1.0 - sparsity)))
    norms = np.abs(weight.reshape(count, -1)).sum(axis=1)
    return np.sort(np.argsort(-norms, kind="stable")[:kept])


def _chain(layers: list[Any], i: int) -> list[Any] | str:
    """The modules after layer ``i`` up to and including the next weighted layer."""
    nn = _lazy.require("torch").nn
    conv = isinstance(layers[i], nn.Conv2d)
    if conv and layers[i].groups != 1:
        return "grouped convolution"
    chain: list[Any] = []
    flattened = False
    for layer in layers[i + 1 :]:
        chain.append(layer)
        kind = type(layer).__name__
        if isinstance(layer, nn.Conv2d) and not flattened:
            return chain if layer.groups == 1 else "the next layer is a grouped convolution"
        if isinstance(layer, nn.Linear) and (flattened or not conv):
            return chain
        if isinstance(layer, nn.Flatten) and conv and layer.start_dim == 1 and not flattened:
            flattened = True
        elif isinstance(layer, nn.BatchNorm2d | nn.BatchNorm1d) and not flattened:
            continue
        elif kind not in _PASS_THROUGH or (flattened and "Pool" in kind):
            return f"its output goes to {kind}"
    return "it is the last layer"


def _prune(layer: Any, chain: list[Any], keep: np.ndarray) -> None:
    torch = _lazy.require("torch")
    nn = torch.nn
    reader = chain[-1]
    count = layer.weight.shape[0]
    if isinstance(reader, nn.Linear) and reader.in_features % count:
        raise ConversionError(f"{reader} reads {reader.in_features} features from {count} channels")
    block = reader.in_features // count if isinstance(reader, nn.Linear) else 1  # H*W per channel
    index = torch.from_numpy(keep)
    rows = (index[:, None] * block + torch.arange(block)[None, :]).reshape(-1)
    with torch.no_grad():
        _select(layer, "weight", index, 0)
        if layer.bias is not None:
            _select(layer, "bias", index, 0)
        for module in chain[:-1]:
            if isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
                for name in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(module, name, None) is not None:
                        _select(module, name, index, 0)
                module.num_features = len(keep)
        _select(reader, "weight", rows, 1)
    if isinstance(layer, nn.Conv2d):
        layer.out_channels = len(keep)
    else:
        layer.out_features = len(keep)
    if isinstance(reader, nn.Conv2d):
        reader.in_channels = len(keep)
    else:
        reader.in_features = len(rows)


def _select(module: Any, name: str, index: Any, axis: int) -> None:
    torch = _lazy.require("torch")
    value = getattr(module, name).index_select(axis, index).clone()
    if isinstance(getattr(module, name), torch.nn.Parameter):
        setattr(module, name, torch.nn.Parameter(value))
    else:
        module.register_buffer(name, value)


def fine_tune(
    module: Any,
    inputs: list[np.ndarray],
    labels: np.ndarray,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int = 0,
) -> list[float]:
    """Train ``module`` in place on ``inputs`` (one array per model input) and class
    ``labels`` with cross-entropy on its first output; the mean loss of each epoch."""
    torch = _lazy.require("torch")
    torch.manual_seed(seed)
    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    targets = torch.from_numpy(labels.astype(np.int64))
    optimiser = torch.optim.Adam(module.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    module.train()
    for _ in range(epochs):
        total = 0.0
        for batch in torch.randperm(len(targets), generator=generator).split(batch_size):
            optimiser.zero_grad()
            output = module(*(t[batch] for t in tensors))
            output = output[0] if isinstance(output, tuple | list) else output
            loss = torch.nn.functional.cross_entropy(output, targets[batch])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(targets))
    module.eval()
    return losses
