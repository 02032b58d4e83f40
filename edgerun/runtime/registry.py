"""The kernel registry: (domain, op type, since-version) -> one small function.

Filled by the ``@kernel`` decorator as kernel modules import (STYLE.md rule 2): nothing is
kept by hand, a duplicate key is an error at import, and resolution takes the newest
version not newer than the model's opset for that domain.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

Kernel = Callable[..., Any]


@dataclass(frozen=True)
class KernelInfo:
    fn: Kernel
    domain: str
    op_type: str
    since: int
    needs_scope: bool  # control flow: receives ``scope=`` (outer values its subgraphs read)
    needs_outputs: bool  # receives ``outputs=``: which of the node's outputs are wanted

    # Read off the signature on first use, not at registration: inspecting all ~400 kernels
    # as their modules import cost ~30 ms of every model's load.
    @cached_property
    def attributes(self) -> frozenset[str]:
        """The keyword-only parameters: the ONNX attribute names the kernel takes."""
        return frozenset(
            p.name
            for p in inspect.signature(self.fn).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in ("scope", "outputs")
        )

    @cached_property
    def variadic_attributes(self) -> bool:
        """Takes ``**kwargs``, so accepts any attribute."""
        params = inspect.signature(self.fn).parameters.values()
        return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


REGISTRY: dict[tuple[str, str], dict[int, KernelInfo]] = {}
_loaded = False


def kernel(
    op_type: str, since: int, domain: str = "", scope: bool = False, outputs: bool = False
) -> Callable[[Kernel], Kernel]:
    """Register ``fn`` as op ``op_type`` of ``domain`` from opset ``since`` on.

    ``outputs=True``: the kernel gets ``outputs=`` (one bool per node output, False where the
    model does not use it), for ops whose output count is data (Split) or whose optional
    outputs cost time (MaxPool's Indices).
    """

    def register(fn: Kernel) -> Kernel:
        versions = REGISTRY.setdefault((domain, op_type), {})
        if since in versions:
            raise RuntimeError(
                f"duplicate kernel for {domain or 'ai.onnx'}::{op_type} since {since}"
            )
        versions[since] = KernelInfo(fn, domain, op_type, since, scope, outputs)
        return fn

    return register


def load_all() -> None:
    """Import every kernel module once, which fills REGISTRY."""
    global _loaded
    if _loaded:
        return
    from edgerun.runtime import kernels

    for module in pkgutil.iter_modules(kernels.__path__):
        importlib.import_module(f"{kernels.__name__}.{module.name}")
    _loaded = True


def resolve(domain: str, op_type: str, opset: int) -> KernelInfo | None:
    """The kernel for ``op_type`` at ``opset``: the newest since-version <= opset."""
    load_all()
    versions = REGISTRY.get((domain, op_type))
    if not versions:
        return None
    eligible = [v for v in versions if v <= opset]
    return versions[max(eligible)] if eligible else None
