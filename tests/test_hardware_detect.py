"""GPU detection through NVML: the real binding on this GPU-less machine, and a fake NVML for machines with GPUs."""

from __future__ import annotations

import ctypes.util
import sys
from types import SimpleNamespace

import pytest

from tritonrepo import hardware
from tritonrepo.hardware import detect_gpus, detect_hardware

MIB = 2**20
H100 = "NVIDIA H100 80GB HBM3"


class FakeNvml:
    """A test double of the `pynvml` module (nvidia-ml-py) for the handful of calls detection makes.

    `gpus` holds (name, total MiB, free MiB, compute capability); `fail` names a call that raises NVMLError;
    `calls` records every call, so tests can check that nvmlShutdown followed nvmlInit.
    """

    class NVMLError(Exception):
        pass

    def __init__(self, gpus, *, fail: str | None = None, name_as_bytes: bool = False, has_v2: bool = True):
        self.gpus = gpus
        self.fail = fail
        self.name_as_bytes = name_as_bytes
        self.calls: list[str] = []
        if not has_v2:  # old bindings have only nvmlSystemGetCudaDriverVersion
            self.nvmlSystemGetCudaDriverVersion_v2 = None

    def _call(self, name: str):
        self.calls.append(name)
        if self.fail == name:
            raise self.NVMLError(f"{name} failed")

    def nvmlInit(self):
        self._call("nvmlInit")

    def nvmlShutdown(self):
        self._call("nvmlShutdown")

    def nvmlDeviceGetCount(self):
        self._call("nvmlDeviceGetCount")
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        self._call("nvmlDeviceGetHandleByIndex")
        return index

    def nvmlDeviceGetName(self, handle):
        self._call("nvmlDeviceGetName")
        name = self.gpus[handle][0]
        return name.encode() if self.name_as_bytes else name

    def nvmlDeviceGetMemoryInfo(self, handle):
        self._call("nvmlDeviceGetMemoryInfo")
        _, total, free, _ = self.gpus[handle]
        return SimpleNamespace(total=total * MIB, free=free * MIB, used=(total - free) * MIB)

    def nvmlDeviceGetCudaComputeCapability(self, handle):
        self._call("nvmlDeviceGetCudaComputeCapability")
        return self.gpus[handle][3]

    def nvmlSystemGetDriverVersion(self):
        self._call("nvmlSystemGetDriverVersion")
        return b"570.124.06" if self.name_as_bytes else "570.124.06"

    def nvmlSystemGetCudaDriverVersion_v2(self):
        self._call("nvmlSystemGetCudaDriverVersion_v2")
        return 12080

    def nvmlSystemGetCudaDriverVersion(self):
        self._call("nvmlSystemGetCudaDriverVersion")
        return 12020


@pytest.fixture
def fake_nvml(monkeypatch):
    def install(gpus, **options) -> FakeNvml:
        fake = FakeNvml(gpus, **options)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return install


def test_real_nvml_without_a_driver_reports_no_gpu():
    pytest.importorskip("pynvml")
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has an NVIDIA driver; the test is about machines without one")
    detected = detect_hardware()
    assert (detected.gpu, detected.count, detected.source) == (None, 0, "none")
    assert detected.describe() == "no GPU"
    assert detect_gpus() == []


