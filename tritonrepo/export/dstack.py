"""dstack task and service configurations that build and serve a plan, rendered as YAML text (pure), and written.

What dstack 0.22 does with a configuration, and so what the rendering must respect (read in its source):
- `dstack apply -f FILE` parses it with `parse_apply_configuration(yaml.safe_load(...))`, then interpolates
  `${{ ... }}` in every command and turns `$$` into `$` (`VariablesInterpolator`), client side;
- the server joins the commands with " && " after stripping each one, and runs them with `<shell> -i -c`;
- a service replica is one job on one node (`ServiceConfiguration` has no `nodes`); only a task spans nodes;
- run names match `^[a-z][a-z0-9-]{1,40}$` (`is_valid_dstack_resource_name`).
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
import tempfile
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tritonrepo import __version__
from tritonrepo.errors import RenderError

SERVE_FILE = "serve.dstack.yml"
BUILD_FILE = "build.dstack.yml"
BUILD_SUFFIX = "-build"
RUN_NAME_MAX = 41  # dstack: ^[a-z][a-z0-9-]{1,40}$
NAME_MAX = RUN_NAME_MAX - len(BUILD_SUFFIX)  # so that "<name>-build" is a valid run name too
CACHE_ROOT = "/dstack-cache"  # the host folder under which instance volumes live (dstack's docs use this one)
HEREDOC_DELIMITER = "TRITONREPO_EOF"
WORKERS_WAIT = 'if [ "$DSTACK_NODE_RANK" != "0" ]; then sleep infinity; fi'

# tritonrepo GPU profile -> (dstack GPU name, memory in GB) as dstack's catalog (gpuhunt) names them. Profiles that
# gpuhunt does not know (H20) are left out: dstack would find no offer for them.
DSTACK_GPUS: dict[str, tuple[str, int]] = {
    "V100-16GB": ("V100", 16),
    "V100-32GB": ("V100", 32),
    "T4": ("T4", 16),
    "A10G": ("A10G", 24),
    "A10": ("A10", 24),
    "L4": ("L4", 24),
    "L40S": ("L40S", 48),
    "RTX-4090": ("RTX4090", 24),
    "A100-40GB": ("A100", 40),
    "A100-80GB": ("A100", 80),
    "H100-80GB": ("H100", 80),
    "H100-NVL": ("H100NVL", 94),
    "H200": ("H200", 141),
    "B200": ("B200", 180),
    "GB200": ("GB200", 186),
}

_ENV_ENTRY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(=[^\n]*)?")
_GPU_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_IMAGE = re.compile(r"\S+")
_FIRST_DOLLAR_RUN = re.compile(r"\$+")
_SECRET = re.compile(r"\$\{\{\s*secrets\.([A-Za-z0-9_-]+)\s*\}\}")


def run_name(text: str) -> str:
    """A valid dstack run name from a model name or Hub id: its last part, lowercase, [a-z0-9-], a letter first."""
    base = text.strip().rstrip("/").rsplit("/", 1)[-1]
    slug = re.sub(r"[^a-z0-9]+", "-", base.lower()).strip("-")
    if not slug:
        return "model"
    if not slug[0].isalpha():
        slug = f"model-{slug}"
    slug = slug[:NAME_MAX].rstrip("-")
    return slug if len(slug) >= 2 else f"{slug}-model"


def dstack_gpu(profile_name: str) -> tuple[str, int]:
    """(gpu_name, gpu_memory_gb) for a tritonrepo GPU profile, as dstack's resources spec wants them."""
    try:
        return DSTACK_GPUS[profile_name]
    except KeyError:
        raise RenderError(
            f"no dstack GPU name is known for the profile {profile_name!r}",
            hint=f"Known: {', '.join(DSTACK_GPUS)}; or set gpu_name and gpu_memory_gb yourself.",
        ) from None


