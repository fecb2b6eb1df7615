"""What `tritonrepo serve` starts for a Dynamo deployment: the frontend's and each worker's command line (pure)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from tritonrepo.dynamo.manifest import DynamoDeployment, WorkerGroup
from tritonrepo.errors import ServerError

NAMESPACE = "dynamo"  # Dynamo's default namespace: the frontend finds workers in any namespace, launch scripts alike
STAND_INS = ("mocker",)
MIGRATION_LIMIT = 3
MODES = {"aggregated": "agg", "prefill": "prefill", "decode": "decode"}  # manifest role -> Dynamo's mode name


@dataclass(frozen=True)
class ProcessSpec:
    """One process of the deployment: `name` is what logs and messages call it."""

    name: str
    role: str  # "frontend" or a worker role
    argv: tuple[str, ...]
    stand_in: str = ""  # what stands in for dynamo.trtllm ("" when it is the real thing or our runtime)

    @property
    def label(self) -> str:
        return f"{self.name} (stand-in: dynamo.{self.stand_in} for dynamo.trtllm)" if self.stand_in else self.name


def frontend_command(deployment: DynamoDeployment, *, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "dynamo.frontend",
        "--http-host", host,
        "--http-port", str(port),
        "--router-mode", deployment.router_mode,  # kv | round-robin: both are frontend choices as they are
        "--kv-cache-block-size", str(deployment.kv_block_size),  # the workers' block size: the router must agree
        "--discovery-backend", "file",
        # A request whose worker dies (before or while it streams) is retried on another: the dead worker's
        # registration outlives it by its lease (about 10 s), and the router would keep picking it until then.
        "--migration-limit", str(MIGRATION_LIMIT),
    ]  # fmt: skip


def trtllm_worker_command(deployment: DynamoDeployment, folder: Path, group: WorkerGroup) -> list[str]:
    """`python3 -m dynamo.trtllm` for one worker of `group` (flags of Dynamo 1.6.1's trtllm/backend_args.py)."""
    argv = [
        "python3", "-m", "dynamo.trtllm",
        "--model", deployment.model_path,
        "--served-model-name", deployment.served_model_name,
        "--extra-engine-args", str(Path(folder) / group.engine_config),
        "--disaggregation-mode", MODES[group.role],
        "--kv-block-size", str(deployment.kv_block_size),
        "--max-seq-len", str(deployment.max_seq_len),
        "--max-batch-size", str(deployment.max_batch_size),
    ]  # fmt: skip
    if deployment.router_mode == "kv" and group.role != "prefill":
        argv.append("--publish-kv-events")  # the KV router routes on the workers' real cache contents
    return argv


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
        "--disaggregation-mode", MODES[group.role],
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
    ports = iter(bootstrap_ports or [])
    specs = []
    for group in deployment.workers:
        for index in range(group.replicas):
            name = f"{group.role}-worker-{index}"
            if trtllm_available and stand_in is None:
                specs.append(ProcessSpec(name, group.role, tuple(trtllm_worker_command(deployment, folder, group))))
            elif group.role == "aggregated":
                specs.append(ProcessSpec(name, group.role, tuple(portable_worker_command(deployment))))
            else:  # prefill/decode without TensorRT-LLM: the stand-in (checked above)
                port = next(ports, None) if group.role == "prefill" else None
                argv = mocker_command(deployment, group, port)
                specs.append(ProcessSpec(name, group.role, tuple(argv), stand_in=stand_in or ""))
    return specs
