"""A plan as a dstack target: which image, which commands build and serve it, on which GPUs. Pure.

- PyTorch path, trtllm-serve: nothing to build; the service writes the extra LLM-API options and runs trtllm-serve in
  TensorRT-LLM's release image (across nodes: one mpirun over dstack's hostfile, every rank under
  trtllm-llmapi-launch).
- PyTorch path, --serving triton, and engine builds: tritonrepo itself runs in the NGC Triton TensorRT-LLM container,
  `tritonrepo build` in a task and `tritonrepo serve` in the service, sharing the instance's cache volume."""

from __future__ import annotations

import math
import shlex

from tritonrepo.errors import RenderError
from tritonrepo.export.dstack import DstackTarget, dstack_gpu
from tritonrepo.planning.plan import DeploymentPlan
from tritonrepo.pytorch_path import launch_files
from tritonrepo.pytorch_path.llm_options import options_yaml
from tritonrepo.trtllm.versions import container_for, newest_container

WORKDIR = "/workspace"
CACHE = "/root/.cache"  # Hugging Face downloads and tritonrepo's build output live here, on the instance volume
DEFAULT_INSTALL = 'pip install "tritonrepo[frontend]"'
OPENAI_PORT = 8000


def dstack_target(
    plan: DeploymentPlan, *, model_spec: str, build_args: tuple[str, ...] = (), install: str = DEFAULT_INSTALL
) -> DstackTarget:
    """`build_args` are the plan's flags as the user gave them, repeated on the `tritonrepo build` line."""
    gpu_name, memory_gb = dstack_gpu(plan.hardware.gpu.name)
    llmapi = plan.llmapi
    if llmapi is not None and llmapi.serving == "trtllm-serve":
        return _trtllm_serve_target(plan, gpu_name, memory_gb)
    output = f"{CACHE}/tritonrepo-build/{plan.model}"
    build_line = shlex.join(["tritonrepo", "build", "--model", model_spec, *build_args, "--output", output])
    serve_line = shlex.join(["tritonrepo", "serve", output, "--host", "0.0.0.0", "--openai-port", str(OPENAI_PORT),
                             "--http-port", "8080", "--grpc-port", "8081", "--metrics-port", "8082"])  # fmt: skip
    if llmapi is not None:  # --serving triton: nothing to compile, so the service writes its deployment and serves it
        if llmapi.sizing.nodes > 1:
            raise RenderError(
                "a --serving triton deployment over several nodes has no dstack export: `tritonrepo serve` runs one",
                hint="Export --serving trtllm-serve (one mpirun across the nodes), or use the Slurm script of "
                "`tritonrepo build`.",
            )
        build, serve = (), (install, build_line, serve_line)
        image, nodes, per_node = llmapi.image, 1, llmapi.sizing.gpus_per_node
    else:
        build, serve = (install, build_line), (install, serve_line)
        image = container_for(plan_version(plan)) or newest_container().image
        nodes, per_node = 1, plan.hardware.count
    return DstackTarget(
        name=plan.model, model=model_spec, gpu_name=gpu_name, gpu_memory_gb=memory_gb, gpus_per_node=per_node,
        nodes=nodes, image=image, build_commands=build, serve_commands=serve, port=OPENAI_PORT,
        openai_model_name=plan.model, disk_gb=_disk_gb(plan), env=("HF_TOKEN",), volume_path=CACHE,
        shm_size_gb=32 if per_node > 1 else None, plan_summary=_summary(plan),
    )  # fmt: skip


def plan_version(plan: DeploymentPlan) -> str:
    return plan.llmapi.trtllm_version if plan.llmapi else newest_container().trtllm


def _trtllm_serve_target(plan: DeploymentPlan, gpu_name: str, memory_gb: int) -> DstackTarget:
    llmapi = plan.llmapi
    sizing = llmapi.sizing
    options_path = f"{WORKDIR}/{launch_files.OPTIONS_FILE}"
    argv = launch_files.trtllm_serve_argv(llmapi, options_path)
    exports = tuple(f"export {name}={shlex.quote(value)}" for name, value in llmapi.env)
    if sizing.nodes == 1:
        serve = (*exports, shlex.join(argv))
    else:  # one mpirun from the master over every node's GPUs; dstack writes the hostfile
        passed = "".join(f" -x {name}" for name, _ in llmapi.env)
        serve = (
            *exports,
            "mpirun --allow-run-as-root --hostfile $DSTACK_MPI_HOSTFILE -np $DSTACK_GPUS_NUM -npernode "
            f"$DSTACK_GPUS_PER_NODE -x HF_TOKEN{passed} trtllm-llmapi-launch {shlex.join(argv)}",
        )
    return DstackTarget(
        name=plan.model, model=llmapi.model, gpu_name=gpu_name, gpu_memory_gb=memory_gb,
        gpus_per_node=sizing.gpus_per_node, nodes=sizing.nodes, image=llmapi.image, build_commands=(),
        serve_commands=serve, port=llmapi.port, openai_model_name=llmapi.model, disk_gb=_disk_gb(plan),
        env=("HF_TOKEN",), files=((options_path, options_yaml(llmapi)),), volume_path=CACHE,
        shm_size_gb=32 if sizing.gpus_per_node > 1 else None, plan_summary=_summary(plan),
    )  # fmt: skip


def _disk_gb(plan: DeploymentPlan) -> int:
    """The checkpoint (at its stored precision), engines of the same size when built, and room to spare."""
    bytes_per_param = {"nvfp4": 0.5, "fp8": 1}.get(plan.weight_dtype, 2)
    checkpoint = plan.facts.num_params * (2 if plan.llmapi is None else bytes_per_param) / 1e9
    engines = 0 if plan.llmapi is not None else plan.facts.num_params * {"fp8": 1}.get(plan.weight_dtype, 2) / 1e9
    return max(100, int(math.ceil((checkpoint + engines) * 1.3 / 50) * 50))


def _summary(plan: DeploymentPlan) -> str:
    if plan.llmapi is not None:
        sizing = plan.llmapi.sizing
        return (
            f"{plan.model}: {plan.llmapi.serving}, {sizing.gpus}x {sizing.gpu} over {sizing.nodes} node(s), tensor "
            f"{sizing.tp_size} x expert {sizing.ep_size}, --profile {plan.llmapi.profile}"
        )
    return f"{plan.model}: {plan.runtime}, {plan.hardware.describe()}, tensor {plan.tp_size} x pipeline {plan.pp_size}"
