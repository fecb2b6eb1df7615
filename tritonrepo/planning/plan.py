"""Planning, pure: which runtime serves a model, in which dtype and parallelism, with which limits, and whether
it fits, from model facts + hardware + user limits. `tritonrepo plan` prints it; `tritonrepo build` follows it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from tritonrepo.errors import PlanDoesNotFitError, PlanError
from tritonrepo.hardware import GpuSpec, Hardware, known_profiles
from tritonrepo.planning.llmapi import LlmApiPlan, LlmApiRequest, plan_llmapi
from tritonrepo.planning.memory import MemoryEstimate, estimate, gib
from tritonrepo.source.catalog import ModelFacts, reasoning_parser

RUNTIMES = ("auto", "hf", "tensorrtllm")
QUANTIZATIONS = ("none", "fp8", "fp8-kv")
ENGINE_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM")  # what our TensorRT-LLM convert path handles
DEFAULT_HF_MAX_SEQ_LEN = 4096  # the portable runtime keeps a full KV cache per sequence: stay modest by default
DEFAULT_HF_BATCH = 8
DEFAULT_ENGINE_MAX_SEQ_LEN = 8192
DEFAULT_ENGINE_BATCH = 256
DEFAULT_MAX_NUM_TOKENS = 8192  # trtllm-build's own default
USEFUL_SEQUENCES = 4  # a KV cache that holds fewer full-length sequences than this is not worth serving from
DEFAULT_KV_FRACTION = 0.9  # engines; the PyTorch path has its own (planning/llmapi.py)


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # "hf" | "tensorrtllm" | "pytorch"
    reason: str


@dataclass(frozen=True)
class Limits:
    max_batch_size: int
    max_input_len: int
    max_seq_len: int


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


# --- runtime choice ------------------------------------------------------------------------------------------------
def choose_runtime(
    requested: str, *, tensorrt_llm_installed: bool, gpu_count: int, architecture: str = "LlamaForCausalLM"
) -> RuntimeChoice:
    if requested not in RUNTIMES:
        raise PlanError(f"unknown runtime {requested!r}", hint=f"Use one of: {', '.join(RUNTIMES)}.")
    if requested == "hf":
        return RuntimeChoice("hf", "--runtime hf: the portable runtime (transformers + PyTorch, Python backend)")
    missing = [what for what, ok in (("TensorRT-LLM", tensorrt_llm_installed), ("a GPU", gpu_count > 0)) if not ok]
    supported = architecture in ENGINE_ARCHITECTURES
    if requested == "auto":
        if missing:
            return RuntimeChoice(
                "hf",
                f"--runtime auto: {' and '.join(missing)} not found here, so the portable runtime serves the model",
            )
        if not supported:
            return RuntimeChoice("hf", f"--runtime auto: {architecture} has no TensorRT-LLM engine path here")
        return RuntimeChoice("tensorrtllm", f"--runtime auto: TensorRT-LLM and {gpu_count} GPU(s) found")
    if missing:
        raise PlanError(
            f"--runtime tensorrtllm needs {' and '.join(missing)}, which this machine lacks",
            hint="Run inside the NGC tritonserver:<yy.mm>-trtllm-python-py3 container on a GPU machine, or use --runtime hf.",
        )
    if not supported:
        raise PlanError(
            f"--runtime tensorrtllm supports {', '.join(ENGINE_ARCHITECTURES)}, not {architecture}",
            hint="Use --runtime hf.",
        )
    return RuntimeChoice("tensorrtllm", "--runtime tensorrtllm")


def plan_limits(
    model_config: dict,
    *,
    max_batch_size: int | None = None,
    max_input_len: int | None = None,
    max_seq_len: int | None = None,
    default_seq_len: int = DEFAULT_HF_MAX_SEQ_LEN,
    default_batch: int = DEFAULT_HF_BATCH,
) -> Limits:
    """The model's context length capped to a modest default unless asked; input gets half by default."""
    context = int(model_config.get("max_position_embeddings") or 0) or default_seq_len
    seq = max_seq_len or min(context, default_seq_len)
    if seq > context:
        raise PlanError(f"--max-seq-len {seq} exceeds the model's context length {context} (max_position_embeddings)")
    inp = max_input_len or max(1, seq // 2)
    if inp >= seq:
        raise PlanError(
            f"--max-input-len {inp} must be smaller than --max-seq-len {seq}", hint="Leave room for generated tokens."
        )
    batch = max_batch_size or default_batch
    for name, value in (("--max-batch-size", batch), ("--max-input-len", inp), ("--max-seq-len", seq)):
        if value < 1:
            raise PlanError(f"{name} must be at least 1, got {value}")
    return Limits(max_batch_size=batch, max_input_len=inp, max_seq_len=seq)


# --- the deployment plan ---------------------------------------------------------------------------------------------
def plan_deployment(
    model: str,
    facts: ModelFacts,
    hardware: Hardware,
    request: PlanRequest,
    *,
    tensorrt_llm_available: bool,
    model_ref: str | None = None,
    installed_version: str | None = None,
) -> DeploymentPlan:
    """`model_ref` is what the PyTorch path loads (a Hub id or folder; default `model`); `installed_version` the
    TensorRT-LLM here, which that path targets unless the request names one."""
    if request.quantization not in QUANTIZATIONS:
        raise PlanError(
            f"unknown quantization {request.quantization!r}", hint=f"Use one of: {', '.join(QUANTIZATIONS)}."
        )
    if facts.is_moe:
        return _pytorch_path_plan(model, model_ref or model, facts, hardware, request, installed_version)
    if request.kv_cache_free_gpu_mem_fraction is None:
        request = replace(request, kv_cache_free_gpu_mem_fraction=DEFAULT_KV_FRACTION)
    choice = choose_runtime(
        request.runtime,
        tensorrt_llm_installed=tensorrt_llm_available,
        gpu_count=hardware.count,
        architecture=facts.architecture,
    )
    config = {"max_position_embeddings": facts.max_position_embeddings}
    if choice.runtime == "hf":
        limits = plan_limits(
            config,
            max_batch_size=request.max_batch_size,
            max_input_len=request.max_input_len,
            max_seq_len=request.max_seq_len,
        )
        return DeploymentPlan(
            model, facts, hardware, "hf", choice.reason, limits,
            triton_max_batch_size=limits.max_batch_size, decoupled=request.decoupled,
        )  # fmt: skip
    limits = plan_limits(
        config,
        max_batch_size=request.max_batch_size,
        max_input_len=request.max_input_len,
        max_seq_len=request.max_seq_len,
        default_seq_len=DEFAULT_ENGINE_MAX_SEQ_LEN,
        default_batch=DEFAULT_ENGINE_BATCH,
    )
    return _engine_plan(model, facts, hardware, request, limits, choice.reason)


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
    model, facts, hardware: Hardware, request: PlanRequest, limits: Limits, reason: str, *, explain: bool = True
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


def nearest_plans(model, facts, hardware: Hardware, request: PlanRequest, limits: Limits, most: int = 3) -> list[str]:
    """Plans that would fit, nearest first: more of the same GPU, FP8 on this GPU, a shorter context, a larger GPU."""
    found = []

    def try_plan(label: str, hw: Hardware, req: PlanRequest, lim: Limits) -> bool:
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


def _pytorch_path_plan(
    model: str, model_ref: str, facts: ModelFacts, hardware: Hardware, request: PlanRequest, installed: str | None
) -> DeploymentPlan:
    """DeepSeek-V3-architecture MoE models: no engine compile; TensorRT-LLM's PyTorch backend (trtllm-serve or the
    llmapi Triton model), sized by llmapi.py."""
    if request.tp_size or request.quantization != "none" or request.max_input_len:
        raise PlanError(
            f"{model} takes the PyTorch-backend path, where --tp-size, --quantization and --max-input-len do not "
            "apply: tensor parallelism spans every GPU and the checkpoint's own precision is served",
            hint="Choose the GPUs with --gpu (and --nodes), the precision by the checkpoint (e.g. nvidia/DeepSeek-R1-FP4).",
        )
    llmapi_request = replace(
        request.llmapi,
        pp_size=request.pp_size,
        max_batch_size=request.max_batch_size,
        max_num_tokens=request.max_num_tokens,
        max_seq_len=request.max_seq_len,
        kv_cache_free_gpu_memory_fraction=request.kv_cache_free_gpu_mem_fraction,
    )
    llmapi = plan_llmapi(
        model_ref, facts, hardware, llmapi_request, reasoning_parser=reasoning_parser(model, model_ref),
        display_name=model, installed_version=installed,
    )  # fmt: skip
    sizing = llmapi.sizing
    reason = (
        f"{facts.architecture} is a mixture-of-experts model: TensorRT-LLM's PyTorch backend serves it "
        f"({llmapi.serving}), no engine build"
    )
    max_input_len = max(1, llmapi.max_seq_len // 2)
    limits = Limits(max_batch_size=llmapi.max_batch_size, max_input_len=max_input_len, max_seq_len=llmapi.max_seq_len)
    return DeploymentPlan(
        model, facts, hardware, "pytorch", reason, limits, dtype="bfloat16", weight_dtype=llmapi.precision,
        kv_cache_dtype=llmapi.kv_cache_dtype, tp_size=sizing.tp_size, pp_size=sizing.pp_size,
        max_num_tokens=llmapi.max_num_tokens, kv_cache_free_gpu_mem_fraction=llmapi.kv_cache_free_gpu_memory_fraction,
        triton_max_batch_size=llmapi.max_batch_size, decoupled=True, notes=sizing.notes, llmapi=llmapi,
    )  # fmt: skip
