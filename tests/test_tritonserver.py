"""Tests for tritonrepo.serving.tritonserver: discovery of the binary and the process, against a real tritonserver."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tritonrepo.errors import PortInUseError, ServerNotFoundError, ServerStartError
from tritonrepo.serving import shm, tritonserver
from tritonrepo.serving.tritonserver import TritonServer, error_lines, find_tritonserver, port_is_free

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"

CONFIG = """\
backend: "python"
max_batch_size: 0
model_transaction_policy { decoupled: true }
input [ { name: "text_input" data_type: TYPE_STRING dims: [ 1 ] } ]
output [ { name: "text_output" data_type: TYPE_STRING dims: [ 1 ] } ]
instance_group [ { kind: KIND_CPU count: 1 } ]
"""

ECHO_MODEL = """\
import subprocess

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        # A helper process of the model (as tokenizer or engine workers are): it must not outlive the server.
        # "; true" keeps the shell alive, so its command line (naming the model folder) stays visible in /proc.
        self.helper = subprocess.Popen(["/bin/sh", "-c", "sleep 300; true", "helper", args["model_repository"]])

    def execute(self, requests):
        for request in requests:
            text = pb_utils.get_input_tensor_by_name(request, "text_input").as_numpy()
            sender = request.get_response_sender()
            output = pb_utils.Tensor("text_output", np.array(text, dtype=np.object_))
            sender.send(pb_utils.InferenceResponse(output_tensors=[output]))
            sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None
"""

BROKEN_MODEL = """\
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("tokenizer exploded: zebra-42")
"""

SLOW_MODEL = """\
import time


class TritonPythonModel:
    def initialize(self, args):
        time.sleep(30)

    def execute(self, requests):
        return None
