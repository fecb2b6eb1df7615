"""The command lines of a Dynamo deployment, in one place: `python3 -m dynamo.frontend` and `python3 -m dynamo.trtllm`.

Every flag is one Dynamo 1.6.1's parsers define (dynamo/frontend/frontend_args.py, dynamo/trtllm/backend_args.py,
dynamo/common/configuration/groups/runtime_args.py); tests/test_dynamo_build.py checks each against the list extracted
from the 1.6.1 wheel (tests/data/dynamo-1.6.1-flags.json). `--model-path` and `--publish-events-and-metrics` are
1.6.1's old spellings (an alias, and a deprecated alias that warns); the current ones are used."""

from __future__ import annotations

from tritonrepo.planning.dynamo import DynamoPlan, WorkerPlan

DISAGGREGATION_MODE = {"aggregated": "agg", "prefill": "prefill", "decode": "decode"}


def frontend_argv(plan: DynamoPlan, *, discovery_backend: str | None = None) -> list[str]:
    argv = ["python3", "-m", "dynamo.frontend", "--http-port", str(plan.http_port), "--router-mode", plan.router_mode]
    if plan.router_mode == "kv":
        argv += ["--kv-cache-block-size", str(plan.kv_block_size)]  # the workers' block size (#5015)
    if discovery_backend:
        argv += ["--discovery-backend", discovery_backend]
    return argv


def trtllm_worker_argv(
    plan: DynamoPlan, worker: WorkerPlan, *, engine_dir: str = "engine", discovery_backend: str | None = None
) -> list[str]:
    """One `dynamo.trtllm` worker; the engine YAML holds the parallel layout and limits, the flags repeat the ones
    Dynamo itself reads (block size, disaggregation mode, events)."""
    engine = f"{engine_dir}/{worker.engine_file.split('/', 1)[1]}"
    argv = [
        "python3", "-m", "dynamo.trtllm",
        "--model", plan.model_path,
        "--served-model-name", plan.served_model_name,
        "--extra-engine-args", engine,
        "--disaggregation-mode", DISAGGREGATION_MODE[worker.role],
        "--kv-block-size", str(plan.kv_block_size),
    ]  # fmt: skip
    if plan.router_mode == "kv":
        argv += ["--publish-kv-events", "--publish-metrics"]
    if discovery_backend:
        argv += ["--discovery-backend", discovery_backend]
    return argv
