"""End to end: `tritonrepo serve` under faults, with the real tritonserver and the tiny model. A Python backend stub
killed mid-stream, `serve` itself killed with SIGKILL, and storms of clients leaving BLS streams."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from serve_support import Deployment, processes_using

from tritonrepo.serving.procfs import start_time as process_start_time
from tritonrepo.serving.shm import SHM_ROOT, pid_namespace
from tritonrepo.serving.tritonserver import port_is_free

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest

    return build(DeploymentRequest(model="tiny-llama", output=tmp_path_factory.mktemp("faults") / "tiny-llama")).path


def _regions_of(pid: int) -> list[str]:
    """The /dev/shm regions the Python backend made for tritonservers started by process `pid`."""
    return sorted(path.name for path in SHM_ROOT.glob(f"tritonrepo_{pid_namespace()}_{pid}_*"))


def _wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.2)


def _dead_process_prefix() -> str:
    """A region prefix naming a process that has exited (its pid and start time, read while it ran)."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    started = process_start_time(child.pid)
    child.kill()
    child.wait()
    return f"tritonrepo_{pid_namespace()}_{child.pid}_{started}_1_"


# --- item 4: nothing outlives a killed serve -----------------------------------------------------------------------
def test_a_killed_serve_takes_tritonserver_with_it_and_the_next_serve_removes_its_regions(repository, tmp_path):
    first = Deployment(repository, tmp_path / "first.log")
    first.wait_healthy()
    running = processes_using(repository)
    assert sum("triton_python_backend_stub" in argv for argv in running) >= 4 and any(
        "bin/tritonserver" in argv for argv in running
    )  # so the checks below can fail
    assert len(_regions_of(first.process.pid)) >= 4  # one per stub, under this serve's own prefix

    first.process.kill()
    first.process.wait()
    _wait_until(lambda: not processes_using(repository), "tritonserver and its stubs gone after serve was killed")
    assert all(port_is_free("127.0.0.1", port) for port in first.ports)
    left_by_first = _regions_of(first.process.pid)
    assert left_by_first  # a killed tritonserver cannot remove its regions (stubs remove some as they go)

    stale = SHM_ROOT / f"{_dead_process_prefix()}planted"
    stale.write_bytes(b"left by a serve that was killed")
    live = SHM_ROOT / f"tritonrepo_{pid_namespace()}_{os.getpid()}_{process_start_time(os.getpid())}_99_planted"
    live.write_bytes(b"a running process's region: never touched")
    try:
        second = Deployment(repository, tmp_path / "second.log", ports=first.ports)
        second.wait_healthy()
        assert not stale.exists() and not _regions_of(first.process.pid)
        assert live.exists()
        removed = re.search(r"removed (\d+) shared-memory region", second.log.read_text())
        assert removed and int(removed.group(1)) >= len(left_by_first) + 1
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=60) == 0
        assert not _regions_of(second.process.pid)
    finally:
        live.unlink(missing_ok=True)
        stale.unlink(missing_ok=True)
        if "second" in locals() and second.process.poll() is None:
            second.process.kill()
    assert not processes_using(repository)


# --- item 2: a dead stub is reported, fails what is in flight, and tritonserver is restarted ------------------------
def _stub_of(repository: Path, instance: str) -> int:
    """The pid of the Python backend stub running `instance` of a model in `repository`."""
    from tritonrepo.serving import procfs

    for info in procfs.processes():
        argv = procfs.command_line(info.pid)
        if argv and argv[0].endswith("triton_python_backend_stub") and str(repository) in argv[1]:
            if len(argv) > 8 and argv[8] == instance and info.alive:
                return info.pid
    raise AssertionError(f"no stub runs {instance}")


def _sse_data(line: str) -> str | None:
    return line[len("data: ") :] if line.startswith("data: ") else None


