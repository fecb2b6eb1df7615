"""What this machine offers for serving: GPUs (via NVML when available) and an installed TensorRT-LLM."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total_bytes: int


def detect_gpus() -> list[Gpu]:
    """GPUs seen by NVML; an empty list when there is no GPU, no driver or no nvidia-ml-py (a normal case)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(Gpu(index, name.decode() if isinstance(name, bytes) else name, int(memory.total)))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def tensorrt_llm_installed() -> bool:
    return importlib.util.find_spec("tensorrt_llm") is not None
