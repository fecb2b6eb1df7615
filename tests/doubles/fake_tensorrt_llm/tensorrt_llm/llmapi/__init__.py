"""TEST DOUBLE -- NOT TensorRT-LLM. The LLM API names our llmapi Triton model uses (see llm.py)."""

from tensorrt_llm.llmapi.llm import LLM, RequestOutput
from tensorrt_llm.sampling_params import SamplingParams

__all__ = ["LLM", "RequestOutput", "SamplingParams"]
