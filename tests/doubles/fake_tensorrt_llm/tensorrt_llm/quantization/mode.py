"""TEST DOUBLE of tensorrt_llm.quantization.mode: the QuantAlgo names tritonrepo uses (values equal names)."""

from __future__ import annotations

from enum import Enum


class QuantAlgo(str, Enum):
    FP8 = "FP8"
    INT8 = "INT8"
    W8A16 = "W8A16"
    W4A16 = "W4A16"
    W4A16_AWQ = "W4A16_AWQ"
    NVFP4 = "NVFP4"
