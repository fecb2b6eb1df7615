"""What `tritonrepo serve` starts for a Dynamo deployment: the frontend's and each worker's command line (pure)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tritonrepo.dynamo.commands import DISAGGREGATION_MODE, frontend_argv, trtllm_worker_argv
from tritonrepo.dynamo.manifest import DynamoDeployment, WorkerGroup
from tritonrepo.errors import ServerError

NAMESPACE = "dynamo"  # Dynamo's default namespace: the frontend finds workers in any namespace, launch scripts alike
STAND_INS = ("mocker",)


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the deployment: `name` is what logs and messages call it."""

    name: str
    role: str  # "frontend" or a worker role
    argv: tuple[str, ...]
    stand_in: str = ""  # what stands in for dynamo.trtllm ("" when it is the real thing or our runtime)
    gpus: tuple[int, ...] = ()  # the GPUs this process may see (CUDA_VISIBLE_DEVICES); () leaves the variable alone

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        if not self.gpus:
            return base
        return {**base, "CUDA_VISIBLE_DEVICES": ",".join(map(str, self.gpus))}

    @property
    def label(self) -> str:
        return f"{self.name} (stand-in: dynamo.{self.stand_in} for dynamo.trtllm)" if self.stand_in else self.name


def frontend_command(deployment: DynamoDeployment, *, host: str, port: int) -> list[str]:
    return frontend_argv(deployment, http_port=port, host=host, discovery_backend="file", python=sys.executable)


def trtllm_worker_command(deployment: DynamoDeployment, folder: Path, group: WorkerGroup) -> list[str]:
    """`python3 -m dynamo.trtllm` for one worker of `group`: the command the launch scripts run, with file discovery."""
    return trtllm_worker_argv(deployment, group, engine_dir=str(Path(folder) / "engine"), discovery_backend="file")


def portable_worker_command(deployment: DynamoDeployment) -> list[str]:
    return [
        sys.executable, "-m", "tritonrepo.dynamo.portable_worker",
        "--model-path", deployment.model_path,
        "--served-model-name", deployment.served_model_name,
        "--namespace", NAMESPACE,
        "--kv-block-size", str(deployment.kv_block_size),
        "--max-seq-len", str(deployment.max_seq_len),
        "--max-batch-size", str(deployment.max_batch_size),
        "--discovery-backend", "file",
    ]  # fmt: skip


def mocker_command(deployment: DynamoDeployment, group: WorkerGroup, bootstrap_port: int | None) -> list[str]:
    """Dynamo's mocker in the worker's disaggregation mode: it emits random tokens, but registers, is routed and hands
    prefill over to decode as dynamo.trtllm would."""
    argv = [
        sys.executable, "-m", "dynamo.mocker",
        "--model-path", deployment.model_path,
        "--model-name", deployment.served_model_name,
        "--block-size", str(deployment.kv_block_size),
        "--max-num-seqs", str(deployment.max_batch_size),
        "--disaggregation-mode", DISAGGREGATION_MODE[group.role],
        "--discovery-backend", "file",
    ]  # fmt: skip
    if bootstrap_port is not None:  # each prefill worker's rendezvous port for the decode side
        argv += ["--bootstrap-ports", str(bootstrap_port)]
    return argv


def worker_processes(
    deployment: DynamoDeployment,
    folder: Path,
    *,
    trtllm_available: bool,
    stand_in: str | None,
    bootstrap_ports: list[int] | None = None,
) -> list[ProcessSpec]:
    """Every worker replica: dynamo.trtllm where TensorRT-LLM is importable, else our portable runtime (aggregated) or,
    for prefill/decode, the stand-in asked for. Raises ServerError when a disaggregated deployment cannot run here."""
    if stand_in is not None and stand_in not in STAND_INS:
        raise ServerError(f"unknown stand-in {stand_in!r}", hint=f"Use one of: {', '.join(STAND_INS)}.")
    if deployment.disaggregated and not trtllm_available and stand_in is None:
        raise ServerError(
            "this is a disaggregated Dynamo deployment (prefill and decode workers), whose workers are "
            "dynamo.trtllm; TensorRT-LLM is not installed here and the portable runtime has no prefill/decode split",
            hint="Serve it where TensorRT-LLM is installed (Dynamo's TensorRT-LLM container), or pass "
            "--stand-in mocker to run Dynamo's mocker workers in their place (random tokens: it proves the wiring).",
        )
    spanning = [group for group in deployment.workers if group.nodes_per_worker > 1]
    if trtllm_available and stand_in is None and spanning:
        raise ServerError(
            f"its {spanning[0].role} workers span {spanning[0].nodes_per_worker} nodes each; serve runs one machine",
            hint="Launch it with launch/multi-node.sbatch (Slurm) or k8s/dynamo-graph-deployment.yaml (Kubernetes).",
        )
    ports = iter(bootstrap_ports or [])
    specs = []
    next_gpu = 0  # dynamo.trtllm workers take consecutive blocks of GPUs, as the single-node launch script assigns them
    for group in deployment.workers:
        for index in range(group.replicas):
            name = f"{group.role}-worker-{index}"
            if trtllm_available and stand_in is None:
                gpus = tuple(range(next_gpu, next_gpu + group.gpus_per_worker))
                next_gpu += group.gpus_per_worker
                argv = tuple(trtllm_worker_command(deployment, folder, group))
                specs.append(ProcessSpec(name, group.role, argv, gpus=gpus))
            elif group.role == "aggregated":
                specs.append(ProcessSpec(name, group.role, tuple(portable_worker_command(deployment))))
            else:  # prefill/decode without TensorRT-LLM: the stand-in (checked above)
                port = next(ports, None) if group.role == "prefill" else None
                argv = mocker_command(deployment, group, port)
                specs.append(ProcessSpec(name, group.role, tuple(argv), stand_in=stand_in or ""))
    return specs
