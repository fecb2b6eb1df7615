"""GPU profiles: --gpu parsing, profile facts, and matching NVML names to profiles."""

from __future__ import annotations

import json

import pytest

from tritonrepo.errors import HardwareError
from tritonrepo.hardware import GpuSpec, Hardware, known_profiles, parse_gpu, profile_for_name

MIB = 2**20
GIB = 2**30


@pytest.mark.parametrize(
    ("text", "name", "count"),
    [
        ("A100-40GB", "A100-40GB", 1),
        ("a100-40gb", "A100-40GB", 1),
        ("H100-80GB x8", "H100-80GB", 8),
        ("H100-80GB x 8", "H100-80GB", 8),
        ("H100-80GB X8", "H100-80GB", 8),
        ("H200 x8", "H200", 8),
        ("8xH200", "H200", 8),
        ("8x H200", "H200", 8),
        ("8 x H200", "H200", 8),
        ("L4*4", "L4", 4),
        ("L4 * 4", "L4", 4),
        ("L4", "L4", 1),
        ("  t4  ", "T4", 1),
        ("H100", "H100-80GB", 1),
        ("H100-SXM", "H100-80GB", 1),
        ("H100-PCIe", "H100-80GB", 1),
        ("H200-141GB", "H200", 1),
        ("A100-SXM4-40GB", "A100-40GB", 1),
        ("A100 SXM4 80GB", "A100-80GB", 1),
        ("RTX 4090 x2", "RTX-4090", 2),
        ("RTX4090", "RTX-4090", 1),
        ("RTX4090x2", "RTX-4090", 2),
        ("H100-80GBx8", "H100-80GB", 8),
        ("H200x8", "H200", 8),
        ("A10", "A10", 1),  # not a prefix of A100
        ("H20", "H20", 1),  # not a prefix of H200
        ("H100 x1024", "H100-80GB", 1024),
    ],
)
def test_parse_gpu_syntaxes(text, name, count):
    hardware = parse_gpu(text)
    assert (hardware.gpu.name, hardware.count, hardware.source) == (name, count, "profile")


def test_every_profile_parses_to_itself():
    for profile in known_profiles():
        assert parse_gpu(profile.name).gpu == profile
        assert parse_gpu(profile.name.lower() + " x2").count == 2


def test_a_detected_gpu_name_can_be_fed_back_to_gpu():
    # plan suggests "--gpu '<gpu.name> xN'", and a detected GPU keeps its NVML name
    assert parse_gpu("NVIDIA H100 80GB HBM3 x4").gpu.name == "H100-80GB"
    assert parse_gpu("NVIDIA A100 80GB PCIe").gpu.name == "A100-80GB"
    assert parse_gpu("Tesla T4 x 2").gpu.name == "T4"


def test_a100_40gb_facts():
    gpu = parse_gpu("A100-40GB").gpu
    assert gpu.memory_bytes == 40 * GIB
    assert gpu.compute_capability == (8, 0) and gpu.sm == 80 and gpu.arch == "ampere"
    assert gpu.supports_bf16 and not gpu.supports_fp8 and not gpu.supports_fp4


def test_l4_has_fp8_and_b200_has_fp4():
    l4 = parse_gpu("L4").gpu
    assert (l4.sm, l4.arch, l4.supports_fp8, l4.supports_fp4) == (89, "ada", True, False)
    b200 = parse_gpu("B200").gpu
    assert (b200.sm, b200.arch, b200.supports_fp8, b200.supports_fp4) == (100, "blackwell", True, True)


def test_older_gpus_have_neither_bf16_nor_fp8():
    for name, arch in (("T4", "turing"), ("V100-32GB", "volta")):
        gpu = parse_gpu(name).gpu
        assert gpu.arch == arch and not gpu.supports_bf16 and not gpu.supports_fp8


@pytest.mark.parametrize(
    ("capability", "arch"),
    [((6, 0), "pascal"), ((7, 0), "volta"), ((7, 5), "turing"), ((8, 6), "ampere"), ((8, 9), "ada"), ((9, 0), "hopper"),
     ((10, 0), "blackwell"), ((12, 0), "blackwell"), ((5, 2), "unknown")],
)  # fmt: skip
def test_architecture_from_compute_capability(capability, arch):
    assert GpuSpec("any", GIB, capability).arch == arch