"""


# --- helpers -------------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_repository(root: Path, name: str, model_py: str) -> Path:
    (root / name / "1").mkdir(parents=True)
    (root / name / "config.pbtxt").write_text(CONFIG)
    (root / name / "1" / "model.py").write_text(model_py)
    return root


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes (not this one) that contain `text`: tritonserver and its stubs name the repo."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if text in argv and state != "Z" and int(cmdline.parent.name) != os.getpid():
            found.append(argv)
    return found


def make_server(installation, repository: Path, tmp_path: Path, **ports: int) -> TritonServer:
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port(), **ports}
    return TritonServer(installation, str(repository), log_path=tmp_path / "tritonserver.log", **ports)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def clean_env(monkeypatch, cache_dir):
    """No server named by the environment; backend folders go to a cache private to these tests."""
    monkeypatch.delenv(tritonserver.ENV_VAR, raising=False)
    monkeypatch.setenv("TRITONREPO_CACHE", str(cache_dir))
    monkeypatch.setattr(tritonserver, "NGC_BINARY", Path("/nonexistent/tritonserver"))


@pytest.fixture
def installation(clean_env):
    return find_tritonserver()


# --- discovery -----------------------------------------------------------------------------------------------------
def test_finds_the_pytriton_server_with_its_env_and_a_private_stub(installation, cache_dir):
    assert installation.source == "pytriton"
    assert installation.binary.name == "tritonserver" and os.access(installation.binary, os.X_OK)
    python_backend = installation.backend_dir / "python"
    assert installation.backend_dir.parent == cache_dir
    assert os.access(python_backend / "triton_python_backend_stub", os.X_OK)
    assert (python_backend / "libtriton_python.so").is_file()
    assert (python_backend / "triton_python_backend_utils.py").is_file()
    wheel_stub = (
        installation.binary.parent.parent / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub"
    )
    assert (python_backend / "triton_python_backend_stub").read_bytes() == wheel_stub.read_bytes()
    # The wheel itself is left as installed: no stub was copied into its own backend folder.
    assert not (installation.binary.parent.parent / "backends" / "python" / "triton_python_backend_stub").exists()
    ld_path = installation.env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert ld_path[0] == sysconfig.get_config_var("LIBDIR")
    assert ld_path[1].endswith("nvidia_pytriton.libs") and Path(ld_path[1]).is_dir()
    assert installation.env["PATH"].split(os.pathsep)[0] == os.path.dirname(sys.executable)


def test_backend_folder_is_made_once_even_by_concurrent_callers(clean_env, monkeypatch, tmp_path):
    monkeypatch.setenv("TRITONREPO_CACHE", str(tmp_path / "fresh-cache"))
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(find_tritonserver())) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({found.backend_dir for found in results}) == 1 and len(results) == 4
    assert [p.name for p in (tmp_path / "fresh-cache").iterdir()] == [results[0].backend_dir.name]  # no staging left


def test_explicit_path_that_does_not_exist_names_the_path(clean_env, tmp_path):
    missing = tmp_path / "no" / "tritonserver"
    with pytest.raises(ServerNotFoundError) as caught:
        find_tritonserver(str(missing))
    assert str(missing) in str(caught.value) and "--tritonserver" in str(caught.value)
    assert 'pip install "tritonrepo[server]"' in str(caught.value)


def test_explicit_path_that_is_not_executable_is_refused(clean_env, tmp_path):
    plain = tmp_path / "tritonserver"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(ServerNotFoundError, match="not executable"):
        find_tritonserver(str(plain))


def test_env_var_is_used_and_the_explicit_argument_wins(clean_env, monkeypatch, tmp_path, installation):
    custom = tmp_path / "my-tritonserver"
    custom.write_text("#!/bin/sh\n")
    custom.chmod(custom.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv(tritonserver.ENV_VAR, str(custom))
    from_env = find_tritonserver()
    assert (from_env.source, from_env.binary, from_env.backend_dir) == ("env", custom, None)
    # The wheel's binary given explicitly still gets the wheel's private stub folder and env.
    explicit = find_tritonserver(str(installation.binary))
    assert (explicit.source, explicit.backend_dir) == ("explicit", installation.backend_dir)


def test_no_server_anywhere_says_what_to_install(clean_env, monkeypatch):
    monkeypatch.setattr(sys, "path", [])  # pytriton can no longer be found
    with pytest.raises(ServerNotFoundError) as caught:
        find_tritonserver()
    message = str(caught.value)
    assert "tritonrepo[server]" in message and "trtllm-python-py3" in message and tritonserver.ENV_VAR in message


def test_wheel_without_a_stub_for_this_python_says_so(clean_env, monkeypatch, tmp_path):
    fake = tmp_path / "site" / "pytriton"
    (fake / "tritonserver" / "bin").mkdir(parents=True)
    (fake / "tritonserver" / "bin" / "tritonserver").write_text("")
    (fake / "tritonserver" / "python_backend_stubs" / "3.8").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(ServerNotFoundError) as caught:
        find_tritonserver()
    assert f"no Python backend stub for Python {PYTHON_VERSION} (it has 3.8)" in str(caught.value)


# --- log reading and ports -----------------------------------------------------------------------------------------
def test_error_lines_keep_triton_errors_once_without_timestamps_or_gpu_noise():
    log = "\n".join(
        [
            'I1122 19:34:02.626251 4025 model_lifecycle.cc:472] "loading: bad:1"',
            'E1122 19:34:02.624961 4025 server.cc:241] "CudaDriverHelper has not been initialized."',
            "E1122 19:34:04.257784 4025 m.cc:1] \"failed to load 'bad' version 1: boom\\n\\nAt:\\n  m.py(3)\"",
            "E1122 19:34:05.257784 4025 m.cc:1] \"failed to load 'bad' version 1: boom\\n\\nAt:\\n  m.py(3)\"",
            "Error: Failed to initialize NVML",
            "error: creating server: Internal - failed to load all models",
        ]
    )
    assert error_lines(log) == [
        "failed to load 'bad' version 1: boom",  # the Python stack stays in the full log
        "error: creating server: Internal - failed to load all models",
    ]


def test_port_in_use_is_reported_with_the_flag_to_change(installation, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
        server = make_server(installation, tmp_path, tmp_path, grpc_port=port)
        with pytest.raises(PortInUseError) as caught:
            server.start()
    assert str(port) in str(caught.value) and "--grpc-port" in str(caught.value)
    assert server.pid is None  # nothing was started
    assert port_is_free("127.0.0.1", port)


# --- children die with their parent --------------------------------------------------------------------------------
PARENT = """\
import signal, subprocess, sys, time
from tritonrepo.serving.tritonserver import die_with_parent
armed = subprocess.Popen(die_with_parent(["sleep", "300"], signal.SIGKILL))
plain = subprocess.Popen(["sleep", "300"])
print(armed.pid, plain.pid, flush=True)
time.sleep(300)
"""


def test_a_child_started_with_die_with_parent_goes_when_its_parent_is_killed():
    from tritonrepo.serving import procfs

    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    armed, plain = map(int, parent.stdout.readline().split())
    try:
        deadline = time.monotonic() + 10
        while procfs.command_line(armed) != ["sleep", "300"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert procfs.command_line(armed) == ["sleep", "300"]  # it became the command: same pid, no wrapper left
        parent.kill()
        parent.wait()
        while procfs.start_time(armed) is not None and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        assert procfs.start_time(armed) is None
        assert procfs.start_time(plain) is not None  # without the signal a child outlives its parent
    finally:
        for pid in (armed, plain):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_die_with_parent_is_armed_only_from_the_main_thread():
    from tritonrepo.serving.tritonserver import die_with_parent

    # A thread that ends would fire the signal at once: started from one, the command runs as it is.
    found: list = []
    thread = threading.Thread(target=lambda: found.append(die_with_parent(["true"], signal.SIGKILL)))
    thread.start()
    thread.join()
    assert found == [["true"]]
    assert die_with_parent(["true"], signal.SIGKILL)[-1:] == ["true"] and len(die_with_parent(["true"], 9)) > 1


# --- the real server -----------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_echo_model_becomes_ready_answers_and_leaves_nothing_behind(installation, tmp_path):
    repository = make_repository(tmp_path / "echo-repo", "echo", ECHO_MODEL)
    seen: list[dict[str, str]] = []
    started = time.monotonic()
    with make_server(installation, repository, tmp_path) as server:
        server.wait_ready(timeout=60, on_progress=seen.append)
        print(f"echo model ready in {time.monotonic() - started:.1f}s")
        assert seen[-1] == {"echo": "READY"}
        request = urllib.request.Request(
            f"{server.http_url}/v2/models/echo/generate_stream",
            data=json.dumps({"text_input": "hello triton"}).encode(),
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            events = [
                json.loads(line[5:]) for line in response.read().decode().splitlines() if line.startswith("data:")
            ]
        assert [event["text_output"] for event in events] == ["hello triton"]
        running = processes_mentioning(str(repository))
        assert any("triton_python_backend_stub" in argv for argv in running)  # so the check below can fail
        assert any(argv.startswith("/bin/sh -c sleep 300") for argv in running)
        assert any("--http-address=127.0.0.1" in argv for argv in running)
        assert [stub.instance for stub in server.python_stubs()] == ["echo_0_0"]
        assert shm.regions(server.shm_prefix)  # the stub's region, under this server's own prefix
    assert processes_mentioning(str(repository)) == []
    assert server.returncode == 0  # a graceful shutdown
    assert not shm.regions(server.shm_prefix)
    server.stop()  # idempotent


@pytest.mark.e2e
def test_broken_model_raises_with_its_error_and_stops_the_server(installation, tmp_path):
    repository = make_repository(tmp_path / "broken-repo", "broken", BROKEN_MODEL)
    server = make_server(installation, repository, tmp_path)
    with server, pytest.raises(ServerStartError) as caught:
        server.wait_ready(timeout=60)
    assert "tokenizer exploded: zebra-42" in str(caught.value)
    assert any("zebra-42" in line for line in caught.value.log_lines)
    assert server.returncode is not None
    assert processes_mentioning(str(repository)) == []


@pytest.mark.e2e
def test_timeout_reports_loading_from_the_log_and_kills_a_loading_server(installation, tmp_path):
    repository = make_repository(tmp_path / "slow-repo", "slow", SLOW_MODEL)
    seen: list[dict[str, str]] = []
    started = time.monotonic()
    with make_server(installation, repository, tmp_path) as server, pytest.raises(ServerStartError, match="not ready"):
        server.wait_ready(timeout=2, on_progress=seen.append)
    assert {"slow": "LOADING"} in seen
    assert time.monotonic() - started < 15  # not the 30 s the model would take
    assert processes_mentioning(str(repository)) == []


def _fake_numpy(folder: Path, version: str) -> None:
    (folder / "numpy").mkdir(parents=True)
    (folder / "numpy" / "__init__.py").write_text(f"__version__ = {version!r}\n")


def test_numpy_2_is_refused_for_the_bundled_stub_with_what_to_do(tmp_path, monkeypatch):
    """The numpy that counts is the one the stub imports: that of python3 on its PATH, which ignores PYTHONPATH (on the
    GPU machine a numpy 1.26 on PYTHONPATH hid the environment's numpy 2 from this process, not from the stub)."""
    from tritonrepo.serving.tritonserver import check_stub_environment

    installation = find_tritonserver()
    assert installation.source == "pytriton"
    check_stub_environment(installation)  # this environment has numpy 1.x: fine

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    stub_python_env = dataclasses.replace(installation, env={**installation.env, "PATH": str(venv / "bin")})
    with pytest.raises(ServerStartError, match=r"has none there"):
        check_stub_environment(stub_python_env)

    site_packages = next(venv.glob("lib/python*/site-packages"))
    _fake_numpy(site_packages, "2.5.2")
    _fake_numpy(tmp_path / "on-pythonpath", "1.26.4")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "on-pythonpath"))
    with pytest.raises(
        ServerStartError, match=r"numpy 2.5.2 \(.*site-packages.*\).* only works with numpy 1.x"
    ) as error:
        check_stub_environment(stub_python_env)
    assert "PYTHONPATH does not reach the stub" in str(error.value)


