"""What this machine has: GPUs through NVML (nvidia-ml-py) and an installed TensorRT-LLM."""

from __future__ import annotations

import importlib.metadata
import importlib.util

from tritonrepo.hardware.profiles import NO_GPU, GpuSpec, Hardware, profile_for_name


def detect_hardware() -> Hardware:
    """The GPUs NVML sees; `Hardware(None, 0, "none")` when there is no binding, no driver or no GPU (a normal case)."""
    try:
        import pynvml
    except ImportError:
        return NO_GPU
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no libnvidia-ml, or the driver is not loaded
        return NO_GPU
    try:
        return _query(pynvml)
    except pynvml.NVMLError:  # a GPU that fell off the bus, a driver/library mismatch: nothing we could plan for
        return NO_GPU
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def detect_gpus() -> list[GpuSpec]:
    """One entry per GPU that detection plans for (the first GPU's model); empty when there is none."""
    hardware = detect_hardware()
    return [hardware.gpu] * hardware.count if hardware.gpu else []


def tensorrt_llm_installed() -> bool:
    return importlib.util.find_spec("tensorrt_llm") is not None


def tensorrt_llm_version() -> str | None:
    for distribution in ("tensorrt_llm", "tensorrt-llm"):
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _query(nvml) -> Hardware:
    devices = []  # (name, total, free, compute capability) per GPU, in NVML's order
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
        devices.append((_text(nvml.nvmlDeviceGetName(handle)), int(memory.total), int(memory.free), (major, minor)))
    if not devices:
        return NO_GPU
    name, _, _, capability = devices[0]
    # Plans assume identical GPUs: keep the first GPU's model, and report the others rather than mixing them in.
    used = [d for d in devices if d[0] == name]
    unused = tuple(d[0] for d in devices if d[0] != name)
    total = min(d[1] for d in used)  # the smallest total, so that a plan fits on every GPU it uses
    profile = profile_for_name(name, total)
    gpu = GpuSpec(name, total, capability, profile.memory_bandwidth_gbs if profile else None)
    return Hardware(
        gpu=gpu,
        count=len(used),
        source="detected",
        free_memory_bytes=tuple(d[2] for d in used),
        driver_version=_optional(nvml, lambda: _text(nvml.nvmlSystemGetDriverVersion())),
        cuda_version=_optional(nvml, lambda: _cuda_version(nvml)),
        unused_gpus=unused,
    )


def _cuda_version(nvml) -> str:
    """The newest CUDA the driver supports: 12080 -> "12.8"."""
    get = getattr(nvml, "nvmlSystemGetCudaDriverVersion_v2", None) or nvml.nvmlSystemGetCudaDriverVersion
    version = int(get())
    return f"{version // 1000}.{version % 1000 // 10}"


def _optional(nvml, read):
    """Versions are for the record only: a driver too old to report them should not hide its GPUs."""
    try:
        return read()
    except nvml.NVMLError:
        return None


def _text(value: bytes | str) -> str:
    # nvidia-ml-py returns str since 11.515 and bytes before; the old `pynvml` package returned bytes.
    return value.decode() if isinstance(value, bytes) else value
