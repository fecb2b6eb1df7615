"""`tritonrepo serve` on a Dynamo deployment folder: the real dynamo.frontend and its workers, started, ready-checked,
watched (a dead worker is reported, the others keep serving) and stopped together."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tritonrepo import progress
from tritonrepo.dynamo import manifest
from tritonrepo.dynamo.serve_plan import ProcessSpec, frontend_command, worker_processes
from tritonrepo.errors import PortInUseError, ServerError, ServerNotFoundError, ServerStartError
from tritonrepo.interrupts import sigterm_as_interrupt
from tritonrepo.serving.tritonserver import die_with_parent, port_is_free

POLL_S = 0.25
STOP_GRACE_S = 10.0  # Dynamo's processes drain for a few seconds on SIGTERM; then SIGKILL
INSTALL_HINT = "pip install 'tritonrepo[dynamo]' (where pip cannot fetch aisimulate: .ci/install_dynamo.sh)"


@dataclass(frozen=True)
class DynamoServeOptions:
    folder: Path
    host: str = "127.0.0.1"
    port: int = 9000  # the frontend's HTTP port (serve's --openai-port)
    stand_in: str | None = None  # "mocker": Dynamo's mocker for prefill/decode workers where TensorRT-LLM is missing
    ready_timeout: float = 600.0
    api_keys: tuple[str, ...] = ()
    log_dir: Path | None = None  # one log per process [default: <folder>.dynamo-logs beside the folder]


def require_dynamo() -> None:
    """ServerNotFoundError naming the install command when `import dynamo.frontend` fails in this interpreter."""
    try:
        found = importlib.util.find_spec("dynamo.frontend") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ServerNotFoundError(
            "NVIDIA Dynamo is not installed in this environment", hint=f"Install it: {INSTALL_HINT}."
        )


def tensorrt_llm_available() -> bool:
    try:
        return importlib.util.find_spec("tensorrt_llm") is not None
    except (ImportError, ValueError):
        return False


class ManagedProcess:
    """One process of the deployment, in its own process group, its output in its own log file."""

    def __init__(self, spec: ProcessSpec, log_path: Path, env: dict[str, str]) -> None:
        self.spec = spec
        self.log_path = log_path
        self.env = env
        self.process: subprocess.Popen | None = None
        self.reported = False

    def start(self) -> None:
        try:
            with open(self.log_path, "ab") as log:
                # Killed with serve (SIGKILL included): nothing outlives it holding ports or GPUs.
                self.process = subprocess.Popen(
                    die_with_parent(list(self.spec.argv), signal.SIGKILL),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    start_new_session=True,
                )
        except OSError as error:
            raise ServerStartError(f"cannot start {self.spec.label}: {error}") from error

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    | {line}" for line in text[-lines:])

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)

    def kill_group(self) -> None:
        """SIGKILL what is left of its group (helpers it forked too), then reap it."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class DynamoDeploymentRun:
    """The processes of one `serve`: `start()`, `wait_ready()`, `watch()`; `stop()` always (a context manager)."""

    def __init__(self, options: DynamoServeOptions, deployment: manifest.DynamoDeployment, workers: list[ProcessSpec]):
        self.options = options
        self.deployment = deployment
        # One log per process beside the deployment, as tritonserver's is beside a repository: kept after serve ends,
        # replaced by the next serve of the same folder.
        self.log_dir = options.log_dir or options.folder.with_name(options.folder.name + ".dynamo-logs")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for old in self.log_dir.glob("*.log"):
            old.unlink()
        self.work_dir = Path(tempfile.mkdtemp(prefix="tritonrepo-dynamo-"))  # private to this serve; removed at stop
        discovery = self.work_dir / "discovery"  # Dynamo's file discovery store
        discovery.mkdir()
        self.env = {
            **os.environ,
            "DYN_DISCOVERY_BACKEND": "file",
            "DYN_FILE_KV": str(discovery),
            "PYTHONUNBUFFERED": "1",
            "DYN_SELF_HOST_METADATA": "0",  # the model card goes to the file store; no system port per worker
        }
        front = ProcessSpec(
            "frontend", "frontend", tuple(frontend_command(deployment, host=options.host, port=options.port))
        )
        self.frontend = ManagedProcess(front, self.log_dir / "frontend.log", self.env)
        self.workers = [
            ManagedProcess(spec, self.log_dir / f"{spec.name}.log", spec.environment(self.env)) for spec in workers
        ]

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.options.host in ("0.0.0.0", "") else self.options.host
        return f"http://{host}:{self.options.port}"

    def __enter__(self) -> DynamoDeploymentRun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        progress.say(f"    logs: {self.log_dir}")
        self.frontend.start()
        progress.say(f"    frontend started (pid {self.frontend.process.pid}): {' '.join(self.frontend.spec.argv[1:])}")
        for worker in self.workers:
            worker.start()
            progress.say(f"    {worker.spec.label} started (pid {worker.process.pid}), log: {worker.log_path}")

    def wait_ready(self) -> None:
        """Until /health answers, /v1/models lists the served name and every worker has registered with the frontend."""
        deadline = time.monotonic() + self.options.ready_timeout
        expected = len(self.workers)
        registered = -1
        while time.monotonic() < deadline:
            self._raise_if_broken(starting=True)
            count = self._registered_workers()
            if count != registered and count >= 0:
                progress.say(f"    {count} of {expected} worker(s) registered with the frontend")
                registered = count
            if count >= expected and self._model_listed():
                return
            time.sleep(0.5)
        tails = "\n".join(f"  {w.spec.label} ({w.log_path}):\n{w.tail()}" for w in self.workers)
        raise ServerStartError(
            f"the Dynamo deployment was not ready within {self.options.ready_timeout:g}s "
            f"({max(registered, 0)} of {expected} workers registered)",
            log_lines=tails.splitlines(),
        )

    def watch(self) -> None:
        """Until stopped: reports each worker that dies; ServerError when the frontend dies or a role has no worker left."""
        while True:
            self._raise_if_broken(starting=False)
            time.sleep(POLL_S)

    def _raise_if_broken(self, *, starting: bool) -> None:
        if self.frontend.returncode is not None:
            raise ServerError(
                f"the Dynamo frontend exited with code {self.frontend.returncode}",
                hint=f"See {self.frontend.log_path}.",
            )
        for worker in self.workers:
            if worker.returncode is not None and not worker.reported:
                worker.reported = True
                progress.warn(
                    f"{worker.spec.label} exited with code {worker.returncode} (log: {worker.log_path}); "
                    f"{self._alive_summary()}"
                )
        for role in {w.spec.role for w in self.workers}:
            if all(w.returncode is not None for w in self.workers if w.spec.role == role):
                what = "worker" if role == "aggregated" else f"{role} worker"
                raise ServerError(
                    f"every {what} of the Dynamo deployment has exited{' while starting' if starting else ''}",
                    hint=f"See the worker logs in {self.log_dir}.",
                )

    def _alive_summary(self) -> str:
        alive = [w.spec.name for w in self.workers if w.returncode is None]
        return f"still serving: {', '.join(alive)}" if alive else "no worker left"

    def _get(self, path: str) -> dict | None:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return json.loads(response.read() or b"{}")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _model_listed(self) -> bool:
        models = self._get("/v1/models") or {}
        return any(m.get("id") == self.deployment.served_model_name for m in models.get("data", []))

    def _registered_workers(self) -> int:
        """Worker instances the frontend's /health lists for the model's generate endpoints (-1: no answer yet)."""
        health = self._get("/health")
        if health is None:
            return -1
        instances = health.get("instances") or []
        return sum(
            1 for i in instances if i.get("endpoint") == "generate" and i.get("component") in ("backend", "prefill")
        )

    def stop(self) -> None:
        """SIGTERM every process (workers first, so the frontend sees them go), SIGKILL after STOP_GRACE_S."""
        processes = [*self.workers, self.frontend]
        for process in processes:
            process.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(p.returncode is None for p in processes if p.process):
            time.sleep(0.1)
        for process in processes:
            process.kill_group()
        shutil.rmtree(self.work_dir, ignore_errors=True)


