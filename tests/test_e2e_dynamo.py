"""`tritonrepo serve` on Dynamo deployments, for real: Dynamo 1.6.1's frontend, two portable-runtime workers behind the
KV router, Dynamo's mocker standing in for TensorRT-LLM prefill/decode workers, and the refusals."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port
from serve_support import processes_using

from tritonrepo.dynamo.manifest import DynamoDeployment, WorkerGroup, save

pytestmark = pytest.mark.e2e
pytest.importorskip("dynamo.frontend", reason="NVIDIA Dynamo is installed by .ci/install_dynamo.sh (make test)")

FINISHED = re.compile(r"request (\S+): (\d+) prompt tokens -> (\d+) tokens, (\w+)")
CANCELLED = re.compile(r"request \S+ cancelled in the engine after (\d+) tokens")


def write_deployment(folder: Path, model_dir: Path, groups: tuple[WorkerGroup, ...]) -> Path:
    folder.mkdir(parents=True)
    save(
        folder,
        DynamoDeployment(
            model="tiny-llama",
            model_path=str(model_dir),
            served_model_name="tiny-llama",
            router_mode="kv",
            kv_block_size=16,
            workers=groups,
            max_seq_len=512,
            max_batch_size=4,
        ),
    )
    return folder


class DynamoServe:
    """`tritonrepo serve DIR` as a child process; its output says where the logs are and which pids it started."""

    def __init__(self, folder: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.folder, self.log = folder, log
        command = [sys.executable, "-m", "tritonrepo.cli.main", "serve", str(folder), "--openai-port", str(self.port)]
        # serve's temporary folder in the test's, so that a run that fails leaves nothing in /tmp
        env = {**os.environ, "TMPDIR": str(log.parent)}
        self.process = subprocess.Popen([*command, *extra], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while "Press Ctrl-C to stop." not in self.output:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve not ready (exit {self.process.poll()}):\n{self.output[-4000:]}")
            time.sleep(0.5)

    @property
    def log_dir(self) -> Path:
        return Path(re.search(r"logs: (\S+)", self.output)[1])

    def pids(self) -> dict[str, int]:
        return {name: int(pid) for name, pid in re.findall(r"^\s+(\S+)(?: \(stand-in[^)]*\))? started \(pid (\d+)\)",
                                                           self.output, re.M)}  # fmt: skip

    def worker_log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop_cleanly(self) -> None:
        pids = self.pids()
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=60) == 0, self.output[-3000:]
        alive = [name for name, pid in pids.items() if _alive(pid)]
        assert not alive, f"left running after SIGTERM: {alive}"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def aggregated(tiny_model_dir, tmp_path_factory):
    # the deployment as a user makes it: `tritonrepo build --serving dynamo --workers 2`, then `tritonrepo serve`
    root = tmp_path_factory.mktemp("dynamo-agg")
    folder = root / "deployment"
    build = [sys.executable, "-m", "tritonrepo.cli.main", "build", "--model", "tiny-llama", "--serving", "dynamo"]
    built = subprocess.run([*build, "--workers", "2", "--output", str(folder)], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    serve = DynamoServe(folder, root / "serve.log")
    try:
        serve.wait_ready()
        yield serve
    finally:
        if serve.process.poll() is None:
            serve.process.send_signal(signal.SIGTERM)
            serve.process.wait(timeout=60)


@pytest.fixture(scope="module")
def client(aggregated):
    import openai

    return openai.OpenAI(base_url=f"http://127.0.0.1:{aggregated.port}/v1", api_key="none", max_retries=0)


def test_the_real_frontend_serves_two_portable_runtime_workers(aggregated):
    output = aggregated.output
    assert "2 of 2 worker(s) registered with the frontend" in output
    assert "portable runtime" in output
    assert set(aggregated.pids()) == {"frontend", "aggregated-worker-0", "aggregated-worker-1"}
    for name in ("aggregated-worker-0", "aggregated-worker-1"):
        assert "registered tiny-llama as dynamo.backend.generate" in aggregated.worker_log(name)


def test_chat_and_completions_stream_the_same_text_as_without_streaming(client):
    messages = [{"role": "user", "content": "Tell me about cats."}]
    chat = client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=12, temperature=0)
    streamed = client.chat.completions.create(
        model="tiny-llama", messages=messages, max_tokens=12, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert chat.choices[0].message.content and text == chat.choices[0].message.content
    assert chat.usage.completion_tokens >= 1

    completion = client.completions.create(model="tiny-llama", prompt="The café serves", max_tokens=10, temperature=0)
    streamed = client.completions.create(
        model="tiny-llama", prompt="The café serves", max_tokens=10, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in streamed if chunk.choices)
    assert completion.choices[0].text and text == completion.choices[0].text
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_both_workers_serve_requests(aggregated, client):
    def ask(index: int) -> None:
        client.completions.create(model="tiny-llama", prompt=f"Request {index}: tell a story", max_tokens=24)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    served = {
        name: len(FINISHED.findall(aggregated.worker_log(name)))
        for name in ("aggregated-worker-0", "aggregated-worker-1")
    }
    assert all(count > 0 for count in served.values()), served
    assert sum(served.values()) >= 8


def test_a_client_leaving_mid_stream_cancels_the_generation_in_the_engine(aggregated, client):
    before = {name: aggregated.worker_log(name) for name in ("aggregated-worker-0", "aggregated-worker-1")}
    stream = client.completions.create(
        model="tiny-llama", prompt="A very long answer, please", max_tokens=400, stream=True,
        extra_body={"min_tokens": 400},  # the random model may not end on its own before the client leaves
    )  # fmt: skip
    for count, _chunk in enumerate(stream):
        if count == 3:
            break
    stream.close()

    def cancelled():
        for name, old in before.items():
            found = CANCELLED.search(aggregated.worker_log(name)[len(old) :])
            if found:
                return found
        return None

    produced = int(_wait_for(cancelled, what="the worker to log the engine's cancellation")[1])
    assert produced < 400


def test_a_killed_worker_is_reported_and_the_other_keeps_serving(aggregated, client):
    victim = aggregated.pids()["aggregated-worker-0"]
    os.kill(victim, signal.SIGKILL)
    _wait_for(lambda: "aggregated-worker-0 exited with code -9" in aggregated.output, what="serve's report")
    assert "still serving: aggregated-worker-1" in aggregated.output
    for index in range(4):
        reply = client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": f"still there {index}?"}], max_tokens=4
        )
        assert reply.choices[0].finish_reason in ("stop", "length")
    assert aggregated.process.poll() is None


def test_sigterm_stops_every_process_and_exits_0(aggregated, tiny_model_dir):
    aggregated.stop_cleanly()
    assert "Stopped." in aggregated.output
    assert not processes_using(tiny_model_dir), "a worker of this deployment is still running"
    # the logs stay beside the deployment folder; the discovery store in the temp folder is gone
    assert aggregated.log_dir == aggregated.folder.with_name("deployment.dynamo-logs")
    assert "registered tiny-llama" in aggregated.worker_log("aggregated-worker-0")
    assert not list(aggregated.log.parent.glob("tritonrepo-dynamo-*")), "serve left its temporary folder"


def test_smoke_runs_the_openai_checks_and_says_triton_checks_do_not_apply(tiny_model_dir, tmp_path):
    folder = write_deployment(
        tmp_path / "deployment", tiny_model_dir, (WorkerGroup("aggregated", 1, 0, "engine/agg.yaml"),)
    )
    serve = DynamoServe(folder, tmp_path / "serve.log")
    try:
        serve.wait_ready()
        closed = free_port()
        smoke = subprocess.run(
            [sys.executable, "-m", "tritonrepo.cli.main", "smoke", "--dynamo", "--json",
             "--url", f"127.0.0.1:{closed}", "--grpc-url", f"127.0.0.1:{closed}",
             "--openai-url", f"http://127.0.0.1:{serve.port}/v1"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        rows = json.loads(smoke.stdout)
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        openai_rows = [row for row in rows if row["name"].startswith("OpenAI")]
        assert len(openai_rows) == 2 and all(row["ok"] and row["applies"] for row in openai_rows)
        triton_rows = [row for row in rows if not row["name"].startswith("OpenAI")]
        assert triton_rows and all(not row["applies"] and "not applicable" in row["detail"] for row in triton_rows)
        table = subprocess.run(
            [sys.executable, "-m", "tritonrepo.cli.main", "smoke", "--dynamo",
             "--openai-url", f"http://127.0.0.1:{serve.port}/v1"],
            capture_output=True, text=True, timeout=300,
        ).stdout  # fmt: skip
        assert "N/A" in table and "2 of 2 checks passed; 4 not applicable" in table
    finally:
        serve.stop_cleanly()


def _received(log: str, request_id: str) -> str | None:
    """The timestamp of Dynamo's `request received` line for this request in a worker's log."""
    for line in re.sub(r"\x1b\[[0-9;]*m", "", log).splitlines():
        if "request received" in line and f"request_id={request_id}" in line:
            return line.split()[0]
    return None


def test_disaggregated_wiring_with_mocker_stand_ins_passes_prefill_then_decode(tiny_model_dir, tmp_path):
    groups = (WorkerGroup("prefill", 1, 1, "engine/prefill.yaml"), WorkerGroup("decode", 1, 1, "engine/decode.yaml"))
    folder = write_deployment(tmp_path / "deployment", tiny_model_dir, groups)
    serve = DynamoServe(folder, tmp_path / "serve.log", "--stand-in", "mocker")
    try:
        serve.wait_ready()
        assert "STAND-INS" in serve.output
        assert "prefill-worker-0 (stand-in: dynamo.mocker for dynamo.trtllm) started" in serve.output
        assert "decode-worker-0 (stand-in: dynamo.mocker for dynamo.trtllm) started" in serve.output
        import openai

        client = openai.OpenAI(base_url=f"http://127.0.0.1:{serve.port}/v1", api_key="none", max_retries=0)
        reply = client.completions.create(model="tiny-llama", prompt="Hello world, " * 8, max_tokens=6)
        request_id = reply.id.removeprefix("cmpl-")
        prefill = _wait_for(lambda: _received(serve.worker_log("prefill-worker-0"), request_id), what="prefill")
        decode = _wait_for(lambda: _received(serve.worker_log("decode-worker-0"), request_id), what="decode")
        assert prefill <= decode  # ISO timestamps: the prefill worker had the request first, then the decode worker
        frontend = re.sub(r"\x1b\[[0-9;]*m", "", serve.worker_log("frontend"))
        picks = [m[1] for m in re.finditer(rf'request_id="{request_id}" .*?worker_type=(\w+)', frontend)]
        assert picks[:2] == ["prefill", "decode"], picks
    finally:
        serve.stop_cleanly()


def test_a_disaggregated_deployment_without_tensorrt_llm_or_stand_in_is_refused(tiny_model_dir, tmp_path):
    groups = (WorkerGroup("prefill", 1, 1, "engine/prefill.yaml"), WorkerGroup("decode", 1, 1, "engine/decode.yaml"))
    folder = write_deployment(tmp_path / "deployment", tiny_model_dir, groups)
    serve = DynamoServe(folder, tmp_path / "serve.log")
    assert serve.process.wait(timeout=120) == 5
    assert "disaggregated Dynamo deployment" in serve.output and "--stand-in mocker" in serve.output
    assert "started (pid" not in serve.output
    assert not processes_using(tiny_model_dir)


def test_an_api_key_is_refused_because_the_frontend_cannot_enforce_it(tiny_model_dir, tmp_path):
    folder = write_deployment(
        tmp_path / "deployment", tiny_model_dir, (WorkerGroup("aggregated", 1, 0, "engine/agg.yaml"),)
    )
    serve = DynamoServe(folder, tmp_path / "serve.log", "--api-key", "secret")
    assert serve.process.wait(timeout=120) == 5
    assert "no API-key check" in serve.output and "started (pid" not in serve.output


def test_dynamo_not_installed_names_the_extra(tiny_model_dir, tmp_path):
    shadow = tmp_path / "shadow" / "dynamo"  # an environment where `import dynamo` fails
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text('raise ImportError("simulated: NVIDIA Dynamo is not installed")\n')
    folder = write_deployment(
        tmp_path / "deployment", tiny_model_dir, (WorkerGroup("aggregated", 1, 0, "engine/agg.yaml"),)
    )
    run = subprocess.run(
        [sys.executable, "-m", "tritonrepo.cli.main", "serve", str(folder), "--openai-port", str(free_port())],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), os.environ.get("PYTHONPATH", "")])},
    )  # fmt: skip
    assert run.returncode == 5, run.stderr
    assert "NVIDIA Dynamo is not installed" in run.stderr and "pip install 'tritonrepo[dynamo]'" in run.stderr
    assert not processes_using(tiny_model_dir)
