"""QuantRecipe: 7-bit weights where the target sums uint8 x int8 pairs in int16, and pack
not trusting onnxruntime where this host does."""

from __future__ import annotations

import pytest

from converters import recipe as recipe_module
from converters.recipe import host_saturates, recipe_for
from edgerun.profiles import load_profile


@pytest.mark.parametrize(("device", "reduced"), [("rpi4", False), ("x86-64-avx2", True)])
def test_reduce_range_follows_the_target(device, reduced):
    assert recipe_for(load_profile(device), "int8").reduce_range is reduced


NO_VNNI, VNNI = {"avx2", "fma"}, {"avx2", "fma", "avx512_vnni"}


@pytest.mark.parametrize(
    ("device", "scheme", "flags", "saturates"),
    [
        ("rpi4", "int8", NO_VNNI, True),  # uint8 activations, full-range weights
        ("rpi4", "dynamic", NO_VNNI, True),  # DynamicQuantizeLinear makes uint8
        ("rpi4", "int8", VNNI, False),
        ("rpi4", "int8", {"avx2", "avx_vnni"}, False),
        ("rpi4", "int8", None, False),  # not x86-64, or cannot tell
        ("rpi4", "fp16", NO_VNNI, False),
        ("x86-64-avx2", "int8", NO_VNNI, False),  # reduce_range: 7-bit weights
    ],
)
def test_host_saturates(monkeypatch, device, scheme, flags, saturates):
    monkeypatch.setattr(recipe_module, "_host_x86_flags", lambda: flags)
    assert host_saturates(recipe_for(load_profile(device), scheme)) is saturates
