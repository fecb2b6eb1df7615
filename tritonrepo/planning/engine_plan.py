"""The TensorRT-LLM engine plan, pure: dtypes for the GPU, the smallest tensor parallel size whose KV cache holds
enough full-length sequences, plugins and chunked context, and the nearest plans that fit when none does."""

from __future__ import annotations

from dataclasses import replace

from tritonrepo.errors import PlanDoesNotFitError, PlanError
from tritonrepo.hardware import GpuSpec, Hardware, known_profiles
from tritonrepo.planning.limits import Limits, plan_limits
from tritonrepo.planning.memory import MemoryEstimate, estimate, gib
from tritonrepo.planning.plan import DeploymentPlan
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.source.catalog import ModelFacts

ENGINE_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")  # what our TensorRT-LLM convert path handles
DEFAULT_ENGINE_MAX_SEQ_LEN = 8192
DEFAULT_ENGINE_BATCH = 256
DEFAULT_MAX_NUM_TOKENS = 8192  # trtllm-build's own default
USEFUL_SEQUENCES = 4  # a KV cache that holds fewer full-length sequences than this is not worth serving from
DEFAULT_KV_FRACTION = 0.9  # engines; the PyTorch path has its own (planning/llmapi.py)


def plan_engines(
    model: str, facts: ModelFacts, hardware: Hardware, request: DeploymentRequest, reason: str
) -> DeploymentPlan:
    """The engine plan for `hardware`, which has a GPU; PlanDoesNotFitError with the nearest plans that fit."""
    if request.kv_cache_free_gpu_mem_fraction is None:
        request = replace(request, kv_cache_free_gpu_mem_fraction=DEFAULT_KV_FRACTION)
    limits = plan_limits(
        {"max_position_embeddings": facts.max_position_embeddings},
        max_batch_size=request.max_batch_size,
        max_input_len=request.max_input_len,
        max_seq_len=request.max_seq_len,
        default_seq_len=DEFAULT_ENGINE_MAX_SEQ_LEN,
        default_batch=DEFAULT_ENGINE_BATCH,
    )
    return _engine_plan(model, facts, hardware, request, limits, reason)


def _dtypes(gpu: GpuSpec, quantization: str) -> tuple[str, str, str]:
    """(compute dtype, weight dtype, KV cache dtype)."""
    dtype = "bfloat16" if gpu.supports_bf16 else "float16"
    if quantization != "none" and not gpu.supports_fp8:
        raise PlanError(
            f"--quantization {quantization} needs FP8 support (SM89 and newer: L4, L40S, H100, H200, B200); "
            f"{gpu.name} is SM{gpu.sm}",
            hint="Use --quantization none, or plan for a newer GPU with --gpu.",
        )
    weights = "fp8" if quantization == "fp8" else dtype
    kv = "fp8" if quantization in ("fp8", "fp8-kv") else dtype
    return dtype, weights, kv


def _bytes(dtype: str) -> float:
    return {"fp8": 1, "bfloat16": 2, "float16": 2, "float32": 4}[dtype]


def _tp_candidates(facts: ModelFacts, gpus: int, pp: int, forced: int | None) -> list[int]:
    if forced:
        return [forced]
    candidates = []
    tp = 1
    while tp * pp <= gpus:
        if facts.num_heads % tp == 0 and (facts.num_kv_heads % tp == 0 or tp % facts.num_kv_heads == 0):
            candidates.append(tp)
        tp *= 2
    return candidates


def _estimate(facts, gpu: GpuSpec, tp, pp, weights_dtype, kv_dtype, dtype, limits: Limits, max_num_tokens, fraction):
    return estimate(
        facts,
        gpu_memory=gpu.memory_bytes,
        tp=tp,
        pp=pp,
        weight_bytes_per_param=_bytes(weights_dtype),
        kv_bytes_per_value=_bytes(kv_dtype),
        activation_bytes_per_value=_bytes(dtype),
        max_num_tokens=max_num_tokens,
        max_batch_size=limits.max_batch_size,
        max_seq_len=limits.max_seq_len,
        kv_cache_free_gpu_mem_fraction=fraction,
    )


def _useful(memory: MemoryEstimate, limits: Limits) -> bool:
    return memory.fits and memory.max_sequences >= min(limits.max_batch_size, USEFUL_SEQUENCES)


