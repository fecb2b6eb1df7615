"""A Dynamo deployment folder as a dstack target: a service on one node, a multi-node task over several. Pure.

One node: the service writes the folder's engine YAMLs and `launch/single-node.sh`, and runs that script with file
discovery (no etcd or NATS needed on one machine); the frontend's HTTP port is the service port.
Several nodes: a distributed task (a dstack service replica is one node). Every node writes the same files and runs
`launch/dstack-node.sh`, which reads dstack's DSTACK_NODE_RANK and DSTACK_MASTER_NODE_IP: the head node (rank 0)
starts etcd, NATS and the frontend, every node its own workers, which find the head through etcd.
Everything here is pure but `target_from_folder`, which reads the folder."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from tritonrepo.dynamo.commands import frontend_argv, trtllm_worker_argv
from tritonrepo.dynamo.launch import ETCD_PORT, NATS_PORT, SINGLE_NODE
from tritonrepo.dynamo.manifest import DynamoDeployment, is_dynamo_deployment, load
from tritonrepo.errors import RenderError
from tritonrepo.export.dstack import DstackTarget, dstack_gpu
from tritonrepo.planning.dynamo import DynamoPlan, WorkerPlan

WORKDIR = "/workspace/dynamo"  # the deployment folder's files, as the launch scripts expect them (engine/, launch/)
CACHE = "/root/.cache"  # Hugging Face downloads, on the instance volume
NODE_SCRIPT = "launch/dstack-node.sh"
HF_SECRET = "hf_token"  # `dstack secret set hf_token <token>`; the server puts it into HF_TOKEN


def target_from_folder(folder: Path) -> DstackTarget:
    """The dstack target of a folder written by `tritonrepo build --serving dynamo`."""
    from tritonrepo.source.catalog import lookup

    folder = Path(folder)
    if not is_dynamo_deployment(folder):
        raise RenderError(
            f"{folder} is not a Dynamo deployment folder (no dynamo-deployment.json)",
            hint="Export a plan with --model M --gpu ..., or a folder written by tritonrepo build --serving dynamo.",
        )
    manifest = load(folder)
    try:
        plan = plan_from_dict(json.loads((folder / "plan.json").read_text()))
    except (OSError, ValueError) as error:
        raise RenderError(
            f"{folder}/plan.json cannot be read: {error}",
            hint="Rebuild the deployment (tritonrepo build --serving dynamo).",
        ) from error
    entry = lookup(manifest.model) or lookup(manifest.model_path)
    num_params = entry.facts.num_params if entry else None
    return dynamo_target(plan, manifest, read_text_files(folder, plan), num_params=num_params)


def plan_from_dict(data: dict) -> DynamoPlan:
    """The plan `build --serving dynamo` saved as plan.json (DynamoPlan.as_dict), as the object again."""
    fields = {k: v for k, v in data.items() if k not in ("disaggregated", "nodes")}
    try:
        workers = tuple(
            WorkerPlan(**{**w, "cuda_graph_batch_sizes": tuple(w["cuda_graph_batch_sizes"])})
            for w in fields.pop("workers")
        )
        return DynamoPlan(**{**fields, "workers": workers, "notes": tuple(fields.get("notes", ()))})
    except (KeyError, TypeError) as error:
        raise RenderError(
            f"plan.json is incomplete or from another tritonrepo version: {error}",
            hint="Rebuild the deployment with this version (tritonrepo build --serving dynamo).",
        ) from error


def dynamo_target(
    plan: DynamoPlan, manifest: DynamoDeployment, files: dict[str, str], *, num_params: int | None = None
) -> DstackTarget:
    """`files`: the deployment folder's text files by relative path (engine YAMLs, launch/single-node.sh)."""
    if not plan.gpu or not plan.gpus_used:
        raise RenderError(
            f"the Dynamo deployment of {plan.model} was planned without GPUs (no --gpu, none on the machine that built "
            "it): its dynamo.trtllm workers need GPUs, and dstack needs to know which",
            hint=f"Rebuild it for the target hardware, e.g. tritonrepo build --model {plan.model} --serving dynamo "
            "--gpu 'H100-80GB x2' --output DIR, then export that folder.",
        )
    spanning = [w.role for w in plan.workers if w.nodes_per_worker > 1]
    if spanning:
        raise RenderError(
            f"the {', '.join(spanning)} worker(s) of this deployment span several nodes (one TensorRT-LLM engine over "
            "MPI across nodes), which the dstack export does not launch",
            hint="Use the deployment's launch/multi-node.sbatch (Slurm, srun --mpi=pmix trtllm-llmapi-launch), or "
            "plan workers that fit one node.",
        )
    gpu_name, memory_gb = dstack_gpu(plan.gpu)
    engines = {path: files[path] for path in sorted({w.engine_file for w in plan.workers})}
    uploads = ((manifest.model_path, manifest.model_path),) if manifest.model_path.startswith("/") else ()
    common = dict(
        name=plan.model, model=plan.model, gpu_name=gpu_name, gpu_memory_gb=memory_gb, build_commands=(),
        port=plan.http_port, openai_model_name=plan.served_model_name, disk_gb=_disk_gb(num_params, plan.precision),
        env=(f"HF_TOKEN=${{{{ secrets.{HF_SECRET} }}}}",), volume_path=CACHE, uploads=uploads,
        image=manifest.image or plan.image, plan_summary=_summary(plan),
    )  # fmt: skip
    if plan.nodes == 1:
        script = files[SINGLE_NODE]
        placed = {f"{WORKDIR}/{path}": text for path, text in {**engines, SINGLE_NODE: script}.items()}
        return DstackTarget(
            **common, gpus_per_node=plan.gpus_used, nodes=1, files=tuple(placed.items()),
            serve_commands=(f"DISCOVERY=file bash {WORKDIR}/{SINGLE_NODE}",),
            shm_size_gb=32 if plan.gpus_used > 1 else None,
        )  # fmt: skip
    placed = {f"{WORKDIR}/{path}": text for path, text in {**engines, NODE_SCRIPT: node_script(plan)}.items()}
    return DstackTarget(
        **common, gpus_per_node=plan.gpus_per_node, nodes=plan.nodes, files=tuple(placed.items()),
        serve_commands=(f"bash {WORKDIR}/{NODE_SCRIPT}",), every_node_serves=True,
        shm_size_gb=32 if plan.gpus_per_node > 1 else None,
    )  # fmt: skip


