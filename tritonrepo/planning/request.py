"""What the user asked for, as data: the plan's choices and the PyTorch path's own; None means "choose for me"."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LlmApiRequest:
    """What the user asked for on the PyTorch path; None means "choose for me"."""

    profile: str = "throughput"
    serving: str = "trtllm-serve"
    trtllm_version: str | None = None  # None: the installed one, else the newest known container's
    nodes: int | None = None
    pp_size: int = 1
    ep_size: int | None = None
    mtp_layers: int | None = None
    kv_cache_dtype: str | None = None
    max_batch_size: int | None = None
    max_num_tokens: int | None = None
    max_seq_len: int | None = None
    kv_cache_free_gpu_memory_fraction: float | None = None
    host: str = "0.0.0.0"
    port: int = 8000


@dataclass(frozen=True)
class PlanRequest:
    """What the user asked for; None means "choose for me"."""

    runtime: str = "auto"
    max_batch_size: int | None = None
    max_input_len: int | None = None
    max_seq_len: int | None = None
    max_num_tokens: int | None = None
    quantization: str = "none"
    tp_size: int | None = None
    pp_size: int = 1
    kv_cache_free_gpu_mem_fraction: float | None = None  # None: 0.9 for engines, 0.8 on the PyTorch path
    decoupled: bool = True
    llmapi: LlmApiRequest = LlmApiRequest()  # the PyTorch path's own choices (profile, serving, nodes, ...)
