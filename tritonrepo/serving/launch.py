"""`tritonrepo serve`: tritonserver on a repository, ready-checked, then the OpenAI front end; one Ctrl-C stops both."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tritonrepo import progress
from tritonrepo.errors import PortInUseError, ServerError, ValidationError
from tritonrepo.frontend.policy import FrontendPolicy
from tritonrepo.interrupts import sigterm_as_interrupt
from tritonrepo.pytorch_path.triton_repo import find_llmapi_model
from tritonrepo.repository.manifest import MANIFEST, read_manifest
from tritonrepo.serving.supervisor import RestartPolicy, Supervisor
from tritonrepo.serving.tritonserver import TritonServer, check_stub_environment, find_tritonserver, port_is_free

if TYPE_CHECKING:
    from tritonrepo.frontend.app import FrontendThread

DEFAULT_BUILD_ROOT = Path("build")


@dataclass(frozen=True)
class ServeOptions:
    repository: Path | str  # a local folder or s3://bucket/prefix
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    openai_port: int = 9000  # 0: no front end
    tritonserver: str | None = None
    served_model_name: str | None = None
    log_file: Path | None = None
    ready_timeout: float = 600
    direct: bool = False  # s3:// only: Triton reads the bucket itself instead of a verified local copy
    trust_repository: bool = False  # serve even when validation finds problems (each printed as a warning)
    s3_profile: str | None = None
    s3_region: str | None = None
    s3_endpoint_url: str | None = None
    frontend: FrontendPolicy = FrontendPolicy()
    max_restarts: int = RestartPolicy.max_restarts  # of tritonserver after a model's stub died, within 10 minutes


def default_repository(build_root: Path = DEFAULT_BUILD_ROOT) -> Path:
    """The repository under ./build when none is named: the only one, or the most recently built."""
    candidates = sorted(
        (p for p in build_root.glob("*") if (p / MANIFEST).is_file()), key=lambda p: (p / MANIFEST).stat().st_mtime
    )
    if not candidates:
        raise ServerError(
            f"no repository given and none found under {build_root}/",
            hint="Run `tritonrepo build --model tiny-llama` first, or pass the repository folder.",
        )
    if len(candidates) > 1:
        progress.say(f"    {len(candidates)} repositories under {build_root}/; serving the newest, {candidates[-1]}")
    return candidates[-1]


def serve_repository(options: ServeOptions) -> None:
    """Blocks until Ctrl-C/SIGTERM (or tritonserver exits); always stops what it started."""
    repository, triton_repository = _local_repository(options)
    if not repository.is_dir():
        raise ServerError(f"{options.repository} is not a directory", hint="Pass a model repository folder.")
    check_before_serving(repository, trust=options.trust_repository)
    if options.openai_port and not port_is_free(options.host, options.openai_port):
        raise PortInUseError(
            f"port {options.openai_port} on {options.host} is already in use", hint="Choose another: --openai-port."
        )
    world_size = _check_engines(repository)
    llmapi = find_llmapi_model(repository)  # TensorRT-LLM's PyTorch backend: its model.yaml sizes the launch
    if llmapi is not None:
        world_size = llmapi.world_size
        _check_llmapi_gpus(llmapi.name, world_size)
    installation = find_tritonserver(options.tritonserver)
    check_stub_environment(installation)
    log_path = options.log_file or repository.with_name(repository.name + ".tritonserver.log")

    def make_server() -> TritonServer:  # a fresh one for each (re)start
        return TritonServer(
            installation,
            triton_repository,
            log_path=log_path,
            http_port=options.http_port,
            grpc_port=options.grpc_port,
            metrics_port=options.metrics_port,
            host=options.host,
            world_size=world_size,
            llmapi=llmapi is not None,
        )

    supervisor = Supervisor(
        make_server,
        ready_timeout=options.ready_timeout,
        policy=RestartPolicy(max_restarts=options.max_restarts),
        on_states=_show_states,
    )
    progress.say(f"    {launch_summary(world_size, llmapi.name if llmapi else None)}")
    progress.say(f"==> Starting tritonserver ({installation.source}: {installation.binary})")
    try:
        with sigterm_as_interrupt():  # so the `with` blocks below unwind and stop tritonserver
            _serve_until_stopped(options, repository, supervisor, llmapi.name if llmapi else "ensemble")
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the normal ways to stop
        pass
    progress.say("Stopped.")


def _serve_until_stopped(options: ServeOptions, repository: Path, supervisor: Supervisor, default_name: str) -> None:
    """Everything on this (the main) thread but the front end: tritonserver is started, watched and restarted here,
    so its parent-death signal stays armed (see tritonserver.die_with_parent)."""
    started = time.monotonic()
    with supervisor:
        server = supervisor.start()
        progress.say(f"    every model is ready after {time.monotonic() - started:.1f}s")
        progress.say(f"Triton: HTTP {server.http_url}  gRPC {server.grpc_url}  metrics :{options.metrics_port}")
        if not options.openai_port:
            progress.say("Press Ctrl-C to stop.")
            supervisor.watch()
            return
        frontend = _start_frontend(options, repository, server, default_name)
        supervisor.on_fault, supervisor.on_recovered = frontend.fail_requests, frontend.triton_ready
        try:
            supervisor.watch(keep_going=lambda: frontend.alive)
        finally:
            frontend.stop()  # before tritonserver: open streams end with an event, not a broken connection
        raise ServerError("the OpenAI front end stopped unexpectedly", hint="Its error is printed above.")


def check_before_serving(repository: Path, *, trust: bool) -> None:
    """The checks of `tritonrepo validate`, before anything starts: a problem stops serve with validate's error and
    exit code, unless `trust` (--trust-repository), which serves anyway and prints each problem as a warning."""
    from tritonrepo.repository.validate import validate_repository

    problems = [str(problem) for problem in validate_repository(repository)]
    if not problems:
        return
    if not trust:
        raise ValidationError(
            problems,
            root=str(repository),
            hint="Nothing was started. Fix them (`tritonrepo validate` shows the same), or serve anyway with "
            "--trust-repository.",
        )
    progress.warn(f"serving {repository} despite {len(problems)} problem(s), as --trust-repository asks:")
    for problem in problems:
        progress.warn(f"  {problem}")


def _local_repository(options: ServeOptions) -> tuple[Path, str]:
    """(local folder for the front end and checks, what tritonserver loads). An s3:// repository is pulled into
    the cache (incremental, sha256-verified), because the tensorrtllm backend needs local engine paths; with --direct
    Triton reads the bucket itself and the local copy only serves the front end's tokenizer and manifest."""
    text = str(options.repository)
    if not text.startswith("s3://"):
        if options.direct:
            raise ServerError("--direct applies to s3:// repositories only")
        local = Path(text).resolve()
        return local, str(local)
    from tritonrepo.source.resolve import cache_root
    from tritonrepo.storage import TransferOptions, parse_s3_url, pull

    url = parse_s3_url(text)
    local = cache_root() / "s3" / url.bucket / (url.prefix or "_root")
    transfer = TransferOptions(
        profile=options.s3_profile, region=options.s3_region, endpoint_url=options.s3_endpoint_url
    )
    with progress.step(f"Pulling {url} into {local} (only what changed, every file verified)"):
        summary = pull(url, local, transfer)
        progress.say(f"    {summary.files_moved} file(s) downloaded, {summary.files_skipped} unchanged")
    if not options.direct:
        progress.say(f"    serving the local copy {local}")
        return local, str(local)
    if (read_manifest(local) or {}).get("runtime") == "tensorrtllm":
        raise ServerError(
            "--direct cannot serve TensorRT-LLM engines: the tensorrtllm backend needs them on local disk",
            hint="Leave out --direct: the repository is then pulled and served locally.",
        )
    triton_url = triton_s3_url(url.bucket, url.prefix, options.s3_endpoint_url)
    progress.say(f"    Triton loads {triton_url} directly (the local copy serves the front end's tokenizer)")
    return local, triton_url


