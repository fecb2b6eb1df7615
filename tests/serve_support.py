"""`tritonrepo serve` as a child process for end-to-end tests: start, wait until healthy, find leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import free_port


def live_processes(mentioning: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes, not this one, whose command line contains `mentioning`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if mentioning in command and state != "Z":
                found.append((int(entry.name), command))
    return found


def processes_using(path: Path) -> list[str]:
    """Command lines of live processes that mention `path` (tritonserver and its Python stubs all do)."""
    return [command for _pid, command in live_processes(str(path))]


class Deployment:
    def __init__(
        self, repository: Path, log: Path, *extra_args: str, env: dict | None = None, ports: tuple[int, ...] = ()
    ):
        self.repository = repository
        self.http, self.grpc, self.metrics, self.openai = ports or tuple(free_port() for _ in range(4))
        self.log = log
        command = [
            sys.executable, "-m", "tritonrepo.cli.main", "serve", str(repository),
            "--http-port", str(self.http), "--grpc-port", str(self.grpc),
            "--metrics-port", str(self.metrics), "--openai-port", str(self.openai), *extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.started = time.monotonic()

    @property
    def ports(self) -> tuple[int, int, int, int]:
        return self.http, self.grpc, self.metrics, self.openai

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.openai}/v1"

    def stop_cleanly(self) -> None:
        """SIGTERM, as Ctrl-C or an orchestrator stops serve: it must exit 0 and leave no process behind."""
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0, self.log.read_text()[-3000:]
        assert not processes_using(self.repository), "processes left behind"

    def wait_healthy(self, timeout: float = 300) -> float:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.openai}/health", timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"serve not healthy after {timeout}s:\n{self.log.read_text()[-3000:]}")


def grpc_stream(grpc_port: int, model: str, inputs: dict, *, request_id: str = "") -> tuple[list, str | None]:
    """Every response of one decoupled request over gRPC streaming, until the final flag: (results, error text)."""
    import queue

    import tritonclient.grpc as grpc_client
    from tritonclient.utils import np_to_triton_dtype

    results: queue.Queue = queue.Queue()
    client = grpc_client.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    tensors = []
    for name, value in inputs.items():
        tensor = grpc_client.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    responses: list = []
    try:
        client.async_stream_infer(model, tensors, request_id=request_id, enable_empty_final_response=True)
        while True:
            result, error = results.get(timeout=60)
            if error is not None:
                return responses, str(error)
            responses.append(result)
            final = result.get_response().parameters.get("triton_final_response")
            if final is not None and final.bool_param:
                return responses, None
    finally:
        client.stop_stream()
        client.close()
