"""TensorRT-LLM's PyTorch backend for dense (not mixture-of-experts) models: the layout and serving limits from the
hardware, one rule for trtllm-serve, the llmapi Triton model and Dynamo's dense workers. Pure.

The rule: the smallest tensor parallel size (a power of two that splits the attention heads, within one node) whose
weights leave a KV cache of at least USEFUL_SEQUENCES full-length sequences (memory.py); past one node, pipeline stages
across nodes. max_batch_size is what the KV cache holds at half the context, capped by the profile; CUDA graphs are
captured up to it. The checkpoint's own precision is served (the backend loads pre-quantized checkpoints; it does not
quantize), so --quantization does not apply; --kv-cache-dtype fp8 halves the KV cache on SM89 and newer."""

from __future__ import annotations

from dataclasses import dataclass

from tritonrepo.errors import PlanDoesNotFitError, PlanError
from tritonrepo.hardware import Hardware
from tritonrepo.planning.llmapi import (
    DEFAULT_KV_FRACTION,
    DEFAULT_MAX_NUM_TOKENS,
    LLMAPI_TRITON_MODEL,
    MIN_VERSION,
    TRTLLM_IMAGE,
    LlmApiPlan,
    check_choices,
    checked_max_seq_len,
    target_version,
)
from tritonrepo.planning.llmapi_support import Row, Sizing
from tritonrepo.planning.memory import MemoryEstimate, estimate, gib
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.source.catalog import ModelFacts
from tritonrepo.trtllm.versions import container_for

USEFUL_SEQUENCES = 4  # the engine path's rule too (engine_plan.py): fewer full-length sequences is not worth serving
MIN_SM = 80  # the PyTorch backend's kernels: Ampere and newer
GPUS_PER_NODE = 8
WEIGHT_BYTES = {"nvfp4": 0.5, "fp8": 1, "float32": 4}  # anything else: 2 (bf16 / fp16)


@dataclass(frozen=True)
class DenseKnobs:
    max_batch_size: int  # the cap; the KV cache may allow less
    cuda_graph_max_batch_size: int
    stream_interval: int


DENSE_KNOBS = {
    "throughput": DenseKnobs(max_batch_size=256, cuda_graph_max_batch_size=128, stream_interval=10),
    "latency": DenseKnobs(max_batch_size=32, cuda_graph_max_batch_size=32, stream_interval=1),
}


@dataclass(frozen=True)
class DenseLayout:
    tp_size: int
    pp_size: int
    memory: MemoryEstimate
    notes: tuple[str, ...] = ()

    @property
    def gpus(self) -> int:
        return self.tp_size * self.pp_size