def triton_s3_url(bucket: str, prefix: str, endpoint_url: str | None) -> str:
    """Triton names a non-AWS endpoint inside the URL: s3://host:port/bucket/prefix."""
    path = f"{bucket}/{prefix}".rstrip("/")
    if not endpoint_url:
        return f"s3://{path}"
    from urllib.parse import urlparse

    endpoint = urlparse(endpoint_url)
    host = endpoint.netloc or endpoint.path
    return f"s3://{endpoint.scheme}://{host}/{path}" if endpoint.scheme == "https" else f"s3://{host}/{path}"


def _check_engines(repository: Path) -> int:
    """TensorRT-LLM engines only run where they were built for: check before starting anything. Returns the number
    of tritonserver ranks to launch (the engines' world size)."""
    manifest = read_manifest(repository) or {}
    if manifest.get("runtime") != "tensorrtllm" or not manifest.get("engine"):
        return 1
    from tritonrepo import hardware
    from tritonrepo.planning.engines import check_engines

    record = manifest["engine"]
    check_engines(record, hardware.detect_hardware(), hardware.tensorrt_llm_version())
    return int(record.get("world_size") or 1)


def launch_summary(world_size: int, llmapi_model: str | None = None) -> str:
    """One line saying how tritonserver is launched, for the serve output."""
    if llmapi_model is None:
        if world_size == 1:
            return "one tritonserver process"
        return f"{world_size} GPU ranks: tritonserver under mpirun, leader mode (rank 0 serves requests)"
    where = f"llmapi model {llmapi_model!r} (TensorRT-LLM PyTorch backend)"
    if world_size == 1:
        return f"{where} on 1 GPU: one plain tritonserver process"
    return (
        f"{where} on {world_size} GPUs: mpirun -n {world_size} trtllm-llmapi-launch tritonserver "
        "(rank 0 serves requests, the other ranks are LLM API workers)"
    )


