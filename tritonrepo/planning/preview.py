"""`tritonrepo plan`: gathers what a plan needs (model facts, hardware), plans, and adds what build would run: the I/O
around the pure planner.py."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tritonrepo import hardware
from tritonrepo.planning.engines import build_command
from tritonrepo.planning.plan import DeploymentPlan
from tritonrepo.planning.planner import plan_deployment
from tritonrepo.planning.request import DeploymentRequest
from tritonrepo.source.resolve import model_facts, model_reference
from tritonrepo.trtllm.versions import newest_container


@dataclass(frozen=True)
class PlanResult:
    plan: DeploymentPlan
    build_command: str | None = None  # the trtllm-build command line the plan implies, when it compiles engines

    def as_dict(self) -> dict:
        data = {**self.plan.as_dict(), "trtllm_build": self.build_command}
        if self.plan.llmapi is not None:
            data["deployment"] = pytorch_path_files(self.plan.llmapi)
        return data


def pytorch_path_files(llmapi) -> dict:
    """What `build` would write for a PyTorch-path plan, as data: the options, LLM(...) arguments, commands."""
    import shlex

    from tritonrepo.pytorch_path import launch_files
    from tritonrepo.pytorch_path.llm_options import extra_options, llm_args

    return {
        "extra_llm_api_options": extra_options(llmapi),
        "llm_args": llm_args(llmapi),
        "launch_command": shlex.join(launch_files.server_argv(llmapi, "<deployment>")),
        "env": dict(llmapi.env),
        "known_issues": list(llmapi.comments),
    }


def make_plan(request: DeploymentRequest) -> PlanResult:
    """--gpu plans for the NGC TensorRT-LLM container on that hardware; without it, for this machine as it is."""
    if request.gpu:  # first, as build does: an unknown name is refused before any model is looked at
        target = hardware.parse_gpu(request.gpu)
        available = True
    else:
        target = hardware.detect_hardware()
        available = hardware.tensorrt_llm_installed()
    name, facts = model_facts(request.model, revision=request.revision, offline=request.offline)
    plan = plan_deployment(
        name, facts, target, request, tensorrt_llm_available=available, model_ref=model_reference(request.model),
        installed_version=hardware.tensorrt_llm_version(),
    )  # fmt: skip
    if plan.runtime != "tensorrtllm":
        return PlanResult(plan=plan)
    if request.gpu:
        plan = replace(plan, reason="planned for the NGC TensorRT-LLM container on the --gpu hardware")
    # Flags follow the TensorRT-LLM version: the installed one, else the newest container's.
    version = hardware.tensorrt_llm_version() or newest_container().trtllm
    return PlanResult(plan=plan, build_command=build_command(plan, version))