@dataclass(frozen=True, kw_only=True)
class DstackTarget:
    """Everything the configurations need, as plain values. `name` is sanitised into a valid dstack run name."""

    name: str
    model: str
    gpu_name: str  # dstack's name: "H200", "H100", "A100" (see dstack_gpu)
    gpu_memory_gb: int | None
    gpus_per_node: int
    nodes: int
    image: str
    build_commands: tuple[str, ...]  # empty: nothing to build (the PyTorch-backend path)
    serve_commands: tuple[str, ...]
    port: int  # the OpenAI-compatible port the server listens on
    openai_model_name: str
    disk_gb: int
    env: tuple[str, ...] = ()  # "NAME" (passed through from where `dstack apply` runs) or "NAME=value"
    files: tuple[tuple[str, str], ...] = ()  # (path, content) written before the serve commands run
    volume_path: str | None = None  # a cache folder (weights, engines) kept on the instance between runs
    shm_size_gb: int | None = None  # shared memory for NCCL/MPI between GPU processes; Docker's default is 64 MB
    plan_summary: str = ""  # the plan these come from, for the header comment
    uploads: tuple[tuple[str, str], ...] = ()  # (local path, container path): dstack uploads them (`files:`)
    every_node_serves: bool = False  # several nodes: each runs the serve commands (its rank picks its part)

    def __post_init__(self) -> None:
        for name in ("build_commands", "serve_commands", "env", "uploads"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "files", tuple((str(path), str(text)) for path, text in self.files))
        object.__setattr__(self, "name", run_name(self.name))
        _check(self)


def render_dstack(target: DstackTarget) -> dict[str, str]:
    """{file name: YAML text}: `build.dstack.yml` when there is something to build, and `serve.dstack.yml`."""
    files = {}
    if target.build_commands:
        files[BUILD_FILE] = _document(_build_comments(target), _build_configuration(target))
    files[SERVE_FILE] = _document(_serve_comments(target), _serve_configuration(target))
    return files


def write_configurations(folder: Path | str, files: Mapping[str, str], *, force: bool = False) -> list[Path]:
    """Write each file atomically; refuse (before writing any) to replace a file whose content differs unless force."""
    folder = Path(folder)
    for name in files:
        if not name or name in (".", "..") or "/" in name or "\\" in name:
            raise RenderError(f"{name!r} is not a plain file name")
    changed = {}
    for name, text in files.items():
        path, data = folder / name, text.encode("utf-8")
        if path.is_file() and path.read_bytes() == data:
            continue
        if path.exists() and (not force or not path.is_file()):
            raise RenderError(
                f"{path} exists with other content; not overwriting it",
                hint="Pass --force to replace it." if path.is_file() else "Move it away first.",
            )
        changed[path] = data
    folder.mkdir(parents=True, exist_ok=True)
    for path, data in changed.items():
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(temp, 0o644)
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    return [folder / name for name in files]


# --- checks --------------------------------------------------------------------------------------------------------
def _check(target: DstackTarget) -> None:
    problems = []
    for what, value in (("gpus_per_node", target.gpus_per_node), ("nodes", target.nodes), ("disk_gb", target.disk_gb)):
        if not isinstance(value, int) or value < 1:
            problems.append(f"{what} must be a positive integer, got {value!r}")
    for what, value in (("gpu_memory_gb", target.gpu_memory_gb), ("shm_size_gb", target.shm_size_gb)):
        if value is not None and (not isinstance(value, int) or value < 1):
            problems.append(f"{what} must be a positive integer or None, got {value!r}")
    if not isinstance(target.port, int) or not 1 <= target.port <= 65535:
        problems.append(f"port must be 1-65535, got {target.port!r}")
    if not _GPU_NAME.fullmatch(target.gpu_name):
        problems.append(f"gpu_name must be a dstack GPU name such as H200 or A100, got {target.gpu_name!r}")
    if not _IMAGE.fullmatch(target.image):
        problems.append(f"image must be a container image name, got {target.image!r}")
    if not target.model.strip() or not target.openai_model_name.strip():
        problems.append("model and openai_model_name must not be empty")
    if not target.serve_commands:
        problems.append("serve_commands must not be empty")
    problems += [
        f"env entry {entry!r} is not NAME or NAME=value" for entry in target.env if not _ENV_ENTRY.fullmatch(entry)
    ]
    volume = target.volume_path
    if volume is not None and (not volume.startswith("/") or ":" in volume or posixpath.normpath(volume) == "/"):
        problems.append(f"volume_path must be an absolute folder (not /) without ':', got {volume!r}")
    for local, remote in target.uploads:
        if not local.startswith("/") or not remote.startswith("/") or ":" in local + remote:
            problems.append(f"uploads: {local!r} -> {remote!r} must be absolute paths without ':'")
    paths = [path for path, _ in target.files]
    problems += [f"files: {path!r} appears twice" for path in sorted(set(paths)) if paths.count(path) > 1]
    for path, content in target.files:
        if not path or "\n" in path or "\0" in path or "${{" in path:
            problems.append(f"files: {path!r} is not a usable path")
        problems += _shell_text_problems(f"files: {path}", content)
    for what, commands in (("build_commands", target.build_commands), ("serve_commands", target.serve_commands)):
        for command in commands:
            if not command.strip():
                problems.append(f"{what}: an empty command")
            problems += _shell_text_problems(what, command)
    if problems:
        raise RenderError("cannot render dstack configurations: " + "; ".join(problems))


