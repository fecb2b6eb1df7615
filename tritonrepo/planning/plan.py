"""What a deployment plan is: the runtime that serves a model, in which dtype and parallelism, with which limits and
memory, and why. Data only; planner.py decides it, `tritonrepo plan` prints it, `tritonrepo build` follows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tritonrepo.hardware import Hardware
from tritonrepo.planning.limits import DEFAULT_HF_BATCH, Limits
from tritonrepo.planning.llmapi import LlmApiPlan
from tritonrepo.planning.memory import MemoryEstimate
from tritonrepo.source.catalog import ModelFacts


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # "hf" | "tensorrtllm" | "pytorch"
    reason: str


@dataclass(frozen=True)
class DeploymentPlan:
    model: str
    facts: ModelFacts
    hardware: Hardware
    runtime: str
    reason: str
    limits: Limits
    dtype: str = "float32"
    weight_dtype: str = "float32"
    kv_cache_dtype: str = "float32"
    tp_size: int = 1
    pp_size: int = 1
    max_num_tokens: int = 0
    gemm_plugin: str | None = None
    gpt_attention_plugin: str | None = None
    use_paged_context_fmha: bool = False
    enable_chunked_context: bool = False
    kv_cache_free_gpu_mem_fraction: float = 0.9
    triton_max_batch_size: int = DEFAULT_HF_BATCH
    instance_count: int = 1  # preprocessing, postprocessing and BLS instances each
    decoupled: bool = True
    memory: MemoryEstimate | None = None
    notes: tuple[str, ...] = field(default=())
    llmapi: LlmApiPlan | None = None  # the PyTorch path's deployment (runtime "pytorch")

    @property
    def world_size(self) -> int:
        return self.tp_size * self.pp_size

    def as_dict(self) -> dict:
        data = asdict(self)
        data["facts"] = self.facts.as_dict()
        data["hardware"] = self.hardware.as_dict()
        data["memory"] = self.memory.as_dict() if self.memory else None
        data["world_size"] = self.world_size
        data["notes"] = list(self.notes)
        data["llmapi"] = self.llmapi.as_dict() if self.llmapi else None
        return data
