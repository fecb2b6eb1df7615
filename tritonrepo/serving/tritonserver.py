"""Finding a tritonserver binary and running it as a child process that never outlives its owner."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from tritonrepo import progress
from tritonrepo.errors import PortInUseError, ServerNotFoundError, ServerStartError
from tritonrepo.serving import procfs, shm

ENV_VAR = "TRITONREPO_TRITONSERVER"
NGC_BINARY = Path("/opt/tritonserver/bin/tritonserver")
NGC_CONTAINER = "nvcr.io/nvidia/tritonserver:<yy.mm>-trtllm-python-py3"
INSTALL_HINT = (
    f'Install one with `pip install "tritonrepo[server]"` (the nvidia-pytriton wheel), or run inside the NGC container '
    f"{NGC_CONTAINER}, or pass --tritonserver PATH / set {ENV_VAR}."
)


@dataclasses.dataclass(frozen=True)
class TritonInstallation:
    """A tritonserver binary, its backend folder (None: the binary's default) and the variables to add to its env."""

    binary: Path
    backend_dir: Path | None
    env: dict[str, str]
    source: str  # "explicit", "env", "ngc" or "pytriton"


def find_tritonserver(explicit: str | None = None) -> TritonInstallation:
    """The first of: `explicit` (--tritonserver), $TRITONREPO_TRITONSERVER, the NGC container's, nvidia-pytriton's."""
    if explicit:
        return _given_binary(Path(explicit), "explicit", "--tritonserver")
    if os.environ.get(ENV_VAR):
        return _given_binary(Path(os.environ[ENV_VAR]), "env", ENV_VAR)
    if NGC_BINARY.is_file() and os.access(NGC_BINARY, os.X_OK):
        return TritonInstallation(NGC_BINARY, None, {}, "ngc")
    root = _pytriton_root()
    if root is None:
        raise ServerNotFoundError("No tritonserver found.", hint=INSTALL_HINT)
    return _wheel_installation(root, "pytriton")


def _given_binary(binary: Path, source: str, origin: str) -> TritonInstallation:
    binary = binary.expanduser().absolute()
    if not binary.is_file():
        raise ServerNotFoundError(f"No tritonserver at {binary} (from {origin}).", hint=INSTALL_HINT)
    if not os.access(binary, os.X_OK):
        raise ServerNotFoundError(f"{binary} (from {origin}) is not executable.", hint=f"Run `chmod +x {binary}`.")
    root = _pytriton_root()
    # The wheel's own binary cannot run as shipped (no stub in its backend folder), so it gets the wheel's setup.
    if root is not None and binary.resolve() == (root / "bin" / "tritonserver").resolve():
        return _wheel_installation(root, source)
    return TritonInstallation(binary, None, {}, source)


def _pytriton_root() -> Path | None:
    """`<site-packages>/pytriton/tritonserver`, found without importing pytriton (its import pulls in heavy modules)."""
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    return root if (root / "bin" / "tritonserver").is_file() else None


def _wheel_installation(root: Path, source: str) -> TritonInstallation:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stubs = root / "python_backend_stubs"
    stub = stubs / version / "triton_python_backend_stub"
    if not stub.is_file():
        have = sorted((p.name for p in stubs.glob("*.*") if p.is_dir()), key=lambda v: tuple(map(int, v.split("."))))
        raise ServerNotFoundError(
            f"The nvidia-pytriton wheel has no Python backend stub for Python {version} (it has {', '.join(have)}).",
            hint=f"Use one of those Python versions, or run inside the NGC container {NGC_CONTAINER}.",
        )
    python_backend = root / "backends" / "python"
    sources = [python_backend / "libtriton_python.so", python_backend / "triton_python_backend_utils.py", stub]
    wheel_libs = str(root.parent.parent / "nvidia_pytriton.libs")  # <site-packages>/nvidia_pytriton.libs
    env = {
        # The interpreter's own libdir first: otherwise the stub may link a system libpython of the same minor
        # version but another patch level, and extension modules (ssl) fail with undefined symbols.
        "LD_LIBRARY_PATH": _join_paths(
            sysconfig.get_config_var("LIBDIR"), wheel_libs, os.environ.get("LD_LIBRARY_PATH")
        ),
        # The stub finds its packages through the first python on PATH: make that this environment's.
        "PATH": _join_paths(os.path.dirname(sys.executable), os.environ.get("PATH")),
    }
    return TritonInstallation(root / "bin" / "tritonserver", _private_backend_dir(sources, version), env, source)


def _join_paths(*parts: str | None) -> str:
    """A search path from the given ones in order, each entry once (the first occurrence decides its rank)."""
    entries = [entry for part in parts if part for entry in part.split(os.pathsep) if entry]
    return os.pathsep.join(dict.fromkeys(entries))


def _private_backend_dir(sources: list[Path], version: str) -> Path:
    """A backend folder with the Python backend and this interpreter's stub, made once; the wheel stays untouched."""
    cache = Path(os.environ.get("TRITONREPO_CACHE") or Path.home() / ".cache" / "tritonrepo")
    # Keyed by the files' paths, sizes and times too: a reinstalled wheel gets a fresh copy, never a stale one.
    key = version + "".join(f"|{s}:{s.stat().st_size}:{s.stat().st_mtime_ns}" for s in sources)
    final = cache / f"backends-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (final / "python").is_dir():
        return final
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".backends-", dir=cache))
        try:
            (staging / "python").mkdir()
            for source in sources:
                shutil.copy2(source, staging / "python" / source.name)
            os.rename(staging, final)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            if not (final / "python").is_dir():  # else a concurrent creator renamed its copy first: use that one
                raise
    except OSError as error:
        raise ServerNotFoundError(
            f"Cannot prepare the Python backend folder in {cache}: {error}.",
            hint="Set TRITONREPO_CACHE to a writable folder.",
        ) from error
    return final


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, like tritonserver, so TIME_WAIT does not count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