def test_no_binding_reports_no_gpu(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    assert detect_hardware().source == "none"


def test_two_h100s(fake_nvml):
    fake = fake_nvml([(H100, 81559, 80000, (9, 0)), (H100, 81559, 79000, (9, 0))])
    detected = detect_hardware()
    assert (detected.source, detected.count) == ("detected", 2)
    assert detected.gpu.name == H100 and detected.gpu.compute_capability == (9, 0)
    assert detected.gpu.memory_bytes == 81559 * MIB
    assert detected.gpu.memory_bandwidth_gbs == 3350  # from the H100-80GB profile
    assert detected.free_memory_bytes == (80000 * MIB, 79000 * MIB)
    assert (detected.driver_version, detected.cuda_version) == ("570.124.06", "12.8")
    assert detected.describe() == f"2x {H100} (SM90, 79.6 GiB each)"
    assert fake.calls[0] == "nvmlInit" and fake.calls[-1] == "nvmlShutdown"
    assert detect_gpus() == [detected.gpu, detected.gpu]


def test_bytes_names_and_an_old_binding_without_the_v2_cuda_call(fake_nvml):
    fake_nvml([("NVIDIA L4", 23034, 22000, (8, 9))], name_as_bytes=True, has_v2=False)
    detected = detect_hardware()
    assert detected.gpu.name == "NVIDIA L4" and detected.gpu.supports_fp8
    assert (detected.driver_version, detected.cuda_version) == ("570.124.06", "12.2")


def test_mixed_gpus_count_only_the_first_model(fake_nvml):
    fake_nvml([(H100, 81559, 80000, (9, 0)), ("NVIDIA L4", 23034, 22000, (8, 9)), (H100, 81559, 81000, (9, 0))])
    detected = detect_hardware()
    assert detected.count == 2 and detected.gpu.name == H100
    assert detected.free_memory_bytes == (80000 * MIB, 81000 * MIB)
    assert detected.unused_gpus == ("NVIDIA L4",)
    assert detected.describe().endswith("(+1 other GPU not used)")
    assert len(detect_gpus()) == 2


def test_unknown_gpu_keeps_nvml_facts_without_bandwidth(fake_nvml):
    fake_nvml([("NVIDIA RTX PRO 6000 Blackwell", 97887, 97000, (12, 0))])
    gpu = detect_hardware().gpu
    assert gpu.memory_bandwidth_gbs is None
    assert (gpu.sm, gpu.arch, gpu.supports_fp4) == (120, "blackwell", True)


def test_no_devices_reports_no_gpu(fake_nvml):
    fake = fake_nvml([])
    assert detect_hardware().source == "none"
    assert fake.calls[-1] == "nvmlShutdown"


@pytest.mark.parametrize(
    "failing", ["nvmlDeviceGetCount", "nvmlDeviceGetMemoryInfo", "nvmlDeviceGetCudaComputeCapability"]
)
def test_a_failing_call_reports_no_gpu_and_still_shuts_nvml_down(fake_nvml, failing):
    fake = fake_nvml([(H100, 81559, 80000, (9, 0))], fail=failing)
    assert detect_hardware().source == "none"
    assert fake.calls[-1] == "nvmlShutdown"


def test_a_failing_init_reports_no_gpu_and_does_not_shut_down(fake_nvml):
    fake = fake_nvml([(H100, 81559, 80000, (9, 0))], fail="nvmlInit")
    assert detect_hardware().source == "none"
    assert fake.calls == ["nvmlInit"]


def test_a_failing_shutdown_does_not_hide_the_gpus(fake_nvml):
    fake_nvml([(H100, 81559, 80000, (9, 0))], fail="nvmlShutdown")
    assert detect_hardware().count == 1


def test_a_driver_that_cannot_report_its_version_still_shows_its_gpus(fake_nvml):
    fake_nvml([(H100, 81559, 80000, (9, 0))], fail="nvmlSystemGetDriverVersion")
    detected = detect_hardware()
    assert detected.count == 1 and detected.driver_version is None and detected.cuda_version == "12.8"


def test_build_keeps_its_two_calls():
    # tritonrepo/planning/build.py calls these through the package; both must stay importable from tritonrepo.hardware
    assert isinstance(hardware.tensorrt_llm_installed(), bool)
    assert isinstance(hardware.detect_gpus(), list)


def test_tensorrt_llm_version_from_either_distribution_name(monkeypatch):
    import importlib.metadata

    def version(name):
        if name == "tensorrt-llm":
            return "0.17.0"
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert hardware.tensorrt_llm_version() == "0.17.0"
    monkeypatch.setattr(importlib.metadata, "version", lambda name: version("absent"))
    assert hardware.tensorrt_llm_version() is None
