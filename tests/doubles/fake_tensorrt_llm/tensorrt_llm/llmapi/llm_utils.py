"""TEST DOUBLE -- NOT TensorRT-LLM. The real function turns nested dicts into LLM API config objects; this one
only merges, so what model.yaml held reaches LLM(...) (and the double's record) as plain data."""

from __future__ import annotations


def update_llm_args_with_extra_dict(llm_args: dict, llm_args_dict: dict, extra_llm_api_options: str | None = None):
    return {**llm_args, **llm_args_dict}