def node_placement(plan: DynamoPlan) -> list[list[tuple[WorkerPlan, str]]]:
    """Per node: (worker, CUDA_VISIBLE_DEVICES) of each worker it runs, filling node after node in the plan's order."""
    per_node = plan.gpus_per_node
    nodes: list[list[tuple[WorkerPlan, str]]] = [[] for _ in range(plan.nodes)]
    node, used = 0, 0
    for worker in plan.workers:
        for _ in range(worker.replicas):
            if used + worker.gpus_per_worker > per_node:
                node, used = node + 1, 0
            if node >= len(nodes):
                raise RenderError(f"the workers need more than the plan's {plan.nodes} node(s) of {per_node} GPUs")
            devices = ",".join(str(used + i) for i in range(worker.gpus_per_worker))
            nodes[node].append((worker, devices))
            used += worker.gpus_per_worker
    return nodes


def node_script(plan: DynamoPlan) -> str:
    """What every node of the task runs; its rank picks its part."""
    head = f'export ETCD_ENDPOINTS="http://$HEAD:{ETCD_PORT}" NATS_SERVER="nats://$HEAD:{NATS_PORT}"'
    lines = [
        "#!/usr/bin/env bash",
        f"# Dynamo {plan.dynamo_version} on dstack, {plan.nodes} nodes of {plan.gpus_per_node}x {plan.gpu} for "
        f"{plan.model}: run on every node. Generated by tritonrepo export dstack; see PLAN.txt of the deployment.",
        "set -euo pipefail",
        'cd "$(dirname "$0")/.."',
        'RANK="${DSTACK_NODE_RANK:?dstack sets DSTACK_NODE_RANK on each node of a task}"',
        'HEAD="${DSTACK_MASTER_NODE_IP:?dstack sets DSTACK_MASTER_NODE_IP on each node of a task}"',
        head,
        "pids=()",
        "trap 'kill \"${pids[@]}\" 2>/dev/null || true; wait' EXIT INT TERM",
        'if [ "$RANK" = 0 ]; then',
        "  # etcd (discovery) and NATS (KV events) on the head node",
        f'  etcd --listen-client-urls http://0.0.0.0:{ETCD_PORT} --advertise-client-urls "http://$HEAD:{ETCD_PORT}"'
        " --data-dir /tmp/etcd &",
        '  pids+=("$!")',
        f"  nats-server -js -p {NATS_PORT} &",
        '  pids+=("$!")',
        "fi",
        "# every node waits for etcd on the head before its workers register",
        f'until (exec 3<>"/dev/tcp/$HEAD/{ETCD_PORT}") 2>/dev/null; do sleep 2; done',
        'case "$RANK" in',
    ]
    for rank, workers in enumerate(node_placement(plan)):
        lines.append(f"  {rank})")
        for worker, devices in workers:
            argv = trtllm_worker_argv(plan, worker, discovery_backend="etcd")
            lines.append(f"    CUDA_VISIBLE_DEVICES={devices} {shlex.join(argv)} &")
            lines.append('    pids+=("$!")')
        lines.append("    ;;")
    lines += [
        "esac",
        'if [ "$RANK" = 0 ]; then',
        f"  {shlex.join(frontend_argv(plan, http_port=plan.http_port, discovery_backend='etcd'))} &",
        '  pids+=("$!")',
        "fi",
        "# The first requests after start are slow (CUDA graphs, autotuning): warm up before measuring.",
        "wait -n",
    ]
    return "\n".join(lines) + "\n"


def read_text_files(folder: Path, plan: DynamoPlan) -> dict[str, str]:
    """The folder's files the target needs, by relative path. Reads only."""
    wanted = {w.engine_file for w in plan.workers} | ({SINGLE_NODE} if plan.nodes == 1 else set())
    files = {}
    for relative in sorted(wanted):
        try:
            files[relative] = (Path(folder) / relative).read_text()
        except OSError as error:
            raise RenderError(
                f"{folder}/{relative} cannot be read: {error.strerror or error}",
                hint="Rebuild the deployment (tritonrepo build --serving dynamo).",
            ) from error
    return files


def _disk_gb(num_params: int | None, precision: str) -> int:
    """The checkpoint at its stored precision, and room to spare; 100 GB when the size is not known."""
    if not num_params:
        return 100
    size = num_params * {"nvfp4": 0.5, "fp8": 1}.get(precision, 2) / 1e9
    return max(100, int(-(-size * 1.3 // 50) * 50))


def _summary(plan: DynamoPlan) -> str:
    workers = ", ".join(f"{w.replicas} {w.role} x {w.gpus_per_worker} GPU(s)" for w in plan.workers)
    return (
        f"{plan.model}: Dynamo {plan.dynamo_version}, {plan.gpus_used}x {plan.gpu} over {plan.nodes} node(s), "
        f"{workers}; router {plan.router_mode}; frontend on port {plan.http_port}"
    )
