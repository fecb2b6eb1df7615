"""The manifest of a Dynamo deployment folder: what `build --serving dynamo` decided and `serve` runs."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tritonrepo.errors import ValidationError
from tritonrepo.files import write_atomically

MANIFEST = "dynamo-deployment.json"
FORMAT = 1
ROLES = ("aggregated", "prefill", "decode")
ROUTER_MODES = ("kv", "round-robin")


@dataclass(frozen=True)
class WorkerGroup:
    """`replicas` identical workers of one role; each spans `gpus_per_worker` GPUs over `nodes_per_worker` nodes."""

    role: str  # one of ROLES
    replicas: int
    gpus_per_worker: int
    engine_config: str  # the worker's LLM-API YAML, relative to the deployment folder: "engine/agg.yaml"
    nodes_per_worker: int = 1

    @property
    def engine_file(self) -> str:
        return self.engine_config


@dataclass(frozen=True)
class DynamoDeployment:
    model: str  # what the user asked for: a catalog name or a Hugging Face id
    model_path: str  # what the workers load: a Hugging Face id, or an absolute local folder
    served_model_name: str  # the name clients send as "model"
    router_mode: str  # one of ROUTER_MODES
    kv_block_size: int  # tokens per KV block: the same for the workers and the router
    workers: tuple[WorkerGroup, ...]
    max_seq_len: int  # prompt + output, for every worker
    max_batch_size: int  # sequences in flight per worker
    backend: str = "trtllm"  # the workers' engine where TensorRT-LLM exists (`python3 -m dynamo.trtllm`)
    dynamo_version: str = "1.6.1"
    tensorrt_llm_version: str = ""
    image: str = ""  # the container image of the Kubernetes manifest and launch scripts
    notes: tuple[str, ...] = field(default=())  # the plan's explanations (checks applied, settings chosen and why)

    @property
    def disaggregated(self) -> bool:
        return any(group.role != "aggregated" for group in self.workers)

    def to_json(self) -> dict:
        return {"format": FORMAT, "kind": "dynamo", **asdict(self)}

    @classmethod
    def from_json(cls, data: dict, where: str = MANIFEST) -> DynamoDeployment:
        if not isinstance(data, dict) or data.get("kind") != "dynamo":
            raise ValidationError(['not a Dynamo deployment manifest (no "kind": "dynamo")'], root=where)
        if data.get("format") != FORMAT:
            raise ValidationError(
                [f"format {data.get('format')!r}; this tritonrepo reads format {FORMAT}"],
                root=where,
                hint="rebuild the deployment with this version (tritonrepo build --serving dynamo)",
            )
        fields = {k: v for k, v in data.items() if k not in ("format", "kind")}
        try:
            groups = tuple(WorkerGroup(**group) for group in fields.pop("workers"))
            deployment = cls(workers=groups, **{**fields, "notes": tuple(fields.get("notes", ()))})
        except (KeyError, TypeError) as error:
            raise ValidationError([f"incomplete, or fields this version does not know: {error}"], root=where) from error
        deployment.check(where)
        return deployment

    def check(self, where: str = MANIFEST) -> None:
        """The manifest's own consistency (what any reader may rely on)."""
        problems = []
        if self.router_mode not in ROUTER_MODES:
            problems.append(f"router_mode {self.router_mode!r} is not one of {', '.join(ROUTER_MODES)}")
        if not self.workers:
            problems.append("it has no workers")
        for group in self.workers:
            if group.role not in ROLES:
                problems.append(f"worker role {group.role!r} is not one of {', '.join(ROLES)}")
            if group.replicas < 1 or group.gpus_per_worker < 0 or group.nodes_per_worker < 1:
                problems.append(f"{group.role} workers: replicas, GPUs and nodes must be positive")
        roles = {group.role for group in self.workers}
        if roles & {"prefill", "decode"} and roles != {"prefill", "decode"}:
            problems.append(
                f"a disaggregated deployment needs prefill and decode workers and nothing else, not {roles}"
            )
        if self.kv_block_size < 1 or self.max_seq_len < 1 or self.max_batch_size < 1:
            problems.append("kv_block_size, max_seq_len and max_batch_size must be positive")
        if problems:
            raise ValidationError(problems, root=where)


def is_dynamo_deployment(folder: Path) -> bool:
    return (Path(folder) / MANIFEST).is_file()


def load(folder: Path) -> DynamoDeployment:
    path = Path(folder) / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as error:
        raise ValidationError([f"not a Dynamo deployment: {MANIFEST} is missing"], root=str(folder)) from error
    except (OSError, ValueError) as error:
        raise ValidationError([f"cannot be read: {error}"], root=str(path)) from error
    return DynamoDeployment.from_json(data, str(path))


def save(folder: Path, deployment: DynamoDeployment) -> None:
    deployment.check()
    write_atomically(Path(folder) / MANIFEST, (json.dumps(deployment.to_json(), indent=2) + "\n").encode())