def test_multi_gpu_engines_launch_one_rank_per_gpu_under_mpirun(tmp_path, monkeypatch):
    from tritonrepo.serving import mpi

    monkeypatch.setattr(mpi.shutil, "which", lambda name: "/usr/bin/mpirun" if name == "mpirun" else None)
    server = TritonServer(find_tritonserver(), str(tmp_path), log_path=tmp_path / "log", world_size=4)
    command = server.command()
    assert command[:2] == ["/usr/bin/mpirun", "--allow-run-as-root"]
    blocks = " ".join(command[2:]).split(" : ")
    assert len(blocks) == 4
    for rank, block in enumerate(blocks):
        # Each rank's Python backend regions under a prefix of its own, naming this process (see serving/shm.py).
        assert block.startswith("-n 1 ") and f"shm-region-prefix-name={server.shm_prefix}{rank}_" in block
        assert "--http-port=8000" in block and "--disable-auto-complete-config" in block
        assert ("--load-model=tensorrt_llm" in block) == (rank > 0)  # only the leader loads the whole pipeline


def test_multi_gpu_launch_without_mpirun_says_what_to_install(tmp_path, monkeypatch):
    from tritonrepo.serving import mpi

    monkeypatch.setattr(mpi.shutil, "which", lambda name: None)
    server = TritonServer(find_tritonserver(), str(tmp_path), log_path=tmp_path / "log", world_size=2)
    with pytest.raises(ServerNotFoundError, match="needs mpirun.*Install OpenMPI"):
        server.command()
