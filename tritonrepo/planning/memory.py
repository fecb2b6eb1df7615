"""GPU memory estimate for serving a model with TensorRT-LLM: weights, activations, KV cache, per GPU. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tritonrepo.source.catalog import ModelFacts

GIB = 1 << 30
# CUDA context, TensorRT/cuBLAS workspaces and NCCL buffers: what a loaded engine takes besides weights and the
# activation pool (observed 1-3 GiB; this is a planning estimate, not a measurement).
RUNTIME_OVERHEAD_BYTES = 2 * GIB


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU; `max_sequences` is how many sequences of max_seq_len tokens the KV cache holds at once."""

    gpu_total: int
    weights: int
    activations: int
    runtime_overhead: int
    kv_cache: int
    kv_cache_per_token: float
    kv_cache_tokens: int
    max_sequences: int

    @property
    def fits(self) -> bool:
        return self.kv_cache > 0 and self.kv_cache_tokens > 0

    def as_dict(self) -> dict:
        return {**asdict(self), "fits": self.fits}


def kv_heads_per_gpu(facts: ModelFacts, tp: int) -> float:
    """KV heads are split across tensor-parallel ranks; with more ranks than heads each rank keeps a copy of one."""
    if facts.kv_lora_rank:  # MLA: the compressed latent is replicated on every rank
        return 1.0
    return max(facts.num_kv_heads / tp, 1.0)


def estimate(
    facts: ModelFacts,
    *,
    gpu_memory: int,
    tp: int,
    pp: int,
    weight_bytes_per_param: float,
    kv_bytes_per_value: float,
    activation_bytes_per_value: float,
    max_num_tokens: int,
    max_batch_size: int,
    max_seq_len: int,
    kv_cache_free_gpu_mem_fraction: float,
) -> MemoryEstimate:
    weights = int(facts.num_params * weight_bytes_per_param / (tp * pp))
    # Peak activations of one forward pass over max_num_tokens tokens: hidden states, attention and MLP
    # intermediates (the MLP split by TP), plus fp32 logits for a full batch.
    per_token = 8 * facts.hidden_size + 3 * facts.intermediate_size / tp
    activations = int(max_num_tokens * per_token * activation_bytes_per_value + max_batch_size * facts.vocab_size * 4)
    free = gpu_memory - weights - activations - RUNTIME_OVERHEAD_BYTES
    kv_cache = max(int(free * kv_cache_free_gpu_mem_fraction), 0)
    if facts.kv_lora_rank:
        per_token_kv = facts.kv_cache_bytes_per_token(kv_bytes_per_value) / pp
    else:
        per_token_kv = 2 * facts.num_layers / pp * kv_heads_per_gpu(facts, tp) * facts.head_dim * kv_bytes_per_value
    tokens = int(kv_cache // per_token_kv) if per_token_kv else 0
    return MemoryEstimate(
        gpu_total=gpu_memory,
        weights=weights,
        activations=activations,
        runtime_overhead=RUNTIME_OVERHEAD_BYTES,
        kv_cache=kv_cache,
        kv_cache_per_token=per_token_kv,
        kv_cache_tokens=tokens,
        max_sequences=tokens // max_seq_len if max_seq_len else 0,
    )


def gib(value: float) -> str:
    return f"{value / GIB:.1f} GiB"