def _engine_plan(
    model, facts, hardware: Hardware, request: DeploymentRequest, limits: Limits, reason: str, *, explain: bool = True
) -> DeploymentPlan:
    gpu = hardware.gpu
    assert gpu is not None  # choose_runtime only picks tensorrtllm with a GPU
    dtype, weights_dtype, kv_dtype = _dtypes(gpu, request.quantization)
    max_num_tokens = request.max_num_tokens or DEFAULT_MAX_NUM_TOKENS
    pp = request.pp_size
    if request.tp_size and request.tp_size * pp > hardware.count:
        raise PlanError(f"tensor parallel {request.tp_size} x pipeline parallel {pp} needs {request.tp_size * pp} GPUs; "
                        f"{hardware.describe()} has {hardware.count}")  # fmt: skip
    chosen = None
    for tp in _tp_candidates(facts, hardware.count, pp, request.tp_size):
        memory = _estimate(facts, gpu, tp, pp, weights_dtype, kv_dtype, dtype, limits, max_num_tokens,
                           request.kv_cache_free_gpu_mem_fraction)  # fmt: skip
        if _useful(memory, limits):
            chosen = (tp, memory)
            break
    if chosen is None:
        if not explain:  # asked by nearest_plans(): no search for alternatives of alternatives
            raise PlanDoesNotFitError(f"{model} does not fit {hardware.describe()}")
        raise _does_not_fit(model, facts, hardware, request, limits, weights_dtype, kv_dtype, dtype, max_num_tokens)
    tp, memory = chosen
    notes = []
    if hardware.count > tp * pp:
        notes.append(f"uses {tp * pp} of {hardware.count} GPUs; the rest could serve {hardware.count // (tp * pp) - 1} "
                     "more replica(s)")  # fmt: skip
    chunked = limits.max_input_len > max_num_tokens
    # TensorRT-LLM refuses an FP8 KV cache with paged context FMHA unless the weights are FP8 too
    # (tensorrt_llm/builder.py: "FP8 Paged Context FMHA only works with fp8 quantization workflow").
    paged_context_fmha = not (kv_dtype == "fp8" and weights_dtype != "fp8")
    if chunked and not paged_context_fmha:
        raise PlanError(
            f"max_input_len {limits.max_input_len} > max_num_tokens {max_num_tokens} needs chunked context, which needs "
            "paged context FMHA, which TensorRT-LLM does not combine with an FP8 KV cache on non-FP8 weights",
            hint="Use --quantization fp8, or raise --max-num-tokens to at least --max-input-len.",
        )
    if chunked:
        notes.append(f"max_input_len {limits.max_input_len} > max_num_tokens {max_num_tokens}: chunked context enabled")
    return DeploymentPlan(
        model, facts, hardware, "tensorrtllm", reason, limits,
        dtype=dtype, weight_dtype=weights_dtype, kv_cache_dtype=kv_dtype, tp_size=tp, pp_size=pp,
        max_num_tokens=max_num_tokens, gemm_plugin=dtype if weights_dtype != "fp8" else "fp8",
        gpt_attention_plugin=dtype, use_paged_context_fmha=paged_context_fmha, enable_chunked_context=chunked,
        kv_cache_free_gpu_mem_fraction=request.kv_cache_free_gpu_mem_fraction,
        triton_max_batch_size=min(limits.max_batch_size, 64), instance_count=4 if limits.max_batch_size >= 64 else 1,
        decoupled=request.decoupled, memory=memory, notes=tuple(notes),
    )  # fmt: skip


def _does_not_fit(model, facts, hardware, request, limits, weights_dtype, kv_dtype, dtype, max_num_tokens):
    gpu = hardware.gpu
    tp = max(_tp_candidates(facts, hardware.count, request.pp_size, request.tp_size) or [1])
    memory = _estimate(facts, gpu, tp, request.pp_size, weights_dtype, kv_dtype, dtype, limits, max_num_tokens,
                       request.kv_cache_free_gpu_mem_fraction)  # fmt: skip
    need = min(limits.max_batch_size, USEFUL_SEQUENCES)
    numbers = (
        f"{model} on {hardware.describe()} (tensor parallel {tp}): {weights_dtype} weights take "
        f"{gib(memory.weights)} per GPU of {gib(gpu.memory_bytes)}, leaving a KV cache of {gib(memory.kv_cache)} "
        f"= {memory.max_sequences} sequence(s) of {limits.max_seq_len} tokens; a useful plan holds at least {need}"
    )
    alternatives = nearest_plans(model, facts, hardware, request, limits)
    hint = ("Nearest plans that fit: " + "; ".join(alternatives) + ".") if alternatives else "No nearby plan fits."
    return PlanDoesNotFitError(numbers + ".", hint=hint)


def nearest_plans(
    model, facts, hardware: Hardware, request: DeploymentRequest, limits: Limits, most: int = 3
) -> list[str]:
    """Plans that would fit, nearest first: more of the same GPU, FP8 on this GPU, a shorter context, a larger GPU."""
    found = []

    def try_plan(label: str, hw: Hardware, req: DeploymentRequest, lim: Limits) -> bool:
        try:
            plan = _engine_plan(model, facts, hw, req, lim, "", explain=False)
        except PlanError:
            return False
        found.append(
            f"{label} (tensor parallel {plan.tp_size}, {plan.memory.max_sequences} sequences of {lim.max_seq_len})"
        )
        return True

    gpu = hardware.gpu
    for count in (2, 4, 8, 16):
        if count > hardware.count and try_plan(
            f"--gpu '{gpu.name} x{count}'", replace(hardware, count=count), request, limits
        ):
            break
    if request.quantization == "none" and gpu.supports_fp8:
        try_plan("--quantization fp8", hardware, replace(request, quantization="fp8"), limits)
    seq = limits.max_seq_len // 2
    while seq >= 1024:
        shorter = replace(limits, max_seq_len=seq, max_input_len=min(limits.max_input_len, seq // 2))
        if try_plan(f"--max-seq-len {seq}", hardware, request, shorter):
            break
        seq //= 2
    for profile in sorted(known_profiles(), key=lambda p: p.memory_bytes):
        if profile.memory_bytes > gpu.memory_bytes and profile.supports_bf16 >= gpu.supports_bf16:
            bigger = Hardware(gpu=profile, count=hardware.count, source="profile")
            if try_plan(f"--gpu '{profile.name} x{hardware.count}'", bigger, request, limits):
                break
    return found[:most]
