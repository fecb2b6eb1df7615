"""TEST DOUBLE -- NOT TensorRT-LLM. A recording stand-in for the `tensorrt_llm` package, which cannot run here.

TensorRT-LLM needs CUDA and lives in NVIDIA's NGC containers, so tritonrepo's adapter tests put this folder on
PYTHONPATH instead. It mirrors the names tritonrepo calls (Mapping, MODEL_MAP, QuantConfig, QuantAlgo,
from_hugging_face, quantize, save_checkpoint, the trtllm-build entry point), records every call as JSON into the file
named by $FAKE_TRTLLM_RECORD, writes the files the real package would (rank{i}.safetensors + config.json,
rank{i}.engine + config.json, with placeholder contents), and fails on request ($FAKE_TRTLLM_FAIL=convert|build).
Nothing it writes is a usable checkpoint or engine. For the llmapi Triton model it also stands in for the LLM API
(LLM, SamplingParams: llmapi/llm.py), generating a fixed script instead of text from a model.
"""

from tensorrt_llm._double import fake_version
from tensorrt_llm.llmapi import LLM, SamplingParams

__all__ = ["LLM", "SamplingParams"]
__version__ = fake_version()