def test_a_killed_stub_fails_the_open_stream_reports_unhealthy_and_serve_restarts_tritonserver(repository, tmp_path):
    import json

    import httpx

    deployment = Deployment(repository, tmp_path / "serve.log")
    try:
        deployment.wait_healthy()
        health_url = f"http://127.0.0.1:{deployment.openai}/health"
        stub = _stub_of(repository, "tensorrt_llm_0_0")
        body = {"model": "tiny-llama", "prompt": "hi", "max_tokens": 1500, "stream": True}
        events: list[str] = []
        # A read timeout far longer than any restart: a stream left hanging fails the test instead of passing.
        with httpx.stream("POST", f"{deployment.base_url}/completions", json=body, timeout=120) as response:
            for line in response.iter_lines():
                data = _sse_data(line)
                if data is None:
                    continue
                events.append(data)
                if len(events) == 3:
                    os.kill(stub, signal.SIGKILL)
        # Some text, then an error event naming the dead stub, then [DONE]: an error, not a hang.
        assert events[-1] == "[DONE]" and len(events) >= 4
        error = json.loads(events[-2])["error"]
        assert "tensorrt_llm_0_0" in error["message"] and "restarting" in error["message"]
        assert all("error" not in json.loads(event) for event in events[:-2])

        health = httpx.get(health_url, timeout=10)
        assert health.status_code == 503 and "tensorrt_llm_0_0" in health.json()["reason"]
        refused = httpx.post(f"{deployment.base_url}/completions", json={**body, "stream": False}, timeout=60)
        assert refused.status_code == 503 and "tensorrt_llm_0_0" in refused.json()["error"]["message"]

        _wait_until(lambda: httpx.get(health_url, timeout=10).status_code == 200, "healthy again", timeout=300)
        answer = httpx.post(
            f"{deployment.base_url}/completions", json={**body, "max_tokens": 8, "stream": False}, timeout=60
        )
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 8
        assert _stub_of(repository, "tensorrt_llm_0_0") != stub
        output = deployment.log.read_text()
        assert "tensorrt_llm_0_0" in output and "Restarting tritonserver" in output
        assert "every model is ready again" in output

        deployment.process.send_signal(signal.SIGTERM)
        assert deployment.process.wait(timeout=60) == 0
    finally:
        if deployment.process.poll() is None:
            deployment.process.kill()
    assert not processes_using(repository) and not _regions_of(deployment.process.pid)


def test_a_killed_tritonserver_ends_serve_with_exit_5_and_the_reason(repository, tmp_path):
    from tritonrepo.serving import procfs
    from tritonrepo.serving.tritonserver import find_tritonserver

    deployment = Deployment(repository, tmp_path / "serve.log")
    try:
        deployment.wait_healthy()
        binary = str(find_tritonserver().binary)
        (server,) = [
            info.pid
            for info in procfs.processes()
            if (argv := procfs.command_line(info.pid))[:1] == [binary] and f"--model-repository={repository}" in argv
        ]
        os.kill(server, signal.SIGKILL)
        assert deployment.process.wait(timeout=120) == 5
    finally:
        if deployment.process.poll() is None:
            deployment.process.kill()
    assert deployment.log.read_text().strip().splitlines()[-1].startswith("Error: tritonserver exited with code -9")
    assert not processes_using(repository) and not _regions_of(deployment.process.pid)


def _triton_ready(http_port: int) -> bool:
    import httpx

    try:
        return httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_without_the_front_end_serve_restarts_then_gives_up_with_exit_5_and_the_reason(repository, tmp_path):
    deployment = Deployment(repository, tmp_path / "serve.log", "--openai-port", "0", "--max-restarts", "1")
    try:
        _wait_until(lambda: "Press Ctrl-C to stop." in deployment.log.read_text(), "serve ready", timeout=300)
        first = _stub_of(repository, "preprocessing_0_0")
        os.kill(first, signal.SIGKILL)
        _wait_until(lambda: "every model is ready again" in deployment.log.read_text(), "restarted", timeout=300)
        assert _triton_ready(deployment.http)
        second = _stub_of(repository, "preprocessing_0_0")
        os.kill(second, signal.SIGKILL)
        assert deployment.process.wait(timeout=120) == 5
    finally:
        if deployment.process.poll() is None:
            deployment.process.kill()
    output = deployment.log.read_text()
    assert f"preprocessing_0_0 (pid {first}) died" in output and "Restarting tritonserver" in output
    last = output.strip().splitlines()[-1]
    assert last.startswith("Error:") and f"(pid {second}) died" in last and "restarted 1 time(s)" in last
    assert not processes_using(repository) and not _regions_of(deployment.process.pid)