def checkpoint_precision(facts: ModelFacts) -> str:
    dtype = facts.native_dtype
    return {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(dtype, dtype)


def _splits_heads(facts: ModelFacts, tp: int) -> bool:
    return facts.num_heads % tp == 0 and (facts.num_kv_heads % tp == 0 or tp % facts.num_kv_heads == 0)


def _candidates(facts: ModelFacts, count: int, tp_size: int | None, pp_size: int) -> list[tuple[int, int]]:
    """(tp, pp) to try, fewest GPUs first: tensor parallel within a node, then pipeline stages over nodes."""
    if tp_size:
        return [(tp_size, pp_size)]
    layouts, world = [], 1
    while world <= count:
        tp = world // pp_size if pp_size > 1 else min(world, GPUS_PER_NODE)
        pp = pp_size if pp_size > 1 else world // tp
        if tp >= 1 and tp * pp == world and _splits_heads(facts, tp) and pp <= facts.num_layers:
            layouts.append((tp, pp))
        world *= 2
    return layouts


def layout(
    model: str, facts: ModelFacts, hardware: Hardware, *, max_seq_len: int, max_num_tokens: int, max_batch_size: int,
    kv_fraction: float, kv_bytes: float, tp_size: int | None = None, pp_size: int = 1, allow_pp: bool = True,
) -> DenseLayout:  # fmt: skip
    """The fewest GPUs whose KV cache holds USEFUL_SEQUENCES sequences of max_seq_len; PlanDoesNotFitError with the
    numbers of the largest layout tried, and the nearest requests that fit."""
    gpu = hardware.gpu
    if gpu is None or not hardware.count:
        raise PlanError(
            f"{model} on TensorRT-LLM's PyTorch backend needs GPUs: it has no CPU path",
            hint="Plan for the target hardware with --gpu, e.g. --gpu 'H100-80GB x2'; or --runtime hf here.",
        )
    if gpu.sm < MIN_SM:
        raise PlanError(
            f"TensorRT-LLM's PyTorch backend needs Ampere (SM80) or newer; {gpu.name} is SM{gpu.sm}",
            hint="Use the engine path (--runtime tensorrtllm) or the portable runtime (--runtime hf) there.",
        )
    if tp_size and tp_size * pp_size > hardware.count:
        raise PlanError(f"tensor parallel {tp_size} x pipeline parallel {pp_size} needs {tp_size * pp_size} GPUs; "
                        f"{hardware.describe()} has {hardware.count}")  # fmt: skip
    weight_bytes = WEIGHT_BYTES.get(facts.native_dtype, 2)
    tried: list[str] = []
    for tp, pp in _candidates(facts, hardware.count, tp_size, pp_size):
        if pp > 1 and not allow_pp:
            break
        memory = estimate(
            facts, gpu_memory=gpu.memory_bytes, tp=tp, pp=pp, weight_bytes_per_param=weight_bytes,
            kv_bytes_per_value=kv_bytes, activation_bytes_per_value=2, max_num_tokens=max_num_tokens,
            max_batch_size=max_batch_size, max_seq_len=max_seq_len, kv_cache_free_gpu_mem_fraction=kv_fraction,
        )  # fmt: skip
        tried.append(f"tensor {tp} x pipeline {pp}: weights {gib(memory.weights)} per GPU of "
                     f"{gib(gpu.memory_bytes)}, KV cache {gib(memory.kv_cache)} = {memory.max_sequences} "
                     f"sequence(s) of {max_seq_len}")  # fmt: skip
        if memory.fits and memory.max_sequences >= USEFUL_SEQUENCES:
            note = (f"tensor {tp} x pipeline {pp}: the fewest GPUs whose {checkpoint_precision(facts)} weights "
                    f"({gib(memory.weights)} per GPU) leave a KV cache of {memory.max_sequences} sequences of "
                    f"{max_seq_len} tokens (at least {USEFUL_SEQUENCES})")  # fmt: skip
            spare = hardware.count // (tp * pp) - 1
            notes = (note,) + ((f"uses {tp * pp} of {hardware.count} GPUs; the rest could serve {spare} more "
                                "replica(s)",) if spare > 0 else ())  # fmt: skip
            return DenseLayout(tp, pp, memory, notes)
    nearest = _nearest(model, facts, hardware, max_seq_len=max_seq_len, max_num_tokens=max_num_tokens,
                       max_batch_size=max_batch_size, kv_fraction=kv_fraction, kv_bytes=kv_bytes, allow_pp=allow_pp,
                       forced=bool(tp_size))  # fmt: skip
    raise PlanDoesNotFitError(
        f"{model} does not fit {hardware.describe()} on the PyTorch backend with room for {USEFUL_SEQUENCES} "
        f"sequences of {max_seq_len} tokens: {'; '.join(tried) or 'no tensor parallel size splits its heads'}",
        hint=("Nearest plans that fit: " + "; ".join(nearest) + ".") if nearest else "No nearby plan fits.",
    )


def _nearest(model, facts, hardware, *, forced: bool, **sizes) -> list[str]:
    """More of the same GPU, an FP8 KV cache, a shorter context: the first of each that fits."""
    if forced:
        return ["leave out --tp-size / --pp-size"]
    found = []

    def fits(label: str, hw: Hardware, **changes) -> bool:
        try:
            chosen = layout(model, facts, hw, **{**sizes, **changes})
        except PlanError:
            return False
        found.append(f"{label} (tensor {chosen.tp_size} x pipeline {chosen.pp_size}, {chosen.memory.max_sequences} "
                     f"sequences of {changes.get('max_seq_len', sizes['max_seq_len'])})")  # fmt: skip
        return True

    for count in (2, 4, 8, 16, 32):
        if count > hardware.count and fits(
            f"--gpu '{hardware.gpu.name} x{count}'", Hardware(hardware.gpu, count, "profile")
        ):
            break
    if sizes["kv_bytes"] > 1 and hardware.gpu.supports_fp8:
        fits("--kv-cache-dtype fp8", hardware, kv_bytes=1)
    seq = sizes["max_seq_len"] // 2
    while seq >= 1024 and not fits(f"--max-seq-len {seq}", hardware, max_seq_len=seq):
        seq //= 2
    return found


def plan_dense_llmapi(
    model: str, facts: ModelFacts, hardware: Hardware, request: DeploymentRequest, *, reasoning_parser: str | None,
    display_name: str, installed_version: str | None = None,
) -> LlmApiPlan:  # fmt: skip
    """A dense model's PyTorch-backend plan: the layout from memory, the limits from the KV cache and the profile."""
    choices = request.llmapi
    check_choices(choices)
    if choices.mtp_layers or choices.ep_size not in (None, 1):
        raise PlanError(
            f"--mtp and --ep-size are for mixture-of-experts models with MTP layers; {display_name} is dense "
            f"({facts.architecture})",
            hint="Leave them out.",
        )
    version, parsed = target_version(
        choices, installed_version, needs="the llmapi Triton model and trtllm-serve's PyTorch backend"
    )
    gpu = hardware.gpu
    kv = choices.kv_cache_dtype or "auto"
    if kv == "fp8" and gpu is not None and not gpu.supports_fp8:
        raise PlanError(f"--kv-cache-dtype fp8 needs SM89 or newer; {gpu.name} is SM{gpu.sm}",
                        hint="Leave it out (the KV cache takes the model's dtype).")  # fmt: skip
    max_seq_len = checked_max_seq_len(request, facts)
    knobs = DENSE_KNOBS[choices.profile]
    max_num_tokens = request.max_num_tokens or DEFAULT_MAX_NUM_TOKENS
    fraction = request.kv_cache_free_gpu_mem_fraction or DEFAULT_KV_FRACTION
    cap = request.max_batch_size or knobs.max_batch_size
    chosen = layout(
        display_name, facts, hardware, max_seq_len=max_seq_len, max_num_tokens=max_num_tokens, max_batch_size=cap,
        kv_fraction=fraction, kv_bytes=1 if kv == "fp8" else 2, tp_size=request.tp_size, pp_size=request.pp_size,
    )  # fmt: skip
    notes = list(chosen.notes)
    if request.max_batch_size:
        max_batch_size = request.max_batch_size
    else:  # what the KV cache holds when requests use half the context on average, within the profile's cap
        held = max(1, chosen.memory.kv_cache_tokens // max(1, max_seq_len // 2))
        max_batch_size = min(cap, held)
        notes.append(f"max_batch_size {max_batch_size}: the KV cache ({chosen.memory.kv_cache_tokens:,} tokens) holds "
                     f"{held} sequences of half the context ({max_seq_len // 2} tokens); --profile {choices.profile} "
                     f"caps it at {cap}")  # fmt: skip
    chunked = max_seq_len > max_num_tokens
    if chunked:
        notes.append(f"max_seq_len {max_seq_len} > max_num_tokens {max_num_tokens}: chunked prefill enabled")
    per_node = min(chosen.gpus, GPUS_PER_NODE)
    sizing = Sizing(
        row=Row(gpus=(gpu.name,), precision=checkpoint_precision(facts), min_gpus=chosen.gpus,
                recommended_gpus=chosen.gpus, moe_backends=("",), min_version=MIN_VERSION),
        gpu=gpu.name, gpus=chosen.gpus, nodes=chosen.gpus // per_node, gpus_per_node=per_node, tp_size=chosen.tp_size,
        pp_size=chosen.pp_size, ep_size=1, moe_backend="", notes=tuple(notes),
    )  # fmt: skip
    comments = [
        "CUDA out of memory: lower kv_cache_config.free_gpu_memory_fraction (0.7 or less) in "
        f"{'tensorrt_llm/1/model.yaml' if choices.serving == 'triton' else 'extra-llm-api-options.yml'}, or "
        "max_batch_size or max_seq_len.",
    ]
    if choices.serving == "triton" and parsed < LLMAPI_TRITON_MODEL:
        raise PlanError(f"--serving triton needs the llmapi Triton model, TensorRT-LLM {LLMAPI_TRITON_MODEL}+")
    image = TRTLLM_IMAGE.format(version=version)
    if choices.serving == "triton":
        image = container_for(version) or image
    return LlmApiPlan(
        model=model, precision=checkpoint_precision(facts), sizing=sizing, profile=choices.profile,
        serving=choices.serving, trtllm_version=version, max_batch_size=max_batch_size, max_num_tokens=max_num_tokens,
        max_seq_len=max_seq_len, kv_cache_dtype=kv, kv_cache_free_gpu_memory_fraction=fraction, attention_dp=False,
        cuda_graph_max_batch_size=min(knobs.cuda_graph_max_batch_size, max_batch_size), mtp_layers=0,
        stream_interval=knobs.stream_interval, moe_max_num_tokens=None, reasoning_parser=reasoning_parser,
        host=choices.host, port=choices.port, image=image, comments=tuple(comments), chunked_prefill=chunked,
        memory=chosen.memory,
    )  # fmt: skip
