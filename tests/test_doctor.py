"""edgerun.doctor: CPU parsing on recorded /proc/cpuinfo samples, profile matching, the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgerun import doctor
from edgerun._lazy import available
from edgerun.doctor import CpuInfo, closest_profile, parse_cpuinfo, parse_sysctl
from edgerun.errors import ProfileError
from edgerun.profiles import DeviceProfile, list_profiles, profile_from_dict

# Raspberry Pi 4 Model B, 64-bit Raspberry Pi OS (Cortex-A72: ARMv8.0, NEON only).
RPI4_AARCH64 = "".join(
    f"""processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

"""
    for i in range(4)
) + (
    "Hardware\t: BCM2835\n"
    "Revision\t: c03114\n"
    "Serial\t\t: 10000000a1b2c3d4\n"
    "Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n"
)

# Raspberry Pi 5, 64-bit (Cortex-A76: ARMv8.2 with fp16 arithmetic and dot product).
RPI5_AARCH64 = "".join(
    f"""processor\t: {i}
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

"""
    for i in range(4)
) + (
    "Revision\t: d04170\nSerial\t\t: 1a2b3c4d5e6f7a8b\nModel\t\t: Raspberry Pi 5 Model B Rev 1.0\n"
)

# Raspberry Pi 3 Model B, 32-bit Raspberry Pi OS: an ARMv8 core seen as ARMv7 by the kernel.
RPI3_ARMV7L = "".join(
    f"""processor\t: {i}
model name\t: ARMv7 Processor rev 4 (v7l)
BogoMIPS\t: 38.40
Features\t: half thumb fastmult vfp edsp neon vfpv3 tls vfpv4 idiva idivt vfpd32 lpae \
evtstrm crc32
CPU implementer\t: 0x41
CPU architecture: 7
CPU variant\t: 0x0
CPU part\t: 0xd03
CPU revision\t: 4

"""
    for i in range(4)
) + (
    "Hardware\t: BCM2835\n"
    "Revision\t: a02082\n"
    "Serial\t\t: 00000000c3d4e5f6\n"
    "Model\t\t: Raspberry Pi 3 Model B Rev 1.2\n"
)

_ICELAKE_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr "
    "sse sse2 ss ht syscall nx pdpe1gb rdtscp lm constant_tsc rep_good nopl xtopology "
    "nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq ssse3 fma cx16 pcid sse4_1 "
    "sse4_2 x2apic movbe popcnt tsc_deadline_timer aes xsave avx f16c rdrand hypervisor lahf_lm "
    "abm 3dnowprefetch invpcid_single ssbd ibrs ibpb stibp ibrs_enhanced fsgsbase tsc_adjust "
    "bmi1 avx2 smep bmi2 erms invpcid avx512f avx512dq rdseed adx smap avx512ifma clflushopt "
    "clwb avx512cd sha_ni avx512bw avx512vl xsaveopt xsavec xgetbv1 xsaves wbnoinvd ida arat "
    "avx512vbmi pku ospke avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme "
    "avx512_vpopcntdq rdpid md_clear flush_l1d arch_capabilities"
)
# AWS m6i (Ice Lake server, AVX-512 VNNI), two vCPUs.
XEON_ICELAKE = "".join(
    f"""processor\t: {i}
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
stepping\t: 6
microcode\t: 0xd0003a5
cpu MHz\t\t: 2899.970
cache size\t: 55296 KB
physical id\t: 0
siblings\t: 2
core id\t\t: 0
cpu cores\t: 1
flags\t\t: {_ICELAKE_FLAGS}
bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs mmio_stale_data eibrs_pbrsb
bogomips\t: 5799.94
clflush size\t: 64
address sizes\t: 46 bits physical, 48 bits virtual