_GLOG = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+\s+\S+:\d+\]\s?(.*)$")
# Printed on every machine without a GPU (or without DCGM); never the reason a start failed.
_HARMLESS = re.compile(r"CudaDriverHelper|NVML|DCGM")
_LOG_STATES = (
    (re.compile(r'"loading: ([^:"]+):\d+"'), "LOADING"),
    (re.compile(r"successfully loaded '([^']+)'"), "READY"),
    (re.compile(r"failed to load '([^']+)'"), "UNAVAILABLE"),
)


def error_lines(log_text: str, limit: int = 20) -> list[str]:
    """Triton's own error lines (glog E/F, 'failed to load', 'Error'), de-duplicated, one line each, no timestamps."""
    severe: list[str] = []
    other: list[str] = []
    for raw in log_text.splitlines():
        match = _GLOG.match(raw.strip())
        message = (match.group(2) if match else raw).strip().strip('"')
        message = message.split("\\n\\nAt:")[0]  # the Python stack that follows is in the full log
        message = " ".join(message.replace("\\n", " ").split())  # Triton escapes a traceback's newlines as \n
        if not message or message in severe or message in other or _HARMLESS.search(message):
            continue
        if match and match.group(1) in "EF":
            severe.append(message)
        elif "failed to load" in message or "Error" in message:
            other.append(message)
    # Error-level lines carry the cause; other matches (tracebacks, summaries) fill the rest.
    return (severe + other)[:limit]


@dataclasses.dataclass(frozen=True)
class StubProcess:
    """A Python backend stub: the process that runs one instance of a Python model for tritonserver."""

    pid: int
    start_time: int
    instance: str  # the model instance it runs, e.g. "tensorrt_llm_0_0"

    def alive(self) -> bool:
        return procfs.start_time(self.pid) == self.start_time


_STUB = "triton_python_backend_stub"
_STUB_INSTANCE_ARG = 8  # stub argv: model.py, region, sizes, parent pid, lib dir, IPC handle, instance name, ...


