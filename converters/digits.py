"""The packing example: a small CNN trained on scikit-learn's digits when it is built.

The data ships inside scikit-learn, so nothing downloads. ``cnn`` is a factory for
``edgerun pack converters.digits:cnn``; ``python -m converters.digits FOLDER`` writes the
calibration samples and the labelled validation set that go with it:

    python -m converters.digits .
    edgerun pack converters.digits:cnn --device rpi4 \\
        --calibration digits-calibration.npz --validation digits-validation.npz
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

TEST_SHARE = 0.2
SEED = 0


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train images, train labels, test images, test labels); images N x 1 x 8 x 8 in [0, 1]."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(images))
    test = order[: int(len(images) * TEST_SHARE)]
    train = order[len(test) :]
    return images[train], labels[train], images[test], labels[test]


def cnn(epochs: int = 12):  # -> torch.nn.Module (torch is imported here, not at module load)
    """A conv-BN-ReLU classifier for 8x8 digits, trained now (seeded: same weights each time)."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 10),
    )
    x, y, _, _ = digits_split()
    inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs), generator=generator).split(64):
            optimiser.zero_grad()
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            loss.backward()
            optimiser.step()
    model.eval()
    model.example_inputs = (torch.zeros(1, 1, 8, 8),)
    model.input_names = ["image"]
    model.output_names = ["logits"]
    return model


def student():  # -> torch.nn.Module, untrained
    """A smaller digits classifier (about a quarter of ``cnn``'s parameters) to distil into."""
    import torch
    from torch import nn

    torch.manual_seed(SEED)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 10),
    )
    model.example_inputs = (torch.zeros(1, 1, 8, 8),)
    model.input_names = ["image"]
    model.output_names = ["logits"]
    return model


def write_data(folder: Path, calibration_samples: int = 256) -> tuple[Path, Path]:
    """Calibration images (from the training split) and the labelled test split."""
    x_train, _, x_test, y_test = digits_split()
    folder.mkdir(parents=True, exist_ok=True)
    calibration = folder / "digits-calibration.npz"
    validation = folder / "digits-validation.npz"
    np.savez(calibration, image=x_train[:calibration_samples])
    np.savez(validation, image=x_test, label=y_test)
    return calibration, validation


def write_train(folder: Path) -> Path:
    """The labelled training split, for ``--train`` (fine-tuning after pruning)."""
    x_train, y_train, _, _ = digits_split()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "digits-train.npz"
    np.savez(path, image=x_train, label=y_train)
    return path


if __name__ == "__main__":
    for path in write_data(Path(sys.argv[1] if len(sys.argv) > 1 else ".")):
        print(path)