"""
    for i in range(2)
)

# Sapphire Rapids adds AVX-VNNI and AMX (amx_tile is the one profiles call "amx").
XEON_SPR = XEON_ICELAKE.replace("Platinum 8375C CPU @ 2.90GHz", "Platinum 8488C").replace(
    "avx512_vnni", "avx512_vnni avx_vnni avx512_bf16 amx_bf16 avx512_fp16 amx_tile amx_int8"
)

CPU_SAMPLES = {
    "rpi4-aarch64": (
        RPI4_AARCH64,
        "aarch64",
        ("neon", "asimd"),
        "Raspberry Pi 4 Model B Rev 1.4",
        4,
    ),
    "rpi5-aarch64": (
        RPI5_AARCH64,
        "aarch64",
        ("neon", "asimd", "fp16", "dotprod"),
        "Raspberry Pi 5 Model B Rev 1.0",
        4,
    ),
    "rpi3-armv7l": (RPI3_ARMV7L, "armv7l", ("neon",), "ARMv7 Processor rev 4 (v7l)", 4),
    "xeon-icelake": (
        XEON_ICELAKE,
        "x86_64",
        ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni"),
        "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz",
        2,
    ),
    "xeon-sapphire-rapids": (
        XEON_SPR,
        "x86_64",
        (
            "sse4_2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512_vnni",
            "avx_vnni",
            "amx",
        ),
        "Intel(R) Xeon(R) Platinum 8488C",
        2,
    ),
}


@pytest.mark.parametrize("sample", CPU_SAMPLES.keys())
@pytest.mark.parametrize("machine", [None, "given"])
def test_parse_cpuinfo(sample: str, machine: str | None) -> None:
    text, arch, features, model, cores = CPU_SAMPLES[sample]
    info = parse_cpuinfo(text, arch if machine else None)
    assert (info.arch, info.features, info.model, info.cores) == (arch, features, model, cores)
    assert set(info.features) <= set(doctor.VOCABULARY)


def test_a_feature_counts_only_if_every_core_has_it() -> None:
    big_little = RPI5_AARCH64.replace("asimddp", "", 1)
    assert "dotprod" not in parse_cpuinfo(big_little).features


@pytest.mark.parametrize(
    ("machine", "bits", "arch"),
    [
        ("aarch64", 64, "aarch64"),
        ("arm64", 64, "aarch64"),
        ("aarch64", 32, "armv7l"),  # 64-bit kernel, 32-bit Raspberry Pi OS userland
        ("armv8l", 32, "armv7l"),
        ("armv7l", 32, "armv7l"),
        ("AMD64", 64, "x86_64"),
        ("x86_64", 64, "x86_64"),
        ("riscv64", 64, "riscv64"),
    ],
)
def test_normalise_arch(machine: str, bits: int, arch: str) -> None:
    assert doctor.normalise_arch(machine, bits) == arch


def test_parse_sysctl_apple_silicon() -> None:
    text = (
        "hw.ncpu: 8\n"
        "hw.optional.neon: 1\n"
        "hw.optional.arm.FEAT_FP16: 1\n"
        "hw.optional.arm.FEAT_DotProd: 1\n"
        "hw.optional.arm.FEAT_I8MM: 0\n"
        "hw.optional.arm.FEAT_BF16: 0\n"
        "machdep.cpu.brand_string: Apple M1\n"
    )
    info = parse_sysctl(text, "arm64")
    assert info == CpuInfo("aarch64", "Apple M1", 8, None, ("neon", "asimd", "fp16", "dotprod"))


def test_cpu_info_on_this_machine() -> None:
    info = doctor.cpu_info()
    assert info.arch and info.model and info.cores >= 1
    assert set(info.features) <= set(doctor.VOCABULARY)


# --- closest_profile ------------------------------------------------------------------------


def profile_dict(
    name: str,
    arch: str,
    features: list[str],
    cores: int = 4,
    clock_ghz: float = 1.5,
    ram_mb: int = 4096,
) -> dict[str, Any]:
    """A complete profile per profiles.SCHEMA; only what matching looks at varies."""
    return {
        "name": name,
        "title": f"Test board {name}",
        "vendor": "Test",
        "sources": ["https://example.invalid/datasheet"],
        "cpu": {
            "arch": arch,
            "model": "test core",
            "cores": cores,
            "clock_ghz": clock_ghz,
            "features": features,
            "source": "datasheet",
        },
        "memory": {"ram_mb": ram_mb, "type": "LPDDR4", "storage": "microSD", "source": "datasheet"},
        "accelerators": [],
        "deploy": {
            "format": "onnx",
            "quantization": "int8-static",
            "activation_dtype": "int8",
            "weight_dtype": "int8",
            "per_channel": True,
            "threads": cores,
            "backends": ["onnxruntime:CPUExecutionProvider", "numpy"],
            "rationale": "test",
        },
        "perf": {
            "peak_gflops_fp32": 10.0,
            "peak_gops_int8": 20.0,
            "memory_bandwidth_gbs": 4.0,
            "source": "estimate",
        },
    }


def make_profile(*args: Any, **kwargs: Any) -> DeviceProfile:
    data = profile_dict(*args, **kwargs)
    return profile_from_dict(data, f"<test {data['name']}>")


@pytest.fixture(scope="module")
def boards() -> list[DeviceProfile]:
    return [
        make_profile("rpi4", "aarch64", ["neon", "asimd"], 4, 1.8, 4096),
        make_profile("rpi5", "aarch64", ["neon", "asimd", "fp16", "dotprod"], 4, 2.4, 8192),
        make_profile("jetson", "aarch64", ["neon", "asimd", "fp16", "dotprod"], 6, 1.5, 8192),
        make_profile("rpi3-32", "armv7l", ["neon"], 4, 1.2, 1024),
        make_profile(
            "xeon-vnni",
            "x86_64",
            ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni"],
            8,
            2.9,
            32768,
        ),
        make_profile("laptop", "x86_64", ["sse4_2", "avx", "avx2", "fma", "f16c"], 8, 4.0, 16384),
    ]


@pytest.mark.parametrize(
    ("sample", "ram_mb", "expected"),
    [
        ("rpi4-aarch64", 3794, "rpi4"),
        ("rpi5-aarch64", 8052, "rpi5"),  # same features as jetson: 4 cores decides
        ("rpi3-armv7l", 921, "rpi3-32"),
        ("xeon-icelake", 15700, "xeon-vnni"),
        ("xeon-sapphire-rapids", 15700, "xeon-vnni"),  # nearest, though not exact
    ],
)
def test_closest_profile(
    boards: list[DeviceProfile], sample: str, ram_mb: int, expected: str
) -> None:
    cpu = parse_cpuinfo(CPU_SAMPLES[sample][0])
    name, reason = closest_profile(cpu, ram_mb, boards)
    assert name == expected
    assert f"same arch {cpu.arch}" in reason and "features shared" in reason


def test_closest_profile_breaks_ties_by_clock_then_ram() -> None:
    cpu = CpuInfo("aarch64", "A72", 4, 1500.0, ("neon", "asimd"))
    slow = make_profile("slow", "aarch64", ["neon", "asimd"], 4, 1.5, 8192)
    fast = make_profile("fast", "aarch64", ["neon", "asimd"], 4, 2.0, 2048)
    small = make_profile("small", "aarch64", ["neon", "asimd"], 4, 1.5, 2048)
    assert closest_profile(cpu, 8000, [fast, small, slow])[0] == "slow"
    assert closest_profile(cpu, 2000, [fast, slow, small])[0] == "small"


def test_closest_profile_says_what_this_cpu_lacks(boards: list[DeviceProfile]) -> None:
    cpu = CpuInfo("aarch64", "A53", 6, None, ("neon", "asimd"))
    name, reason = closest_profile(cpu, 8192, [p for p in boards if p.name == "jetson"])
    assert name == "jetson" and "lacks dotprod, fp16" in reason


def test_closest_profile_needs_the_same_arch(boards: list[DeviceProfile]) -> None:
    cpu = CpuInfo("riscv64", "U74", 4, 1500.0, ())
    name, reason = closest_profile(cpu, 4096, boards)
    assert name is None and "riscv64" in reason
    armv7 = parse_cpuinfo(RPI3_ARMV7L)
    assert closest_profile(armv7, 921, [p for p in boards if p.cpu.arch != "armv7l"])[0] is None
    assert closest_profile(armv7, 921, []) == (None, "no device profiles installed")


def test_closest_profile_against_the_shipped_profiles() -> None:
    try:
        shipped = list_profiles()
    except ProfileError:  # profiles are being written alongside; the CLI test covers them
        pytest.skip("a shipped profile does not load yet")
    for sample, *_ in CPU_SAMPLES.values():
        cpu = parse_cpuinfo(sample)
        name, _ = closest_profile(cpu, 4096, shipped)
        assert name is None or name in {p.name for p in shipped if p.cpu.arch == cpu.arch}


# --- BLAS, delegates, backends --------------------------------------------------------------


def test_blas_from_threadpoolctl_or_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    found = doctor.blas_info()
    assert all(lib["user_api"] == "blas" for lib in found)
    monkeypatch.setattr(doctor, "available", lambda module: module != "threadpoolctl")
    from_numpy = doctor.blas_info()
    assert all(lib["user_api"] == "blas" for lib in from_numpy)
    json.dumps(from_numpy)


def test_blas_unknown_on_numpy_without_config_dicts(monkeypatch: pytest.MonkeyPatch) -> None:
    def old_show_config() -> None:  # numpy < 1.26 takes no mode and only prints
        raise TypeError("show_config() got an unexpected keyword argument 'mode'")

    monkeypatch.setattr(doctor, "available", lambda module: False)
    monkeypatch.setattr(doctor.np, "show_config", lambda **kwargs: old_show_config())
    assert doctor.blas_info() == []


def test_delegate_libraries_found_on_the_library_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "libedgetpu.so.1").write_bytes(b"")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    monkeypatch.setattr(doctor, "LIBRARY_DIRS", ())
    monkeypatch.setattr(doctor.ctypes.util, "find_library", lambda name: None)
    assert doctor.find_delegate_libraries() == {"edgetpu": str(tmp_path / "libedgetpu.so.1")}


def test_missing_and_broken_packages_are_rows_not_crashes(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(module: str) -> None:
        raise RuntimeError(f"{module} was built for another CPU")

    monkeypatch.setattr(doctor, "available", lambda module: module == "torch")
    monkeypatch.setattr(doctor, "require", broken)
    rows = {b.name: b for b in doctor.probe_backends()}
    assert not any(b.available for b in rows.values())
    assert rows["torch"].detail == "import failed: RuntimeError: torch was built for another CPU"
    assert rows["onnxruntime"].detail.startswith("not installed: pip install")


def test_run_doctor_on_this_machine() -> None:
    report = doctor.run_doctor()
    data = json.loads(json.dumps(report.to_json()))
    assert data["cpu"]["arch"] == report.cpu.arch and report.ram_mb > 0
    rows = {b.name: b for b in report.backends}
    expected = {"onnx", "onnxruntime", "ai_edge_litert", "tflite_runtime", "torch", "tensorflow"}
    assert set(rows) == expected
    if available("onnxruntime"):
        assert rows["onnxruntime"].available
        assert "CPUExecutionProvider" in rows["onnxruntime"].detail
    assert report.closest_reason


def test_features_of_another_arch_are_dropped() -> None:
    """Under qemu user emulation an aarch64 process reads the x86 host's /proc/cpuinfo."""
    x86_text = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
    info = doctor.parse_cpuinfo(x86_text, "aarch64")
    assert info.arch == "aarch64" and info.features == ()


