"""The PyTorch-backend deployment plan: layout (llmapi_support.py) plus the serving knobs a `--profile` chooses. Pure.

Throughput follows the DeepSeek-R1 recipe's max-throughput settings (seed 001: attention data parallelism, CUDA graphs
up to batch 128 with padding, fp8 KV cache, MTP with one next-n layer, stream interval 10); latency keeps attention
tensor-parallel, small batches and three MTP layers, and streams every token."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tritonrepo.errors import PlanError
from tritonrepo.hardware import Hardware
from tritonrepo.planning.llmapi_support import Sizing, checkpoint_precision, size
from tritonrepo.planning.memory import MemoryEstimate
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.source.catalog import ModelFacts
from tritonrepo.trtllm.versions import Version, container_for, newest_container, parse_version

PROFILES = ("throughput", "latency")
SERVINGS = ("trtllm-serve", "triton")
KV_CACHE_DTYPES = ("auto", "fp8")
FLAT_SCHEMA = Version(1, 0, 0)  # cuda_graph_config / kv_cache_config / moe_config keys (upstream.md)
OVERLAP_SCHEDULER_ON_BY_DEFAULT = Version(0, 20, 0)  # PyTorchConfig has disable_overlap_scheduler from then
TRTLLM_SERVE_REASONING_PARSER = Version(1, 0, 0)
LLMAPI_TRITON_MODEL = Version(0, 19, 0)
MIN_VERSION = Version(0, 19, 0)
DEFAULT_MAX_NUM_TOKENS = 8192
DEFAULT_MAX_SEQ_LEN = 8192
DEFAULT_KV_FRACTION = 0.8  # seed 001; lower to 0.7 on CUDA out-of-memory
H200_LONG_INPUT = 8192  # seed 001: 8K-token inputs on H200 fragment PyTorch's caching allocator
TRTLLM_IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:{version}"


@dataclass(frozen=True)
class Knobs:
    max_batch_size: int
    cuda_graph_max_batch_size: int
    attention_dp: bool
    mtp_layers: int
    stream_interval: int


PROFILE_KNOBS = {
    "throughput": Knobs(max_batch_size=1024, cuda_graph_max_batch_size=128, attention_dp=True, mtp_layers=1,
                        stream_interval=10),
    "latency": Knobs(max_batch_size=32, cuda_graph_max_batch_size=32, attention_dp=False, mtp_layers=3,
                     stream_interval=1),
}  # fmt: skip


@dataclass(frozen=True)
class LlmApiPlan:
    model: str  # what trtllm-serve / LLM(model=...) loads: a Hub id or a local folder
    precision: str  # checkpoint precision: fp8 | nvfp4
    sizing: Sizing
    profile: str
    serving: str
    trtllm_version: str
    max_batch_size: int
    max_num_tokens: int
    max_seq_len: int
    kv_cache_dtype: str
    kv_cache_free_gpu_memory_fraction: float
    attention_dp: bool
    cuda_graph_max_batch_size: int
    mtp_layers: int
    stream_interval: int
    moe_max_num_tokens: int | None
    reasoning_parser: str | None
    host: str
    port: int
    image: str
    env: tuple[tuple[str, str], ...] = ()
    comments: tuple[str, ...] = ()  # known issues and their workarounds, written into the files
    chunked_prefill: bool = False  # prompts longer than max_num_tokens are prefilled in chunks (dense plans)
    memory: MemoryEstimate | None = None  # the estimate that sized a dense plan (llmapi_dense.py)

    @property
    def moe(self) -> bool:
        return bool(self.sizing.moe_backend)

    @property
    def schema(self) -> str:
        return "flat" if parse_version(self.trtllm_version) >= FLAT_SCHEMA else "pytorch_backend_config"

    def as_dict(self) -> dict:
        data = asdict(self)
        data["schema"] = self.schema
        data["env"] = dict(self.env)
        data["comments"] = list(self.comments)
        data["sizing"]["row"]["min_version"] = str(self.sizing.row.min_version)
        return data


def default_version(installed: str | None) -> str:
    return installed or newest_container().trtllm


def target_version(choices, installed: str | None, *, needs: str) -> tuple[str, Version]:
    """The TensorRT-LLM to write for (--trtllm-version, else the installed one, else the newest known) and its parsed
    form; one older than MIN_VERSION is refused, `needs` saying what it predates."""
    version = choices.trtllm_version or default_version(installed)
    try:
        parsed = parse_version(version)
    except ValueError as error:
        raise PlanError(str(error), hint="Give a version such as 1.0.0 (--trtllm-version).") from None
    if parsed < MIN_VERSION:
        raise PlanError(
            f"TensorRT-LLM {version} predates {needs}", hint=f"Target {MIN_VERSION} or newer (--trtllm-version)."
        )
    return version, parsed


def checked_max_seq_len(request: DeploymentRequest, facts: ModelFacts) -> int:
    """--max-seq-len, else the model's context length up to DEFAULT_MAX_SEQ_LEN; never beyond the model's."""
    max_seq_len = request.max_seq_len or min(DEFAULT_MAX_SEQ_LEN, facts.max_position_embeddings)
    if max_seq_len > facts.max_position_embeddings:
        raise PlanError(f"--max-seq-len {max_seq_len} exceeds the model's context length "
                        f"{facts.max_position_embeddings}")  # fmt: skip
    return max_seq_len


def check_choices(choices) -> None:
    """The PyTorch path's named choices (profile, serving, KV-cache dtype) are ones it knows."""
    for name, value, allowed in (
        ("--profile", choices.profile, PROFILES),
        ("--serving", choices.serving, SERVINGS),
        ("--kv-cache-dtype", choices.kv_cache_dtype or "auto", KV_CACHE_DTYPES),
    ):
        if value not in allowed:
            raise PlanError(f"unknown {name} {value!r}", hint=f"Use one of: {', '.join(allowed)}.")


