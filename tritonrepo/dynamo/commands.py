"""The command lines of a Dynamo deployment, in one place: `python3 -m dynamo.frontend` and `python3 -m dynamo.trtllm`.

Every flag is one Dynamo 1.6.1's parsers define (dynamo/frontend/frontend_args.py, dynamo/trtllm/backend_args.py,
dynamo/common/configuration/groups/runtime_args.py); tests/test_dynamo_build.py checks each against the list extracted
from the 1.6.1 wheel (tests/data/dynamo-1.6.1-flags.json). `--model-path` and `--publish-events-and-metrics` are
1.6.1's old spellings (an alias, and a deprecated alias that warns); the current ones are used."""

from __future__ import annotations

from typing import Protocol

DISAGGREGATION_MODE = {"aggregated": "agg", "prefill": "prefill", "decode": "decode"}
# A request whose worker dies (before or while it streams) is retried on another: a dead worker's registration
# outlives it by its lease (about 10 s), and the router would keep picking it until then.
MIGRATION_LIMIT = 3


class Deployment(Protocol):
    """What the command lines need of a deployment: the build's DynamoPlan or the manifest's DynamoDeployment."""

    model_path: str
    served_model_name: str
    router_mode: str
    kv_block_size: int


class Worker(Protocol):
    """A worker role and its engine YAML ("engine/agg.yaml"): the build's WorkerPlan or the manifest's WorkerGroup."""

    role: str

    @property
    def engine_file(self) -> str: ...


def frontend_argv(
    deployment: Deployment,
    *,
    http_port: int,
    host: str | None = None,
    discovery_backend: str | None = None,
    python: str = "python3",
) -> list[str]:
    argv = [python, "-m", "dynamo.frontend"]
    if host:
        argv += ["--http-host", host]
    argv += ["--http-port", str(http_port), "--router-mode", deployment.router_mode]
    if deployment.router_mode == "kv":
        argv += ["--kv-cache-block-size", str(deployment.kv_block_size)]  # the workers' block size (#5015)
    argv += ["--migration-limit", str(MIGRATION_LIMIT)]
    if discovery_backend:
        argv += ["--discovery-backend", discovery_backend]
    return argv


def trtllm_worker_argv(
    deployment: Deployment,
    worker: Worker,
    *,
    engine_dir: str = "engine",
    discovery_backend: str | None = None,
    python: str = "python3",
) -> list[str]:
    """One `dynamo.trtllm` worker; the engine YAML holds the parallel layout and limits, the flags repeat the ones
    Dynamo itself reads (block size, disaggregation mode, events)."""
    engine = f"{engine_dir}/{worker.engine_file.split('/', 1)[1]}"
    argv = [
        python, "-m", "dynamo.trtllm",
        "--model", deployment.model_path,
        "--served-model-name", deployment.served_model_name,
        "--extra-engine-args", engine,
        "--disaggregation-mode", DISAGGREGATION_MODE[worker.role],
        "--kv-block-size", str(deployment.kv_block_size),
    ]  # fmt: skip
    if deployment.router_mode == "kv":
        argv += ["--publish-kv-events", "--publish-metrics"]
    if discovery_backend:
        argv += ["--discovery-backend", discovery_backend]
    return argv