# --- the probe model, run on every backend ------------------------------------------------


def test_the_probe_onnx_model_is_valid_and_computes_its_formula() -> None:
    onnx = pytest.importorskip("onnx")
    from onnx.reference import ReferenceEvaluator

    from edgerun.backends import probe

    model = onnx.load_from_string(probe.onnx_model())
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
    (got,) = ReferenceEvaluator(model).run(None, {"x": x})
    np.testing.assert_allclose(got, probe.expected(x), rtol=1e-6)


def test_the_probe_tflite_model_is_what_tensorflow_makes_of_the_formula() -> None:
    tf = pytest.importorskip("tensorflow")
    from edgerun.backends import probe
    from edgerun.backends.tflite import interpreter_module

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x")])
    def formula(x: Any) -> Any:
        return tf.nn.relu(tf.matmul(x, probe.WEIGHT) + probe.BIAS)

    rebuilt = tf.lite.TFLiteConverter.from_concrete_functions(
        [formula.get_concrete_function()]
    ).convert()
    x = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    outputs = []
    for model in (probe.TFLITE, rebuilt):
        interpreter = interpreter_module().Interpreter(model_content=model)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6)
    np.testing.assert_allclose(outputs[0], probe.expected(x), rtol=1e-5, atol=1e-6)


def test_each_backend_found_runs_the_probe_model() -> None:
    checks = {c.backend: c for c in doctor.check_backends()}
    assert checks["numpy"].ran, checks["numpy"].detail
    if available("onnxruntime"):
        cpu = checks["onnxruntime:CPUExecutionProvider"]
        assert cpu.ran and "max error" in cpu.detail
        assert "onnxruntime:AzureExecutionProvider" not in checks  # computes nowhere here
    if available("ai_edge_litert"):
        assert checks["tflite:xnnpack"].ran, checks["tflite:xnnpack"].detail


def test_a_wrong_answer_is_not_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgerun.backends import probe

    right = probe.expected
    monkeypatch.setattr(probe, "expected", lambda x=probe.INPUT: right(x) + 1)
    checks = doctor.check_backends()
    assert checks and not any(c.ran for c in checks)
    assert all("WRONG ANSWER" in c.detail for c in checks)


def test_a_delegate_library_that_does_not_load_is_a_failed_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not available("ai_edge_litert"):
        pytest.skip("needs LiteRT")
    (tmp_path / "libedgetpu.so.1").write_bytes(b"not a shared library")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(tmp_path))
    checks = {c.backend: c for c in doctor.check_backends()}
    edgetpu = checks["tflite:edgetpu"]
    assert not edgetpu.ran and "cannot load" in edgetpu.detail
    assert checks["tflite:xnnpack"].ran