def _shell_text_problems(where: str, text: str) -> list[str]:
    problems = []
    if "\0" in text:
        problems.append(f"{where}: a NUL byte cannot pass through a shell")
    if "${{" in text:
        # dstack rewrites ${{ ... }} (run args, secrets on the client; node IPs on the server, after the client has
        # already undone any escape), so such text cannot reach the shell unchanged.
        problems.append(f"{where}: '${{{{' is dstack's interpolation syntax and would be rewritten")
    return problems


# --- configurations ------------------------------------------------------------------------------------------------
def _gpu(target: DstackTarget) -> str:
    memory = f":{target.gpu_memory_gb}GB" if target.gpu_memory_gb else ""
    return f"{target.gpu_name}{memory}:{target.gpus_per_node}"


def _container(target: DstackTarget, commands: list[str]) -> dict:
    """What build and serve share: the image, bash, the environment; and the commands, escaped for dstack."""
    container: dict = {"image": target.image, "shell": "bash"}
    if target.env:
        container["env"] = list(target.env)
    container["commands"] = [_for_dstack(command) for command in commands]
    if target.uploads:
        container["files"] = [{"local_path": local, "path": remote} for local, remote in target.uploads]
    return container


def _machine(target: DstackTarget) -> dict:
    """The resources of one node, and the cache volume."""
    resources: dict = {"gpu": _gpu(target), "disk": f"{target.disk_gb}GB.."}
    if target.shm_size_gb:
        resources["shm_size"] = f"{target.shm_size_gb}GB"
    machine: dict = {"resources": resources}
    if target.volume_path:
        path = posixpath.normpath(target.volume_path)
        machine["volumes"] = [{"instance_path": CACHE_ROOT + path, "path": path, "optional": True}]
    return machine


def _build_configuration(target: DstackTarget) -> dict:
    container = _container(target, list(target.build_commands))
    return {"type": "task", "name": target.name + BUILD_SUFFIX, **container, **_machine(target)}


def _serve_commands(target: DstackTarget) -> list[str]:
    """What bash runs to serve, in order: the files, (on several nodes) the workers' wait, the serve commands."""
    files = [_file_command(path, content) for path, content in target.files]
    wait = [WORKERS_WAIT] if target.nodes > 1 and not target.every_node_serves else []
    return [*files, *wait, *target.serve_commands]


def _serve_configuration(target: DstackTarget) -> dict:
    container = _container(target, _serve_commands(target))
    if target.nodes == 1:
        endpoint = {"port": target.port, "model": target.openai_model_name}
        return {"type": "service", "name": target.name, **container, **endpoint, **_machine(target)}
    order = "master-first" if target.every_node_serves else "workers-first"  # workers find the master's services
    cluster = {"nodes": target.nodes, "startup_order": order, "stop_criteria": "master-done"}
    ports = {"ports": [target.port]}
    return {"type": "task", "name": target.name, **cluster, **container, **ports, **_machine(target)}