class TritonServer:
    """A tritonserver process: `with TritonServer(...) as server: server.wait_ready()`; always stopped on exit."""

    def __init__(
        self,
        installation: TritonInstallation,
        repository: str,
        *,
        log_path: Path,
        http_port: int = 8000,
        grpc_port: int = 8001,
        metrics_port: int = 8002,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        world_size: int = 1,
        llmapi: bool = False,
        shm_prefix: str | None = None,
    ) -> None:
        self.installation = installation
        self.world_size = world_size  # > 1: one rank per GPU under mpirun, see serving/mpi.py
        self.llmapi = llmapi  # the repository's model is the llmapi model: multi-GPU goes via trtllm-llmapi-launch
        self.repository = str(repository)  # a folder or an s3:// URL, passed through as is
        self.log_path = Path(log_path)
        self.ports = {"--http-port": http_port, "--grpc-port": grpc_port, "--metrics-port": metrics_port}
        self.extra_args = list(extra_args)
        self.host = host
        # The Python backend's /dev/shm regions are named after it: removed after a kill, see serving/shm.py.
        self.shm_prefix = shm_prefix or shm.new_prefix()
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = False
        self._log_start = self._log_scanned = 0  # the log is appended to: read only this run's part of it
        self._states_from_log: dict[str, str] = {}
        # urllib honours HTTP(S)_PROXY; the server is local, so never go through a proxy.
        self._http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.poll() if self._process else None

    @property
    def http_url(self) -> str:
        return f"http://{self._client_host()}:{self.ports['--http-port']}"

    @property
    def grpc_url(self) -> str:
        """host:port, the form tritonclient.grpc expects (no scheme)."""
        return f"{self._client_host()}:{self.ports['--grpc-port']}"

    def python_stubs(self) -> list[StubProcess]:
        """The Python backend stubs tritonserver runs now (its session: it was started in a new one)."""
        if self._process is None:
            return []
        stubs = []
        for info in procfs.processes():
            if info.session != self._process.pid or not info.alive:
                continue
            argv = procfs.command_line(info.pid)
            if argv and os.path.basename(argv[0]) == _STUB:
                instance = argv[_STUB_INSTANCE_ARG] if len(argv) > _STUB_INSTANCE_ARG else argv[-1]
                stubs.append(StubProcess(info.pid, info.start_time, instance))
        return stubs

    def _client_host(self) -> str:
        """Where a local client reaches the server: loopback for a wildcard address, brackets around IPv6."""
        host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"[{host}]" if ":" in host else host

    def command(self) -> list[str]:
        args = [str(self.installation.binary), f"--model-repository={self.repository}"]
        if self.installation.backend_dir is not None:
            args.append(f"--backend-directory={self.installation.backend_dir}")
        args += [f"{flag}={self.host}" for flag in ("--http-address", "--grpc-address", "--metrics-address")]
        args += [f"{flag}={port}" for flag, port in self.ports.items()]
        # Fail fast on a model that does not load, and report ready only when every model is.
        args += ["--log-verbose=0", "--exit-on-error=true", "--strict-readiness=true"]
        args += self.extra_args
        if self.world_size > 1:
            from tritonrepo.serving import mpi

            args += ["--disable-auto-complete-config"]
            if self.llmapi:
                mpirun = mpi.find_mpirun("serving an llmapi model on several GPUs")
                args.append(_shm_prefix_arg(self.shm_prefix))
                return mpi.llmapi_launch_command(mpirun, mpi.find_llmapi_launcher(), args, self.world_size)
            return mpi.leader_mode_command(mpi.find_mpirun(), args, self.world_size, self.shm_prefix)
        return [*args, _shm_prefix_arg(self.shm_prefix)]

    def start(self) -> None:
        if self._process is not None:
            raise RuntimeError("this TritonServer was already started")
        for flag, port in self.ports.items():
            if not port_is_free(self.host, port):
                raise PortInUseError(f"Port {port} on {self.host} is already in use.", hint=f"Choose another: {flag}.")
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_start = self._log_scanned = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                # If serve dies: mpirun passes SIGTERM on to its ranks; a plain tritonserver is killed outright, so
                # its ports are free at once (its stubs follow it, and the next serve removes its /dev/shm regions).
                signum = signal.SIGTERM if self.world_size > 1 else signal.SIGKILL
                self._process = subprocess.Popen(
                    die_with_parent(self.command(), signum),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **self.installation.env},
                    # Our repositories need no particular working directory (gpt_model_path is absolute), but a
                    # repository made elsewhere may give relative paths that its authors resolved from its root.
                    cwd=self.repository if os.path.isdir(self.repository) else None,
                    start_new_session=True,  # its own process group: stop() reaches the stubs it forks as well
                )
        except OSError as error:
            raise ServerStartError(f"Cannot start {self.installation.binary}: {error}.") from error
        progress.say(f"tritonserver started (pid {self._process.pid}), log: {self.log_path}")

    def wait_ready(self, timeout: float = 300, on_progress: Callable[[dict[str, str]], None] | None = None) -> None:
        """Return once the server is ready and every model in its index is READY; raise ServerStartError otherwise."""
        if self._process is None:
            raise RuntimeError("start() the TritonServer before waiting for it")
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while True:
            if self._process.poll() is not None:
                self._fail(f"tritonserver exited with code {self._process.returncode} before it was ready.")
            index = self._repository_index()
            # Until HTTP is up (all models loaded, in the default control mode) the log is the only progress report.
            current = {e["name"]: e.get("state", "") for e in index} if index is not None else self._log_states()
            if current != states and on_progress is not None:
                on_progress(dict(current))
            states = current
            if index is not None and self._all_ready_or_raise(index):
                return
            if time.monotonic() > deadline:
                self._fail(f"tritonserver was not ready after {timeout:.0f}s (model states: {states or 'unknown'}).")
            time.sleep(0.25)

    def _all_ready_or_raise(self, index: list[dict]) -> bool:
        """Whether every model in the index and the server are ready; a model that failed to load ends the wait."""
        broken = [entry for entry in index if entry.get("state") == "UNAVAILABLE"]
        if broken:
            reasons = [f"{e['name']}: {e.get('reason') or 'UNAVAILABLE'}" for e in broken]
            self._fail(f"Model(s) failed to load: {', '.join(e['name'] for e in broken)}.", reasons)
        ready = all(entry.get("state") == "READY" for entry in index)
        if not ready or self._request("GET", "/v2/health/ready") is None:
            return False
        if not index:  # ready with nothing loaded (HTTP answers only once loading is done): nothing to serve
            self._fail(f"tritonserver loaded no model from {self.repository}.")
        return True

    def _log_states(self) -> dict[str, str]:
        """Model states from the log lines written since the last call (whole lines), added to those seen before."""
        chunk = _read_from(self.log_path, self._log_scanned)
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._log_scanned += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            for pattern, state in _LOG_STATES:
                for name in pattern.findall(line):
                    self._states_from_log[name] = state
        return dict(self._states_from_log)

    def _repository_index(self) -> list[dict] | None:
        body = self._request("POST", "/v2/repository/index", b"{}")
        return json.loads(body) if body else None

    def _request(self, method: str, path: str, data: bytes | None = None) -> bytes | None:
        """The response body, or None while the server does not answer 200 (still starting, not ready)."""
        request = urllib.request.Request(self.http_url + path, data=data, method=method)
        try:
            with self._http.open(request, timeout=5) as response:
                return response.read() if response.status == 200 else None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def _fail(self, message: str, reasons: Sequence[str] = ()) -> None:
        self.stop()  # first, so the log is complete and nothing is left running
        log_text = _read_from(self.log_path, self._log_start).decode("utf-8", errors="replace")
        lines = list(dict.fromkeys([*reasons, *error_lines(log_text)]))[:20]
        raise ServerStartError(message, log_lines=lines, hint=f"Full log: {self.log_path}")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the whole process group, SIGKILL what is left after `timeout` seconds; safe to call again."""
        if self._process is None or self._stopped:
            return
        group = self._process.pid  # start_new_session: the group id is the leader's pid
        _signal_group(group, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=timeout)
        # Stubs may outlive the server for a moment: give them the rest of the grace period before SIGKILL.
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(group):
            _signal_group(group, signal.SIGKILL)
        self._process.wait()
        self._stopped = True
        # A graceful exit removed them already; after a SIGKILL they are left, and nothing of the server uses them.
        shm.remove_regions(self.shm_prefix)

    def __enter__(self) -> TritonServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _shm_prefix_arg(prefix: str) -> str:
    return f"--backend-config=python,shm-region-prefix-name={prefix}"


def die_with_parent(command: list[str], signum: int) -> list[str]:
    """`command`, started so that it gets `signum` when this process dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG): a killed `tritonrepo serve` leaves no tritonserver holding its ports.

    A small Python program arms the signal and then becomes `command` (exec keeps it). That is safer than a Popen
    preexec_fn, which runs Python between fork and exec while other threads (the front end's) may hold locks.
    The signal fires when the *thread* that started the child exits, so it is armed only from the main thread, which
    lives as long as the process; elsewhere, and off Linux, `command` is returned as it is."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return command
    return [sys.executable, "-I", "-S", "-c", _ARM_AND_EXEC, str(os.getpid()), str(int(signum)), *command]


_ARM_AND_EXEC = """\
import ctypes, os, sys
parent, signum = int(sys.argv[1]), int(sys.argv[2])
ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != parent:  # the parent died before the signal was armed
    os.kill(os.getpid(), signum)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as file:
            file.seek(offset)
            return file.read()
    except OSError:
        return b""


def _signal_group(group: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the group is already empty
        os.killpg(group, signum)


def _group_alive(group: int) -> bool:
    """Whether a live process remains in the group. Zombies do not count: stubs reparented to a PID 1 that never
    reaps (a container whose entry point is this program) would otherwise look alive forever."""
    return any(info.group == group and info.alive for info in procfs.processes())


def check_stub_environment(installation: TritonInstallation) -> None:
    """The nvidia-pytriton 0.7 stub (tritonserver 2.51) is built for numpy 1.x: under numpy 2 every request with a
    string tensor kills it ("Stub process is not healthy"), and int tensors reach clients empty (both seen on a GPU
    machine). Refuse that before starting. The numpy that counts is the stub's: it imports from the site-packages of
    the first python3 on its PATH and ignores PYTHONPATH, so this asks that interpreter, not this process."""
    if installation.source != "pytriton" and installation.backend_dir is None:
        return  # the NGC container's own server and stub match its own Python environment
    search = installation.env.get("PATH", os.environ.get("PATH"))
    python = shutil.which("python3", path=search) or shutil.which("python", path=search)
    if python is None:
        raise ServerStartError(
            "The Python backend stub finds its packages through python3 on PATH, and there is none",
            hint=f"Put the environment's bin folder ({os.path.dirname(sys.executable)}) on PATH.",
        )
    probe = "import numpy, sys; sys.stdout.write(numpy.__version__ + ' ' + numpy.__file__)"
    try:
        # -I: the stub's own view (site-packages and their .pth files, no PYTHONPATH, no user site)
        found = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ServerStartError(
            f"Could not ask {python} which numpy the Python backend stub will import: {error}"
        ) from None
    if found.returncode != 0:
        raise ServerStartError(
            f"The Python backend stub imports numpy from {python}'s site-packages, and it has none there",
            hint="Install numpy<2 into that environment (PYTHONPATH does not reach the stub).",
        )
    numpy_version, numpy_file = found.stdout.split(" ", 1)
    if int(numpy_version.split(".")[0]) >= 2:
        raise ServerStartError(
            f"The Python backend stub would import numpy {numpy_version} ({numpy_file}), and the bundled "
            "tritonserver 2.51 (nvidia-pytriton) only works with numpy 1.x: every text request would crash its models",
            hint=f'Install numpy<2 into the environment of {python} (pip install "numpy<2"; a virtualenv keeps it '
            "apart; PYTHONPATH does not reach the stub), or run inside the NGC tritonserver container.",
        )
