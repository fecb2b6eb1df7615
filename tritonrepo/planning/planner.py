"""The planner, pure: which path serves a model (the portable runtime, TensorRT-LLM engines, or TensorRT-LLM's
PyTorch backend for MoE models) and that path's plan, from model facts + hardware + what the user asked for."""

from __future__ import annotations

import dataclasses

from tritonrepo.errors import PlanError
from tritonrepo.hardware import Hardware
from tritonrepo.planning.engine_plan import ENGINE_ARCHITECTURES, plan_engines
from tritonrepo.planning.limits import Limits, plan_limits
from tritonrepo.planning.llmapi import plan_llmapi
from tritonrepo.planning.llmapi_dense import plan_dense_llmapi
from tritonrepo.planning.llmapi_support import UnsupportedHardwareError
from tritonrepo.planning.plan import DeploymentPlan, RuntimeChoice
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.source.catalog import ModelFacts, lookup, reasoning_parser

RUNTIMES = ("auto", "hf", "tensorrtllm", "pytorch")
QUANTIZATIONS = ("none", "fp8", "fp8-kv")
# Distills people fall back to when the full model does not fit, largest first (catalog names).
DISTILLS = (
    "DeepSeek-R1-Distill-Llama-70B",
    "DeepSeek-R1-Distill-Qwen-32B",
    "DeepSeek-R1-Distill-Qwen-14B",
    "DeepSeek-R1-Distill-Llama-8B",
)


def plan_deployment(
    model: str,
    facts: ModelFacts,
    hardware: Hardware,
    request: DeploymentRequest,
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
    if request.runtime == "pytorch":
        return _dense_pytorch_plan(model, model_ref or model, facts, hardware, request, installed_version)
    choice = choose_runtime(
        request.runtime,
        tensorrt_llm_installed=tensorrt_llm_available,
        gpu_count=hardware.count,
        architecture=facts.architecture,
    )
    other = (
        f"--runtime pytorch serves {model} through TensorRT-LLM's PyTorch backend instead (trtllm-serve or "
        "Triton's llmapi model, no engine build), planned for --gpu hardware"
    )
    if choice.runtime == "hf":
        limits = plan_limits(
            {"max_position_embeddings": facts.max_position_embeddings},
            max_batch_size=request.max_batch_size,
            max_input_len=request.max_input_len,
            max_seq_len=request.max_seq_len,
        )
        return DeploymentPlan(
            model, facts, hardware, "hf", choice.reason, limits,
            triton_max_batch_size=limits.max_batch_size, decoupled=request.decoupled, notes=(other,),
        )  # fmt: skip
    plan = plan_engines(model, facts, hardware, request, choice.reason)
    return dataclasses.replace(plan, notes=(*plan.notes, other))


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


def _pytorch_path_plan(
    model: str, model_ref: str, facts: ModelFacts, hardware: Hardware, request: DeploymentRequest, installed: str | None
) -> DeploymentPlan:
    """DeepSeek-V3-architecture MoE models: no engine compile; TensorRT-LLM's PyTorch backend (trtllm-serve or the
    llmapi Triton model), sized by llmapi.py."""
    if request.tp_size or request.quantization != "none" or request.max_input_len:
        raise PlanError(
            f"{model} takes the PyTorch-backend path, where --tp-size, --quantization and --max-input-len do not "
            "apply: tensor parallelism spans every GPU and the checkpoint's own precision is served",
            hint="Choose the GPUs with --gpu (and --nodes), the precision by the checkpoint (e.g. nvidia/DeepSeek-R1-FP4).",
        )
    try:
        llmapi = plan_llmapi(
            model_ref, facts, hardware, request, reasoning_parser=reasoning_parser(model, model_ref),
            display_name=model, installed_version=installed,
        )  # fmt: skip
    except UnsupportedHardwareError as error:
        # The PyTorch path refuses this hardware; the engine path may still fit a distill of the model on it.
        distill = _fitting_distill(hardware) if error.alternatives else None
        if distill is None:
            raise
        raise error.with_alternative(distill) from None
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


def _dense_pytorch_plan(
    model: str, model_ref: str, facts: ModelFacts, hardware: Hardware, request: DeploymentRequest, installed: str | None
) -> DeploymentPlan:
    """--runtime pytorch for a dense model: TensorRT-LLM's PyTorch backend, sized by llmapi_dense.py."""
    if request.quantization != "none" or request.max_input_len:
        raise PlanError(
            "--runtime pytorch serves the checkpoint's own precision and limits prompts by --max-seq-len: "
            "--quantization and --max-input-len do not apply",
            hint="Use an FP8 checkpoint for FP8 weights, --kv-cache-dtype fp8 for an FP8 KV cache; or the engine path "
            "(--runtime tensorrtllm).",
        )
    llmapi = plan_dense_llmapi(
        model_ref, facts, hardware, request, reasoning_parser=reasoning_parser(model, model_ref), display_name=model,
        installed_version=installed,
    )  # fmt: skip
    sizing = llmapi.sizing
    engine_path = "TensorRT-LLM engines (--runtime tensorrtllm)" if facts.architecture in ENGINE_ARCHITECTURES else (
        "the portable runtime (--runtime hf)")  # fmt: skip
    reason = (
        f"--runtime pytorch: TensorRT-LLM's PyTorch backend ({llmapi.serving}), no engine build; the default for "
        f"{facts.architecture} is {engine_path}"
    )
    limits = Limits(max_batch_size=llmapi.max_batch_size, max_input_len=max(1, llmapi.max_seq_len - 1),
                    max_seq_len=llmapi.max_seq_len)  # fmt: skip
    return DeploymentPlan(
        model, facts, hardware, "pytorch", reason, limits, weight_dtype=llmapi.precision,
        dtype=facts.native_dtype if facts.native_dtype in ("bfloat16", "float16") else "bfloat16",
        kv_cache_dtype=llmapi.kv_cache_dtype, tp_size=sizing.tp_size, pp_size=sizing.pp_size,
        max_num_tokens=llmapi.max_num_tokens, kv_cache_free_gpu_mem_fraction=llmapi.kv_cache_free_gpu_memory_fraction,
        triton_max_batch_size=llmapi.max_batch_size, decoupled=True, memory=llmapi.memory, notes=sizing.notes,
        llmapi=llmapi,
    )  # fmt: skip


def _fitting_distill(hardware: Hardware) -> str | None:
    """The largest DeepSeek-R1 distill the engine planner fits on this hardware, as a suggestion."""
    for name in DISTILLS:
        entry = lookup(name)
        if entry.facts.architecture not in ENGINE_ARCHITECTURES:
            continue  # choose_runtime would refuse --runtime tensorrtllm for it
        try:
            request = DeploymentRequest(name, runtime="tensorrtllm")
            plan = plan_engines(name, entry.facts, hardware, request, "")
        except PlanError:
            continue
        return f"a distill that fits: {name} (tensor parallel {plan.tp_size} on {hardware.describe()})"
    return None
