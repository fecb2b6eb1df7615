"""`tritonrepo build --serving dynamo`: the plan's files (manifest, engine YAMLs, launch scripts, Kubernetes manifest,
PLAN.txt), written into a staging folder that replaces the output folder only once everything is written."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tritonrepo.dynamo import k8s, launch
from tritonrepo.dynamo.engine_configs import engine_yaml
from tritonrepo.dynamo.manifest import MANIFEST, DynamoDeployment, WorkerGroup, save
from tritonrepo.planning.dynamo import DynamoPlan
from tritonrepo.repository.writer import staged_directory

PLAN_FILE = "PLAN.txt"


def to_manifest(plan: DynamoPlan) -> DynamoDeployment:
    return DynamoDeployment(
        model=plan.model, model_path=plan.model_path, served_model_name=plan.served_model_name,
        router_mode=plan.router_mode, kv_block_size=plan.kv_block_size,
        workers=tuple(WorkerGroup(role=w.role, replicas=w.replicas, gpus_per_worker=w.gpus_per_worker,
                                  engine_config=w.engine_file, nodes_per_worker=w.nodes_per_worker)
                      for w in plan.workers),
        max_seq_len=plan.max_seq_len, max_batch_size=max(w.max_batch_size for w in plan.workers),
        dynamo_version=plan.dynamo_version, tensorrt_llm_version=plan.trtllm_version, image=plan.image,
        notes=plan.notes,
    )  # fmt: skip


def deployment_files(plan: DynamoPlan) -> dict[str, str]:
    """{relative path: text} of everything but the manifest. Pure."""
    engines = {w.engine_file: engine_yaml(plan, w) for w in plan.workers}
    files = dict(engines)
    if plan.nodes == 1:
        files[launch.SINGLE_NODE] = launch.single_node_script(plan)
    else:
        files[launch.MULTI_NODE] = launch.multi_node_script(plan)
    files[k8s.MANIFEST] = k8s.manifest_yaml(plan, engines)
    files[PLAN_FILE] = plan_text(plan)
    return files


def plan_text(plan: DynamoPlan) -> str:
    where = f"{plan.gpus}x {plan.gpu}" if plan.gpu else "no GPU planned"
    lines = [
        f"Dynamo {plan.dynamo_version} deployment of {plan.model} ({plan.precision}) on {where}, "
        f"{plan.nodes} node(s); TensorRT-LLM {plan.trtllm_version}, image {plan.image}",
        f"Topology: {'disaggregated' if plan.disaggregated else 'aggregated'}; frontend on port {plan.http_port}, "
        f"router {plan.router_mode}, KV block size {plan.kv_block_size}",
        f"Limits: longest input {plan.max_input_len} tokens, max_seq_len {plan.max_seq_len}"
        + (f", max_tokens_in_buffer {plan.max_tokens_in_buffer}" if plan.max_tokens_in_buffer else ""),
        "",
        "Workers:",
    ]
    for w in plan.workers:
        lines.append(
            f"  {w.role}: {w.replicas} x {w.gpus_per_worker} GPU(s) over {w.nodes_per_worker} node(s); TP {w.tp_size} "
            f"EP {w.ep_size}, attention DP {'on' if w.attention_dp else 'off'}, max_batch_size {w.max_batch_size}, "
            f"max_num_tokens {w.max_num_tokens}, KV {w.kv_cache_dtype}, MTP {w.mtp_layers}; {w.engine_file}"
        )
        lines.append(f"    preset: {w.preset}")
    lines += ["", "Checks and notes:", *(f"  - {note}" for note in plan.notes), "", "Files:",
              "  engine/*.yaml                     LLM-API arguments (--extra-engine-args)",
              f"  {launch.SINGLE_NODE if plan.nodes == 1 else launch.MULTI_NODE:<33} start it",
              f"  {k8s.MANIFEST:<33} kubectl apply -f (Dynamo operator)",
              f"  {MANIFEST:<33} what `tritonrepo serve` reads"]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_deployment(plan: DynamoPlan, target: Path) -> Path:
    """All files or none: on any error the staging folder is removed and `target` is left as it was."""
    files = deployment_files(plan)
    manifest = to_manifest(plan)
    manifest.check()  # before anything is written
    with staged_directory(Path(target), manifest=MANIFEST) as staging:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            if relative.startswith("launch/"):
                os.chmod(path, 0o755)
        (staging / "plan.json").write_text(json.dumps(plan.as_dict(), indent=2) + "\n")
        save(staging, manifest)
    return Path(target).resolve()
