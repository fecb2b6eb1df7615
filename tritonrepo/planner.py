"""Gathers what a plan needs (model facts, hardware) and plans: the I/O around the pure plan.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tritonrepo import hardware
from tritonrepo.engines import build_command
from tritonrepo.plan import DeploymentPlan, PlanRequest, plan_deployment
from tritonrepo.source.resolve import model_facts
from tritonrepo.trtllm.versions import newest_container


@dataclass(frozen=True)
class PlanResult:
    plan: DeploymentPlan
    build_command: str | None = None  # the trtllm-build command line the plan implies, when it compiles engines

    def as_dict(self) -> dict:
        return {**self.plan.as_dict(), "trtllm_build": self.build_command}


def make_plan(
    model: str, *, gpu: str | None, request: PlanRequest, revision: str | None = None, offline: bool = False
) -> PlanResult:
    """--gpu plans for the NGC TensorRT-LLM container on that hardware; without it, for this machine as it is."""
    name, facts = model_facts(model, revision=revision, offline=offline)
    if gpu:
        target = hardware.parse_gpu(gpu)
        available = True
    else:
        target = hardware.detect_hardware()
        available = hardware.tensorrt_llm_installed()
    plan = plan_deployment(name, facts, target, request, tensorrt_llm_available=available)
    if plan.runtime != "tensorrtllm":
        return PlanResult(plan=plan)
    if gpu:
        plan = replace(plan, reason="planned for the NGC TensorRT-LLM container on the --gpu hardware")
    # Flags follow the TensorRT-LLM version: the installed one, else the newest container's.
    version = hardware.tensorrt_llm_version() or newest_container().trtllm
    return PlanResult(plan=plan, build_command=build_command(plan, version))
