"""What the user asked for, once, for `tritonrepo plan`, `build` and `export`: the model, where it comes from, the
hardware, the plan's choices and the build's options; None means "choose for me". The pure planner reads the choices."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LlmApiChoices:
    """The PyTorch path's own choices (DeepSeek-V3-architecture MoE models); the limits it shares are the request's."""

    profile: str = "throughput"
    serving: str = "trtllm-serve"
    trtllm_version: str | None = None  # None: the installed one, else the newest known container's
    nodes: int | None = None
    ep_size: int | None = None
    mtp_layers: int | None = None
    kv_cache_dtype: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000


@dataclass(frozen=True)
class DynamoChoices:
    """`--serving dynamo`: NVIDIA Dynamo's topology (frontend + TensorRT-LLM workers); None counts mean "fill the GPUs"."""

    disagg: bool = False
    router: str = "kv"  # kv | round-robin
    workers: int | None = None  # aggregated workers
    prefill_workers: int | None = None
    decode_workers: int | None = None
    max_tokens_in_buffer: int | None = None  # cache transceiver; None: sized above the longest input
    http_port: int = 8000


@dataclass(frozen=True)
class DeploymentRequest:
    model: str  # an embedded or catalog name, a local checkpoint folder, or a Hugging Face id
    # Where the model comes from.
    revision: str | None = None
    offline: bool = False
    cache_dir: Path | None = None  # Hugging Face download cache (default: HF_HUB_CACHE)
    # The hardware: None is this machine's; a profile such as 'H200 x8' plans for it (builds only on the PyTorch path:
    # engines compile for the GPU they run on).
    gpu: str | None = None
    # The plan's choices.
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
    llmapi: LlmApiChoices = LlmApiChoices()
    dynamo: DynamoChoices | None = None  # set: `--serving dynamo`
    # The build's options.
    output: Path | None = None  # default: build/<model name>
    force: bool = False  # rebuild every stage even when its inputs are unchanged
    download: bool = False  # PyTorch path: fetch the weights now; by default the server fetches them on first start