def plan_llmapi(
    model: str, facts: ModelFacts, hardware: Hardware, request: DeploymentRequest, *, reasoning_parser: str | None,
    display_name: str, installed_version: str | None = None,
) -> LlmApiPlan:  # fmt: skip
    """The PyTorch path's plan: the request's limits and its `llmapi` choices, for `hardware`."""
    choices = request.llmapi
    check_choices(choices)
    version, parsed = target_version(
        choices, installed_version, needs="the PyTorch-backend DeepSeek recipes and the llmapi Triton model"
    )
    precision = checkpoint_precision(facts.native_dtype)
    sizing = size(display_name, precision, hardware, version, nodes=choices.nodes, pp_size=request.pp_size,
                  ep_size=choices.ep_size, num_experts=facts.num_experts)  # fmt: skip
    knobs = PROFILE_KNOBS[choices.profile]
    gpu = hardware.gpu
    max_seq_len = checked_max_seq_len(request, facts)
    max_num_tokens = request.max_num_tokens or DEFAULT_MAX_NUM_TOKENS
    max_batch_size = request.max_batch_size or knobs.max_batch_size
    flat = parsed >= FLAT_SCHEMA
    comments = [
        "CUDA out of memory: lower kv_cache_config.free_gpu_memory_fraction (0.7 or less) in "
        f"{'tensorrt_llm/1/model.yaml' if choices.serving == 'triton' else 'extra-llm-api-options.yml'}, or "
        "max_batch_size or max_seq_len.",
        "Accuracy checks with lm_eval: pass add_special_tokens=False; the tokenizer's extra BOS costs GSM8K points.",
    ]
    env: list[tuple[str, str]] = []
    kv = choices.kv_cache_dtype
    if kv is None:
        if gpu.arch == "blackwell" and not flat:
            kv = "auto"
            comments.append("KV cache left at auto: FP8 MLA on Blackwell had accuracy issues before TensorRT-LLM 1.0.")
        else:
            kv = "fp8"  # FP8 latent KV cache and MLA: Hopper (FlashMLA FP8) and Blackwell, 1.0 on
    if gpu.name == "H200":
        comments.append("H200 with ~8K-token inputs: PyTorch's caching allocator can fragment into an out-of-memory; "
                        "PYTORCH_CUDA_ALLOC_CONF=max_split_size_mb:8192 avoids it.")  # fmt: skip
        if max_seq_len >= H200_LONG_INPUT:
            env.append(("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:8192"))
    if gpu.arch == "hopper" and precision == "fp8":
        comments.append("DeepGEMM runs the FP8 block-scaled GEMMs on Hopper; TRTLLM_DG_ENABLED=0 turns it off if its "
                        "JIT fails.")  # fmt: skip
    if sizing.moe_backend != "CUTLASS":
        comments.append(f"moe_config.backend {sizing.moe_backend}: CUTLASS, the default, does not cover "
                        f"{precision.upper()} on {gpu.name}" + (f" with expert parallel {sizing.ep_size}"
                                                                if sizing.ep_size > 8 else ""))  # fmt: skip
    mtp = knobs.mtp_layers if choices.mtp_layers is None else choices.mtp_layers
    if mtp < 0:
        raise PlanError(f"--mtp {mtp} must be 0 (off) or more next-n layers")
    if choices.serving == "triton" and parsed < LLMAPI_TRITON_MODEL:
        raise PlanError(f"--serving triton needs the llmapi Triton model, TensorRT-LLM {LLMAPI_TRITON_MODEL}+")
    fraction = request.kv_cache_free_gpu_mem_fraction or DEFAULT_KV_FRACTION
    image = TRTLLM_IMAGE.format(version=version)
    if choices.serving == "triton":
        image = container_for(version) or image
    return LlmApiPlan(
        model=model, precision=precision, sizing=sizing, profile=choices.profile, serving=choices.serving,
        trtllm_version=version, max_batch_size=max_batch_size, max_num_tokens=max_num_tokens, max_seq_len=max_seq_len,
        kv_cache_dtype=kv, kv_cache_free_gpu_memory_fraction=fraction, attention_dp=knobs.attention_dp,
        cuda_graph_max_batch_size=min(knobs.cuda_graph_max_batch_size, max_batch_size), mtp_layers=mtp,
        stream_interval=knobs.stream_interval,
        moe_max_num_tokens=max_num_tokens if sizing.moe_backend in ("DEEPGEMM", "WIDEEP", "CUTEDSL") else None,
        reasoning_parser=reasoning_parser, host=choices.host, port=choices.port, image=image, env=tuple(env),
        comments=tuple(comments),
    )  # fmt: skip