def _check_llmapi_gpus(name: str, world_size: int) -> None:
    """`tritonrepo serve` launches on this machine only; a model wider than its GPUs would only fail inside mpirun."""
    if world_size <= 1:
        return
    from tritonrepo import hardware

    found = hardware.detect_hardware().count
    if found < world_size:
        raise ServerError(
            f"the llmapi model {name!r} needs {world_size} GPUs (tensor x pipeline parallel) and this machine has "
            f"{found}",
            hint="Serve it on a machine with that many GPUs; across nodes, start one rank per GPU with "
            "`mpirun ... trtllm-llmapi-launch tritonserver` yourself.",
        )


def _start_frontend(options: ServeOptions, repository: Path, server: TritonServer, default_name: str) -> FrontendThread:
    from tritonrepo.frontend.app import FrontendSettings, FrontendThread

    settings = FrontendSettings(
        repository=repository,
        triton_grpc_url=server.grpc_url,
        host=options.host,
        port=options.openai_port,
        served_model_name=options.served_model_name,
        policy=options.frontend,
    )
    manifest = read_manifest(repository) or {}
    name = options.served_model_name or manifest.get("model", {}).get("name") or default_name
    policy = options.frontend
    notes = [f"model {name!r}", "API key required" if policy.api_keys else "no API key"]
    if reasoning := policy.resolved_reasoning_parser(manifest):
        notes.append(f"reasoning parser {reasoning}")
    frontend = FrontendThread(settings)
    frontend.start()
    progress.say(
        f"OpenAI endpoint: http://{options.host}:{options.openai_port}/v1  ({', '.join(notes)}).  Ctrl-C stops both."
    )
    return frontend


def _show_states(states: dict[str, str]) -> None:
    progress.say("    " + ", ".join(f"{name}: {state}" for name, state in sorted(states.items())))
