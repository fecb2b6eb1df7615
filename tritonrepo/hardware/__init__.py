"""The hardware stage: GPU profiles for planning (`--gpu`) and what this machine has (NVML, TensorRT-LLM)."""

from __future__ import annotations

from tritonrepo.hardware.detect import detect_gpus, detect_hardware, tensorrt_llm_installed, tensorrt_llm_version
from tritonrepo.hardware.profiles import GpuSpec, Hardware, known_profiles, parse_gpu, profile_for_name

__all__ = [
    "GpuSpec",
    "Hardware",
    "detect_gpus",
    "detect_hardware",
    "known_profiles",
    "parse_gpu",
    "profile_for_name",
    "tensorrt_llm_installed",
    "tensorrt_llm_version",
]
