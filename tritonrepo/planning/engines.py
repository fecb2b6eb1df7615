"""The engine stage: a plan becomes a TensorRT-LLM build spec, the adapter converts and compiles it, the manifest
records what the engines were built for, and `serve` refuses engines that do not match the machine."""

from __future__ import annotations

import shlex
from pathlib import Path

from tritonrepo import progress
from tritonrepo.errors import EngineMismatchError
from tritonrepo.hardware import Hardware
from tritonrepo.planning.plan import DeploymentPlan
from tritonrepo.trtllm.adapter import TensorRTLLM
from tritonrepo.trtllm.commands import trtllm_build_args
from tritonrepo.trtllm.spec import EngineBuildSpec

_QUANTIZATION = {("bfloat16", "bfloat16"): "none", ("float16", "float16"): "none", ("fp8", "fp8"): "fp8"}


def engine_spec(plan: DeploymentPlan, hf_dir: Path, work_dir: Path) -> EngineBuildSpec:
    """The build spec a plan implies; outputs go under work_dir (checkpoint/, engine/, build.log)."""
    quantization = _QUANTIZATION.get((plan.weight_dtype, plan.kv_cache_dtype), "fp8_kv")
    return EngineBuildSpec(
        architecture=plan.facts.architecture,
        hf_dir=hf_dir,
        checkpoint_dir=work_dir / "checkpoint",
        engine_dir=work_dir / "engine",
        log_path=work_dir / "build.log",
        dtype=plan.dtype,
        quantization=quantization,
        tp_size=plan.tp_size,
        pp_size=plan.pp_size,
        max_batch_size=plan.limits.max_batch_size,
        max_input_len=plan.limits.max_input_len,
        max_seq_len=plan.limits.max_seq_len,
        max_num_tokens=plan.max_num_tokens or None,
        gemm_plugin=plan.gemm_plugin or "auto",
        gpt_attention_plugin=plan.gpt_attention_plugin or "auto",
        use_paged_context_fmha=plan.use_paged_context_fmha,
    )


def build_command(plan: DeploymentPlan, version: str | None) -> str:
    """The trtllm-build command line of a plan, with placeholder folders (for `tritonrepo plan`)."""
    spec = engine_spec(plan, Path("HF_MODEL"), Path("WORK"))
    return shlex.join(["trtllm-build", *trtllm_build_args(spec, version)])


def build_engines(spec: EngineBuildSpec, adapter: TensorRTLLM) -> Path:
    """Convert and compile, streaming the tool's output as progress; returns the engine folder."""
    spec.log_path.parent.mkdir(parents=True, exist_ok=True)

    def show(line: str) -> None:
        if line.strip():
            progress.say(f"    | {line.rstrip()[:160]}")

    with progress.step(f"Converting the checkpoint for {spec.world_size} rank(s) (log: {spec.log_path})"):
        adapter.convert(spec, show)
    with progress.step(f"Compiling engines with trtllm-build ({spec.world_size} rank(s))"):
        adapter.build(spec, show)
    return spec.engine_dir


def engine_record(plan: DeploymentPlan, hardware: Hardware, version: str) -> dict:
    """What the engines were built for; `check_engines` compares it with the serving machine."""
    gpu = hardware.gpu
    return {
        "tensorrt_llm_version": version,
        "gpu_name": gpu.name if gpu else None,
        "compute_capability": list(gpu.compute_capability) if gpu else None,
        "tp_size": plan.tp_size,
        "pp_size": plan.pp_size,
        "world_size": plan.world_size,
        "dtype": plan.dtype,
        "weight_dtype": plan.weight_dtype,
        "kv_cache_dtype": plan.kv_cache_dtype,
    }


def check_engines(record: dict, hardware: Hardware, installed_version: str | None) -> None:
    """Refuse engines this machine cannot run: another GPU architecture, another TensorRT-LLM, too few GPUs."""
    rebuild = "Rebuild them here: tritonrepo build --model <model> --runtime tensorrtllm --output <this repository>."
    built_for = tuple(record.get("compute_capability") or ())
    if hardware.gpu is None:
        raise EngineMismatchError("these TensorRT-LLM engines need a GPU, and none was found", hint=rebuild)
    if built_for and tuple(hardware.gpu.compute_capability) != built_for:
        raise EngineMismatchError(
            f"the engines were built for {record.get('gpu_name')} (SM{built_for[0]}{built_for[1]}); this machine has "
            f"{hardware.gpu.name} (SM{hardware.gpu.sm}), and TensorRT engines only run on the GPU architecture they "
            "were compiled for",
            hint=rebuild,
        )
    if installed_version != record.get("tensorrt_llm_version"):
        raise EngineMismatchError(
            f"the engines were built with TensorRT-LLM {record.get('tensorrt_llm_version')}, and this machine has "
            f"{installed_version or 'no TensorRT-LLM'}; engines only load in the version that built them",
            hint=rebuild,
        )
    world = int(record.get("world_size") or 1)
    if hardware.count < world:
        raise EngineMismatchError(
            f"the engines need {world} GPUs (tensor parallel {record.get('tp_size')} x pipeline parallel "
            f"{record.get('pp_size')}); this machine has {hardware.count}",
            hint="Serve on a machine with enough GPUs, or rebuild with a smaller --tp-size.",
        )
