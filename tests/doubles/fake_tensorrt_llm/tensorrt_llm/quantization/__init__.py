"""TEST DOUBLE of tensorrt_llm.quantization."""

from tensorrt_llm.quantization.mode import QuantAlgo

__all__ = ["QuantAlgo"]