# --- commands ------------------------------------------------------------------------------------------------------
def _for_dstack(command: str) -> str:
    """The command as written in the YAML so that, after `dstack apply` interpolates it, bash gets `command`.

    dstack's interpolator (0.22) turns `$$` into `$` only until it meets the first `$` that `$` does not follow; from
    there it copies the rest as it is. So only the first run of `$` signs needs escaping: m signs written as 2m - 1
    give m back, and the last of them is that lone `$` (no `${{` ever follows: _check refuses it)."""
    return _FIRST_DOLLAR_RUN.sub(lambda run: "$" * (2 * len(run.group(0)) - 1), command, count=1)


def _file_command(path: str, content: str) -> str:
    """One command that writes `content` to `path` byte for byte, through a quoted heredoc (no expansion at all).

    The command ends with `}` on its own line: dstack appends " && <next command>" to it, which would otherwise
    land on the heredoc's closing line and stop it from closing."""
    delimiter = HEREDOC_DELIMITER
    lines = set(content.split("\n"))
    while delimiter in lines:
        delimiter += "_"
    target = shlex.quote(path)
    mkdir = f'mkdir -p -- "$(dirname -- {target})"'
    if not content or content.endswith("\n"):
        return f"{{ {mkdir} && cat > {target} <<'{delimiter}'\n{content}{delimiter}\n}}"
    # A heredoc always ends with a newline that this content lacks: read it whole (bash's read -d '' stops at the
    # end and returns 1 there) and write it back without its last character.
    return (
        f"{{ {mkdir} && {{ IFS= read -r -d '' TRITONREPO_FILE <<'{delimiter}' || true; }}"
        f" && printf '%s' \"${{TRITONREPO_FILE%?}}\" > {target}\n{content}\n{delimiter}\n}}"
    )


# --- text ----------------------------------------------------------------------------------------------------------
COMMENT_WIDTH = 116


def _document(paragraphs: list[str], configuration: dict) -> str:
    """The header comment (paragraphs wrapped; lines starting with a space kept as they are), then the YAML."""
    lines = []
    for paragraph in paragraphs:
        keep = not paragraph or paragraph.startswith(" ")
        lines += [paragraph] if keep else textwrap.wrap(paragraph, COMMENT_WIDTH, break_on_hyphens=False)
    header = "".join(f"# {line}".rstrip() + "\n" for line in lines)
    return header + "\n" + _yaml(configuration)


def _yaml(configuration: dict) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False):  # lists indented under their key
            return super().increase_indent(flow, False)

    def text(dumper: yaml.SafeDumper, value: str):
        # Multi-line commands as literal blocks; PyYAML falls back to a quoted style where a block cannot hold them.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump(configuration, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)


def _origin(target: DstackTarget) -> list[str]:
    lines = [f"Generated by tritonrepo {__version__} (`tritonrepo export dstack`); edits are lost when it runs again."]
    if target.plan_summary:
        lines += ["From the plan:", *(f"  {line}" for line in target.plan_summary.strip().splitlines())]
    return lines


def _shell_notes(target: DstackTarget, commands: list[str]) -> list[str]:
    notes = ["Commands run in bash (`shell: bash`), one after the other (dstack joins them with &&)."]
    if any(_for_dstack(command) != command for command in commands):
        notes.append("dstack turns a leading `$$` of a command into `$`: such commands carry extra `$` signs here.")
    passed = ", ".join(entry for entry in target.env if "=" not in entry)
    if passed:
        notes.append(f"{passed}: taken from the environment of the shell that runs `dstack apply`.")
    for entry in target.env:
        secret = _SECRET.search(entry)
        if secret:
            notes.append(f"{entry.split('=', 1)[0]}: the dstack secret {secret.group(1)} (set it once: `dstack secret"
                         f" set {secret.group(1)} <value>`); the server fills it in, the YAML never holds it.")  # fmt: skip
    for local, remote in target.uploads:
        notes.append(f"`files:` uploads {local} from the machine that runs `dstack apply` to {remote}.")
    return notes


