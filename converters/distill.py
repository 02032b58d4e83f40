"""Knowledge distillation: train a smaller PyTorch student on a teacher's outputs.

The loss (Hinton et al., 2015) mixes the temperature-softened teacher distribution with
the hard labels: ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) +
(1 - alpha) * cross_entropy(student, label)``; the T^2 keeps the soft term's gradients on the
scale of the hard one's. The teacher's logits are computed once, in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgerun import _lazy
from edgerun.errors import InputError


@dataclass(frozen=True)
class DistillOptions:
    temperature: float = 4.0
    alpha: float = 0.7  # weight of the soft (teacher) term
    epochs: int = 20
    learning_rate: float = 3e-3
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise InputError(f"distillation temperature must be positive, not {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            raise InputError(f"distillation alpha must be in [0, 1], not {self.alpha}")
        if self.epochs < 0 or self.batch_size < 1 or not self.learning_rate > 0:
            raise InputError("distillation needs epochs >= 0, batch_size >= 1, learning_rate > 0")


def distill(
    teacher: Any,
    student: Any,
    inputs: list[np.ndarray],
    labels: np.ndarray,
    options: DistillOptions = DistillOptions(),
) -> dict[str, Any]:
    """Train ``student`` in place against ``teacher`` on ``inputs`` (one array per model input)
    and class ``labels``; returns the mean loss of each epoch."""
    torch = _lazy.require("torch")
    functional = torch.nn.functional
    tensors = [torch.from_numpy(np.ascontiguousarray(x)) for x in inputs]
    targets = torch.from_numpy(np.asarray(labels, np.int64))
    teacher.eval()
    with torch.no_grad():
        soft_targets = _first(teacher(*tensors))
    if soft_targets.shape != (len(targets), soft_targets.shape[-1]) or soft_targets.ndim != 2:
        raise InputError(
            f"the teacher's first output must be [samples, classes], not {list(soft_targets.shape)}"
        )
    t = options.temperature
    torch.manual_seed(options.seed)
    optimiser = torch.optim.Adam(student.parameters(), lr=options.learning_rate)
    generator = torch.Generator().manual_seed(options.seed)
    losses = []
    student.train()
    for _ in range(options.epochs):
        total = 0.0
        for batch in torch.randperm(len(targets), generator=generator).split(options.batch_size):
            optimiser.zero_grad()
            logits = _first(student(*(x[batch] for x in tensors)))
            soft = functional.kl_div(
                functional.log_softmax(logits / t, dim=1),
                functional.log_softmax(soft_targets[batch] / t, dim=1),
                reduction="batchmean",
                log_target=True,
            )
            hard = functional.cross_entropy(logits, targets[batch])
            loss = options.alpha * t * t * soft + (1.0 - options.alpha) * hard
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        losses.append(total / len(targets))
    student.eval()
    return {
        "temperature": t,
        "alpha": options.alpha,
        "epochs": options.epochs,
        "samples": len(targets),
        "losses": losses,
        "teacher_parameters": _parameters(teacher),
        "student_parameters": _parameters(student),
    }


def _first(output: Any) -> Any:
    return output[0] if isinstance(output, tuple | list) else output


def _parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())


def distil_source(
    teacher: Any, specs: list[Any], student: str, train: Path | None, trust_pickle: bool = False
) -> tuple[Any, dict[str, Any]]:
    """``edgerun pack TEACHER --student module:factory --train data.npz``: the teacher's
    Source with its model replaced by the student, trained against it, and the report."""
    from dataclasses import replace

    from converters.calibration import load_samples
    from converters.sources import load_source

    if teacher.framework != "torch":
        raise InputError(f"--student distils PyTorch models; this one is {teacher.framework}")
    if train is None:
        raise InputError("--student needs --train: labelled samples (an .npz with 'label')")
    pupil = load_source(student, trust_pickle)
    if pupil.framework != "torch" or not hasattr(pupil.model, "parameters"):
        raise InputError(f"--student {student}: expected a PyTorch nn.Module")
    samples, labels = load_samples(train, specs, "--train")
    if labels is None:
        raise InputError(f"--train {train}: needs a 'label' array (one class index per sample)")
    report = distill(teacher.model, pupil.model, [samples[s.name] for s in specs], labels)
    return replace(teacher, model=pupil.model), {"student": student, **report}
