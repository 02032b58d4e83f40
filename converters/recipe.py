"""What pack does to a model's numbers, as one typed value chosen from the device profile.

The profile's ``deploy`` section says how a board wants its models (``int8-static`` with
uint8 activations for a Pi 4, ``fp16`` for a Jetson); ``--quantize`` overrides the scheme.
The strings onnxruntime's quantizer wants are spelled in ``converters.quantize`` only.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

from edgerun.errors import EdgerunError
from edgerun.profiles import DeviceProfile

SCHEMES = ("none", "fp16", "dynamic", "int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
FORMATS = ("onnx", "tflite")

# The profile's names for its deployment choice -> pack's scheme
_PROFILE_SCHEMES = {
    "none": "none",
    "fp32": "none",
    "fp16": "fp16",
    "int8-dynamic": "dynamic",
    "dynamic": "dynamic",
    "int8-static": "int8",
    "int8": "int8",
}


@dataclass(frozen=True)
class QuantRecipe:
    scheme: str  # "none" | "fp16" | "dynamic" | "int8"
    activation_dtype: str  # "uint8" | "int8": static int8 activations
    weight_dtype: str  # "int8"
    per_channel: bool
    calibration_method: str  # "minmax" | "entropy" | "percentile" (onnxruntime only)
    integer_io: bool  # TFLite full integer: integer model inputs and outputs (Edge TPU)
    # 7-bit weights: x86 without VNNI sums uint8 x int8 pairs in int16, which saturates
    # (onnxruntime's documented caveat); Arm and VNNI CPUs need no such loss
    reduce_range: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "scheme": self.scheme,
            "activation_dtype": self.activation_dtype,
            "weight_dtype": self.weight_dtype,
            "per_channel": self.per_channel,
            "calibration_method": self.calibration_method,
            "integer_io": self.integer_io,
            "reduce_range": self.reduce_range,
        }


def recipe_for(
    profile: DeviceProfile, scheme: str | None = None, calibration_method: str = "minmax"
) -> QuantRecipe:
    """The profile's recipe, with ``scheme`` (from ``--quantize``) overriding its choice."""
    deploy = profile.deploy
    if scheme is None:
        if deploy.quantization not in _PROFILE_SCHEMES:
            raise EdgerunError(f"the profile's quantization {deploy.quantization!r} is unknown")
        scheme = _PROFILE_SCHEMES[deploy.quantization]
    if scheme not in SCHEMES:
        raise EdgerunError(f"unknown quantization {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if calibration_method not in CALIBRATION_METHODS:
        raise EdgerunError(
            f"unknown calibration method {calibration_method!r}; "
            f"choose one of {', '.join(CALIBRATION_METHODS)}"
        )
    integer = deploy.activation_dtype in ("uint8", "int8")
    activation = deploy.activation_dtype if integer else "uint8"  # fp profiles, --quantize int8
    return QuantRecipe(
        scheme=scheme,
        activation_dtype=activation,
        weight_dtype="int8",
        per_channel=deploy.per_channel,
        calibration_method=calibration_method,
        integer_io=deploy.integer_io and scheme == "int8",
        reduce_range=scheme == "int8" and activation == "uint8" and _int16_pair_sums(profile),
    )


# CPU feature names (profiles' and /proc/cpuinfo's) of the instructions that sum uint8 x int8
# products in int32, so that nothing saturates
_VNNI = frozenset({"avx512_vnni", "avx_vnni", "vnni"})


def _int16_pair_sums(profile: DeviceProfile) -> bool:
    features = {f.lower() for f in profile.cpu.features}
    return profile.cpu.arch == "x86_64" and not features & _VNNI


def host_saturates(recipe: QuantRecipe) -> bool:
    """Whether onnxruntime here gets this recipe's integer products wrong: uint8 activations
    times full-range int8 weights on an x86-64 CPU without VNNI, whose kernels sum the pairs
    in int16 and saturate (a Pi 4's recipe, packed on such a host)."""
    uint8_products = recipe.scheme == "dynamic" or (
        recipe.scheme == "int8" and recipe.activation_dtype == "uint8"
    )
    flags = _host_x86_flags()
    return uint8_products and not recipe.reduce_range and flags is not None and not flags & _VNNI


def _host_x86_flags() -> set[str] | None:
    """This x86-64 CPU's feature flags from /proc/cpuinfo; None on other CPUs, or where it
    cannot tell (not Linux)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return None