def _build_comments(target: DstackTarget) -> list[str]:
    if target.volume_path:
        host = CACHE_ROOT + posixpath.normpath(target.volume_path)
        where = (
            f"The output stays in {target.volume_path}, an instance volume (the host folder {host}) that {SERVE_FILE}"
            " mounts too, so serving reuses it when it runs on the same instance (the same fleet). dstack keeps"
            " instance volumes as a cache, not as storage: to serve on another instance, end the build commands with"
            " a push to S3 (`tritonrepo push`) and pull it before serving."
        )
    else:
        where = (
            "No volume: what the build writes is gone when the task ends, unless the build commands push it"
            " (`tritonrepo push ... s3://...`) for the serve commands to pull."
        )
    return [
        *_origin(target),
        f"Builds the TensorRT-LLM engines for {target.model} on {target.gpus_per_node}x {target.gpu_name}, the GPU"
        " that serves them: engines run only on the GPU model and TensorRT-LLM version they were built with.",
        where,
        *_shell_notes(target, list(target.build_commands)),
        "",
        f" Run it first:  dstack apply -f {BUILD_FILE}",
        f" Then serve:    dstack apply -f {SERVE_FILE}",
    ]


def _serve_comments(target: DstackTarget) -> list[str]:
    what = f'Serves {target.model} as "{target.openai_model_name}" on an OpenAI-compatible API (port {target.port})'
    if target.nodes == 1:
        shape = [
            f"{what} on {target.gpus_per_node}x {target.gpu_name}. `model` puts it behind dstack's OpenAI-compatible"
            " endpoint (<server>/proxy/models/<project>/, or the gateway's), which expects the API under /v1 and"
            " probes /v1/chat/completions until it answers."
        ]
    elif target.every_node_serves:
        shape = [
            f"{what} on {target.nodes} nodes of {target.gpus_per_node}x {target.gpu_name}.",
            "A task, not a service: a dstack service replica runs on one node (ServiceConfiguration has no `nodes`),"
            " so a deployment over several nodes runs as a distributed task, which needs a fleet with"
            " `placement: cluster`.",
            "Every node writes the files and runs the serve commands; DSTACK_NODE_RANK picks each node's part and"
            " DSTACK_MASTER_NODE_IP is the head's address. The master starts first (startup_order), as the others"
            " register with the services it runs; the run ends when the master does (stop_criteria).",
            f"While `dstack apply` (or later `dstack attach {target.name}`) is attached, it forwards port {target.port}"
            f" of the master to localhost:{target.port}. No gateway and no `model` mapping: dstack has those for"
            " services only.",
        ]
    else:
        shape = [
            f"{what} on {target.nodes} nodes of {target.gpus_per_node}x {target.gpu_name}.",
            "A task, not a service: a dstack service replica runs on one node (ServiceConfiguration has no `nodes`),"
            " so a deployment over several nodes runs as a distributed task, which needs a fleet with"
            " `placement: cluster`.",
            "Every node writes the files; then the workers (DSTACK_NODE_RANK != 0) wait and the master runs the serve"
            " commands, which start the ranks on every node (mpirun --hostfile $DSTACK_MPI_HOSTFILE, over dstack's"
            " SSH between the nodes). The workers start first (startup_order); the run ends when the master does"
            " (stop_criteria).",
            f"While `dstack apply` (or later `dstack attach {target.name}`) is attached, it forwards port {target.port}"
            f" of the master to localhost:{target.port}. No gateway and no `model` mapping: dstack has those for"
            " services only.",
        ]
    build = [f"Build first with {BUILD_FILE}."] if target.build_commands else []
    notes = _shell_notes(target, _serve_commands(target))
    return [*_origin(target), *shape, *build, *notes, "", f" Run it:  dstack apply -f {SERVE_FILE}"]
