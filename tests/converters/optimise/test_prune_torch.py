"""Channel pruning on nn.Sequential before fine-tuning, against the unpruned module."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from converters.optimise import prune_torch
from edgerun.errors import ConversionError


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 1.5)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net.eval()


def _kill(net: nn.Sequential, layer: int, reader: int, channels: list[int], block: int = 1) -> None:
    """Make ``channels`` of ``layer`` the weakest and unread, so removing them is exact."""
    with torch.no_grad():
        net[layer].weight[channels] = 0
        net[layer].bias[channels] = 0
        rows = (torch.tensor(channels)[:, None] * block + torch.arange(block)).reshape(-1)
        net[reader].weight[:, rows] = 0


def test_pruning_unread_channels_is_exact() -> None:
    net = _net()
    _kill(net, 0, 3, [1, 2, 5, 7])
    _kill(net, 3, 7, list(range(0, 16, 2)), block=16)
    _kill(net, 7, 9, list(range(16)))
    pruned, report = prune_torch.channels(net, 0.5)
    assert report["layers"] == {"0": [8, 4], "3": [16, 8], "7": [32, 16]}
    assert report["skipped"] == {"9": "it is the last layer"}
    assert pruned[1].running_mean.shape == (4,) and pruned[1].num_features == 4
    assert pruned[3].weight.shape == (8, 4, 3, 3) and pruned[7].weight.shape == (16, 128)
    assert pruned[9].in_features == 16 and net[9].in_features == 32  # the source is untouched
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        np.testing.assert_allclose(pruned(x).numpy(), net(x).numpy(), rtol=1e-5, atol=1e-5)
    assert report["parameters"][1] == sum(p.numel() for p in pruned.parameters())


def test_per_layer_targets_and_refusals() -> None:
    pruned, report = prune_torch.channels(_net(), {"3": 0.25})
    assert report["layers"] == {"3": [16, 12]}
    assert pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ConversionError, match=r"handles nn\.Sequential"):
        prune_torch.channels(nn.Linear(3, 4), 0.5)


def test_fine_tuning_lowers_the_loss() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 1, 8, 8)).astype(np.float32)
    labels = (x.reshape(96, -1)[:, :10].argmax(axis=1)).astype(np.int64)
    pruned, _ = prune_torch.channels(_net(), 0.5)
    losses = prune_torch.fine_tune(pruned, [x], labels, epochs=4, learning_rate=3e-3, batch_size=32)
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert not pruned.training
