"""The values a repository is rendered from: one flat, typed record, also written into the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Runtime = Literal["hf", "tensorrtllm"]

# Where things live inside a repository (relative to its root; our Python models resolve them against the root).
# Each model keeps the files it reads inside its own folder: Triton copies a cloud (s3://) repository one model at a
# time, so one model cannot reach into another's folder there.
TOKENIZER_DIR = "preprocessing/1/tokenizer"
POSTPROCESSING_TOKENIZER_DIR = "postprocessing/1/tokenizer"
HF_MODEL_DIR = "tensorrt_llm/1/hf_model"
ENGINE_DIR = "tensorrt_llm/1/engine"

ENTRY_POINTS = ("ensemble", "tensorrt_llm_bls")
MODELS = ("ensemble", "preprocessing", "tensorrt_llm", "postprocessing", "tensorrt_llm_bls")


@dataclass(frozen=True)
class RepositoryParams:
    """Every template variable. Field names are the variables the config.pbtxt templates use."""

    runtime: Runtime
    max_input_len: int
    max_seq_len: int
    triton_max_batch_size: int = 8
    decoupled_mode: bool = True
    tokenizer_dir: str = TOKENIZER_DIR
    postprocessing_tokenizer_dir: str = POSTPROCESSING_TOKENIZER_DIR
    add_special_tokens: bool = True
    skip_special_tokens: bool = True
    preprocessing_instance_count: int = 1
    postprocessing_instance_count: int = 1
    bls_instance_count: int = 1
    bls_max_requests_in_flight: int = 64
    accumulate_tokens: bool = False
    tensorrt_llm_model_name: str = "tensorrt_llm"
    max_queue_delay_microseconds: int = 0
    max_queue_size: int = 0
    exclude_input_in_output: bool = False
    # portable runtime (backend python)
    hf_model_dir: str = HF_MODEL_DIR
    device: str = "auto"
    dtype: str = "auto"
    max_num_sequences: int = 8
    # TensorRT-LLM C++ backend
    engine_dir: str = ENGINE_DIR
    batching_strategy: str = "inflight_fused_batching"
    max_beam_width: int = 1
    batch_scheduler_policy: str = "guaranteed_no_evict"
    kv_cache_free_gpu_mem_fraction: float = 0.9
    enable_kv_cache_reuse: bool = False
    enable_chunked_context: bool = False

    @property
    def triton_backend(self) -> str:
        return "python" if self.runtime == "hf" else "tensorrtllm"

    def template_vars(self) -> dict[str, object]:
        return {**asdict(self), "triton_backend": self.triton_backend}