def test_profile_table_uses_nvidia_smi_totals():
    table = {p.name: (p.memory_bytes // MIB, p.sm, p.memory_bandwidth_gbs) for p in known_profiles()}
    assert table["H100-80GB"] == (81559, 90, 3350)
    assert table["H200"] == (143771, 90, 4800)
    assert table["L4"] == (23034, 89, 300)
    assert table["GB200"] == (189471, 100, 8000)
    assert table["H20-141GB"] == (143771, 90, 4800)
    assert len(table) == 17
    assert all(isinstance(p.memory_bandwidth_gbs, float) for p in known_profiles())


def test_unknown_name_lists_the_known_profiles_sorted_on_one_line():
    with pytest.raises(HardwareError) as caught:
        parse_gpu("Z9000 x2")
    message = str(caught.value)
    assert "Z9000" in message and "\n" not in message
    listed = message[message.index("Known profiles: ") + len("Known profiles: ") :].split(" (")[0].split(", ")
    assert listed == sorted(p.name for p in known_profiles())


@pytest.mark.parametrize("text", ["A100-48GB", "H100 xl", "H100-TURBO", "A100X", "RTX4080", "A100x8"])
def test_names_that_are_not_profiles_are_refused(text):
    with pytest.raises(HardwareError):
        parse_gpu(text)


@pytest.mark.parametrize(
    ("text", "names"), [("A100", ["A100-40GB", "A100-80GB"]), ("V100", ["V100-16GB", "V100-32GB"])]
)
def test_ambiguous_names_are_refused_naming_each_choice(text, names):
    with pytest.raises(HardwareError, match="ambiguous") as caught:
        parse_gpu(text)
    assert all(name in str(caught.value) for name in names)


@pytest.mark.parametrize("text", ["H100 x0", "0xH100", "H200x0", "H100 x1025", "H100 x eight", "H100*-1", "", "   "])
def test_bad_counts_and_empty_values_are_refused(text):
    with pytest.raises(HardwareError):
        parse_gpu(text)


@pytest.mark.parametrize(
    ("nvml_name", "mib", "profile"),
    [
        ("NVIDIA A100-SXM4-40GB", 40960, "A100-40GB"),
        ("NVIDIA A100-PCIE-40GB", 40536, "A100-40GB"),
        ("NVIDIA A100-SXM4-80GB", 81920, "A100-80GB"),
        ("NVIDIA A100 80GB PCIe", 81920, "A100-80GB"),
        ("NVIDIA H100 80GB HBM3", 81559, "H100-80GB"),
        ("NVIDIA H100 PCIe", 81559, "H100-80GB"),
        ("NVIDIA H100 NVL", 95830, "H100-NVL"),
        ("NVIDIA H200", 143771, "H200"),
        ("NVIDIA H20", 97871, "H20"),
        ("NVIDIA L4", 23034, "L4"),
        ("NVIDIA L40S", 46068, "L40S"),
        ("NVIDIA A10G", 23028, "A10G"),
        ("NVIDIA A10", 23028, "A10"),
        ("Tesla T4", 15360, "T4"),
        ("Tesla V100-SXM2-16GB", 16160, "V100-16GB"),
        ("Tesla V100-PCIE-32GB", 32510, "V100-32GB"),
        ("NVIDIA GeForce RTX 4090", 24564, "RTX-4090"),
        ("NVIDIA B200", 183359, "B200"),
        ("NVIDIA GB200", 189471, "GB200"),
    ],
)
def test_profile_for_real_nvml_names(nvml_name, mib, profile):
    assert profile_for_name(nvml_name, mib * MIB).name == profile


def test_memory_tells_a100_40gb_from_80gb_when_the_name_does_not():
    assert profile_for_name("NVIDIA A100-PCIE", 40960 * MIB).name == "A100-40GB"
    assert profile_for_name("NVIDIA A100-PCIE", 81920 * MIB).name == "A100-80GB"


@pytest.mark.parametrize(
    ("nvml_name", "mib"),
    [
        ("NVIDIA GH200 480GB", 97871),  # not in the table
        ("NVIDIA L40", 46068),  # not L4, not L40S
        ("NVIDIA A100-SXM4-40GB", 20000),  # memory that no A100 has: unsure, so no profile
        ("NVIDIA H100 80GB HBM3 MIG 1g.10gb", 10240),
    ],
)
def test_profile_for_unknown_or_inconsistent_gpus_is_none(nvml_name, mib):
    assert profile_for_name(nvml_name, mib * MIB) is None


def test_describe_and_as_dict():
    hardware = parse_gpu("H100-80GB x8")
    assert hardware.describe() == "8x H100-80GB (SM90, 79.6 GiB each)"
    assert parse_gpu("L4").describe() == "1x L4 (SM89, 22.5 GiB)"
    assert Hardware(gpu=None, count=0, source="none").describe() == "no GPU"
    data = json.loads(json.dumps(hardware.as_dict()))
    assert data["count"] == 8 and data["source"] == "profile"
    assert data["gpu"]["compute_capability"] == [9, 0] and data["gpu"]["supports_fp8"] is True
    assert json.loads(json.dumps(Hardware(None, 0, "none").as_dict()))["gpu"] is None


def test_describe_notes_gpus_of_another_model():
    gpu = GpuSpec("NVIDIA H100 80GB HBM3", 81559 * MIB, (9, 0))
    hardware = Hardware(gpu=gpu, count=1, source="detected", unused_gpus=("NVIDIA L4",))
    assert hardware.describe() == "1x NVIDIA H100 80GB HBM3 (SM90, 79.6 GiB) (+1 other GPU not used)"


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        parse_gpu("L4").gpu.name = "L40S"