# --- item 5: every client that leaves a BLS stream is cancelled, and the BLS model unloads at once -------------------
def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def _bls_request(index: int):
    import struct

    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name="tensorrt_llm_bls", id=f"storm-{index}")
    prompt = f"storm {index}".encode()
    for name, datatype, data in (
        ("text_input", "BYTES", struct.pack("<I", len(prompt)) + prompt),
        ("max_tokens", "INT32", struct.pack("<i", 200)),
        ("stream", "BOOL", struct.pack("<?", True)),
    ):
        request.inputs.add(name=name, datatype=datatype, shape=[1, 1])
        request.raw_input_contents.append(data)
    return request


async def _disconnect_storm(grpc_port: int, openai_url: str, after_first: int, at_once: int, openai: int) -> None:
    """Streams that all start together and leave: `after_first` over gRPC once their first response is in,
    `at_once` over gRPC right after sending, `openai` through the front end after their first event."""
    import asyncio

    import grpc
    import httpx
    from tritonclient.grpc import service_pb2_grpc

    async def grpc_client(stub, index: int, wait_for_first: bool) -> None:
        call = stub.ModelStreamInfer()
        await call.write(_bls_request(index))
        await call.done_writing()
        if wait_for_first:
            await asyncio.wait_for(call.read(), timeout=300)
        call.cancel()

    async def openai_client(client, index: int) -> None:
        body = {"model": "tensorrt_llm_bls", "prompt": f"storm {index}", "max_tokens": 200, "stream": True}
        async with client.stream("POST", f"{openai_url}/completions", json=body) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    return  # leaving the block closes the connection mid-stream

    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        limits = httpx.Limits(max_connections=openai, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=300, limits=limits) as client:
            await asyncio.gather(
                *(grpc_client(stub, i, wait_for_first=True) for i in range(after_first)),
                *(grpc_client(stub, after_first + i, wait_for_first=False) for i in range(at_once)),
                *(openai_client(client, i) for i in range(openai)),
            )


def test_a_storm_of_clients_leaving_bls_streams_is_all_cancelled_and_sigterm_then_unloads_cleanly(repository, tmp_path):
    import asyncio

    import httpx

    deployment = Deployment(repository, tmp_path / "serve.log")
    try:
        deployment.wait_healthy()
        metrics_url = f"http://127.0.0.1:{deployment.metrics}/metrics"

        def counts() -> dict[str, float]:
            text = httpx.get(metrics_url, timeout=10).text
            found = {
                f"{model}_{outcome}": _metric(text, f"tritonrepo_{model}_requests_total", f'{{outcome="{outcome}"}}')
                for model in ("runtime", "bls")
                for outcome in ("completed", "cancelled", "error")
            }
            found["bls_executed"] = _metric(text, "nv_inference_count", '{model="tensorrt_llm_bls",version="1"}')
            return found

        before = counts()
        # 56 waiting together is more than the Python backend's 32 threads for a model's BLS calls, and more than
        # the runtime's 8 sequences: the case that starved stop requests until the engine drained.
        after_first, at_once, openai = 40, 16, 16
        asyncio.run(_disconnect_storm(deployment.grpc, deployment.base_url, after_first, at_once, openai))

        def settled() -> bool:
            now = counts()
            ended = sum(now[f"bls_{o}"] - before[f"bls_{o}"] for o in ("completed", "cancelled", "error"))
            # Each BLS request counts itself only once its generation has ended in the runtime.
            return ended >= after_first + openai and ended == now["bls_executed"] - before["bls_executed"]

        deadline = time.monotonic() + 300  # then the outcomes below say what went wrong
        while not settled() and time.monotonic() < deadline:
            time.sleep(0.5)
        delta = {key: value - before[key] for key, value in counts().items()}
        assert delta["runtime_completed"] == 0 and delta["bls_completed"] == 0, delta  # nobody generated to the end
        assert delta["runtime_error"] == 0 and delta["bls_error"] == 0, delta
        assert delta["runtime_cancelled"] >= after_first + openai  # each of those had generated a token
        assert delta["bls_cancelled"] == delta["bls_executed"] >= after_first + openai

        deployment.process.send_signal(signal.SIGTERM)
        assert deployment.process.wait(timeout=120) == 0
    finally:
        if deployment.process.poll() is None:
            deployment.process.kill()
    triton_log = repository.with_name(repository.name + ".tritonserver.log").read_text()
    shutdown = triton_log[triton_log.rindex("Signal (15) received") :]
    assert "successfully unloaded 'tensorrt_llm_bls'" in shutdown  # not killed after a timeout
    assert "still in flight at unload" not in shutdown
    assert not processes_using(repository) and not _regions_of(deployment.process.pid)