def serve_dynamo_deployment(options: DynamoServeOptions) -> None:
    """Serve until Ctrl-C or SIGTERM (returns) or a fault that ends the deployment (ServerError, exit code 5)."""
    deployment = manifest.load(options.folder)
    if options.api_keys:
        raise ServerError(
            "Dynamo's frontend (1.6.1) has no API-key check, so serve cannot enforce --api-key / "
            "--api-key-file / $TRITONREPO_API_KEY on a Dynamo deployment",
            hint="Serve without a key on a private address and put an authenticating proxy in front of it.",
        )
    require_dynamo()
    trtllm = tensorrt_llm_available()
    workers = worker_processes(
        deployment,
        options.folder,
        trtllm_available=trtllm,
        stand_in=options.stand_in,
        bootstrap_ports=_free_ports(sum(g.replicas for g in deployment.workers if g.role == "prefill"), options.host),
    )
    if not port_is_free(options.host, options.port):
        raise PortInUseError(
            f"Port {options.port} on {options.host} is already in use.", hint="Choose another: --openai-port."
        )
    _announce(deployment, workers, trtllm)
    started = time.monotonic()
    try:
        with sigterm_as_interrupt(), DynamoDeploymentRun(options, deployment, workers) as run:
            run.start()
            run.wait_ready()
            progress.say(f"    ready after {time.monotonic() - started:.1f}s")
            progress.say(
                f"OpenAI endpoint (Dynamo frontend): {run.url}/v1  (/v1/models, /v1/completions, /v1/chat/completions, "
                f"/health, /metrics); model {deployment.served_model_name!r}"
            )
            progress.say("Press Ctrl-C to stop.")
            run.watch()
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the normal ways to stop
        pass
    progress.say("Stopped.")


def _announce(deployment: manifest.DynamoDeployment, workers: list[ProcessSpec], trtllm: bool) -> None:
    kinds = {spec.stand_in or ("dynamo.trtllm" if trtllm else "portable runtime") for spec in workers}
    progress.say(
        f"==> NVIDIA Dynamo: frontend (router {deployment.router_mode}, KV block {deployment.kv_block_size}) + "
        f"{len(workers)} worker(s) of {deployment.served_model_name!r}"
    )
    if not trtllm and any(spec.role == "aggregated" for spec in workers):
        progress.say("    TensorRT-LLM is not installed here: the aggregated workers run tritonrepo's portable runtime")
    if any(spec.stand_in for spec in workers):
        progress.say(
            f"    STAND-INS: {', '.join(sorted(k for k in kinds if k in ('mocker',)))} workers (Dynamo's dynamo.mocker: "
            "random tokens) stand in for dynamo.trtllm prefill/decode workers; the wiring is real, the text is not"
        )


def _free_ports(count: int, host: str) -> list[int]:
    import socket

    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host if host not in ("0.0.0.0", "") else "127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports
