"""End to end: `tritonrepo serve` on a rendered llmapi repository with the real tritonserver (nvidia-pytriton) and
our model.py, the LLM API played by the TensorRT-LLM TEST DOUBLE (tests/doubles; it generates a fixed script), checked
through the official openai client and tritonclient.

The Python backend stub runs with Python's -E (ignore_environment), so PYTHONPATH does not reach it; its sys.path does
hold the model's version folder, where our repositories already keep the modules a model.py imports. The double is
therefore copied next to model.py here, the way TensorRT-LLM is simply installed in the NGC container."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from serve_support import Deployment, grpc_stream

from tritonrepo.pytorch_path.triton_repo import render_llmapi_repository
from tritonrepo.repository.validate import validate_repository

pytestmark = pytest.mark.e2e

DOUBLE_PACKAGE = Path(__file__).resolve().parent / "doubles" / "fake_tensorrt_llm" / "tensorrt_llm"


def _double_script():
    spec = importlib.util.spec_from_file_location(
        "llmapi_double_script", DOUBLE_PACKAGE / "llmapi" / "_double_script.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DOUBLE = _double_script()
MODEL = "tensorrt_llm"


class Record:
    """What the double did inside the Python stub, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self, kind: str) -> list[dict]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [event for event in map(json.loads, lines) if event["event"] == kind]

    def wait_for(self, kind: str, request_id: int, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [event for event in self.events(kind) if event.get("request_id") == request_id]
            if found:
                return found[0]
            time.sleep(0.1)
        raise AssertionError(f"the double recorded no {kind!r} for request {request_id}")

    def last_generation(self, **where) -> dict:
        matching = [e for e in self.events("generate") if all(e.get(k) == v for k, v in where.items())]
        assert matching, f"no generation matching {where}"
        return matching[-1]


@pytest.fixture(scope="module")
def repository(tmp_path_factory, tiny_model_dir) -> Path:
    """The folder the repository is rendered into, already holding the tiny checkpoint: a model may load only what
    lies inside its repository."""
    repository = tmp_path_factory.mktemp("e2e-llmapi") / "llmapi"
    shutil.copytree(tiny_model_dir, repository / MODEL / "1" / "checkpoint")
    return repository


@pytest.fixture(scope="module")
def llm_args(repository) -> dict:
    return {
        # the tiny checkpoint: the front end takes its tokenizer and chat template
        "model": str(repository / MODEL / "1" / "checkpoint"),
        "backend": "pytorch",
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "moe_expert_parallel_size": 1,
        "max_batch_size": 8,
        "max_num_tokens": 2048,
        "max_seq_len": 4096,
        "trust_remote_code": True,
        "enable_attention_dp": False,
        "kv_cache_config": {"free_gpu_memory_fraction": 0.5, "dtype": "auto"},
        "cuda_graph_config": {"enable_padding": True, "max_batch_size": 8},
        "moe_config": {"backend": "CUTLASS"},
    }


@pytest.fixture(scope="module")
def record(tmp_path_factory) -> Record:
    return Record(tmp_path_factory.mktemp("double") / "record.jsonl")


@pytest.fixture(scope="module")
def deployment(repository, llm_args, record):
    root = repository.parent
    for relative, text in render_llmapi_repository(llm_args, triton_max_batch_size=0).items():
        (repository / relative).parent.mkdir(parents=True, exist_ok=True)
        (repository / relative).write_text(text)
    assert validate_repository(repository) == []
    shutil.copytree(DOUBLE_PACKAGE, repository / MODEL / "1" / "tensorrt_llm")  # "installs" the double, see above
    env = {DOUBLE.RECORD_ENV: str(record.path), DOUBLE.STEP_ENV: "0.01"}
    deployment = Deployment(repository, root / "serve.log", env=env)
    deployment.wait_healthy()
    yield deployment
    deployment.stop_cleanly()
    assert record.events("shutdown"), "model.py's finalize did not shut the LLM down"


@pytest.fixture(scope="module")
def openai_client(deployment):
    import openai

    return openai.OpenAI(base_url=deployment.base_url, api_key="unused", max_retries=0, timeout=60)


def test_llm_was_built_once_from_model_yaml_and_serve_said_how_it_launched(deployment, record, llm_args):
    (init,) = record.events("init")
    assert init["kwargs"] == llm_args  # every model.yaml argument, and nothing of triton_config
    assert "llmapi model 'tensorrt_llm' (TensorRT-LLM PyTorch backend) on 1 GPU" in deployment.log.read_text()


def _chat(user: str) -> list[dict]:
    return [{"role": "user", "content": user}]


def test_chat_non_streamed_is_the_whole_script(openai_client, record):
    reply = openai_client.chat.completions.create(model=MODEL, messages=_chat("hello"), max_tokens=64)
    assert reply.choices[0].message.content == DOUBLE.SCRIPT_TEXT
    assert reply.choices[0].finish_reason == "stop"
    generation = record.last_generation(streaming=False)
    assert generation["sampling"]["max_tokens"] == 64 and generation["sampling"]["exclude_input_from_output"]


def test_chat_streamed_deltas_add_up_to_the_script(openai_client, record):
    stream = openai_client.chat.completions.create(model=MODEL, messages=_chat("hello"), max_tokens=64, stream=True)
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    deltas = [choice.delta.content for choice in chunks if choice.delta.content]
    assert "".join(deltas) == DOUBLE.SCRIPT_TEXT
    assert deltas == list(DOUBLE.SCRIPT)  # one piece per step: the cumulative text became exact deltas
    assert chunks[-1].finish_reason == "stop"
    assert record.last_generation(streaming=True)["sampling"]["max_tokens"] == 64


@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_ends_with_finish_reason_length(openai_client, stream):
    request = {"model": MODEL, "messages": _chat("hello"), "max_tokens": 3}
    if stream:
        chunks = [c.choices[0] for c in openai_client.chat.completions.create(**request, stream=True) if c.choices]
        text, reason = "".join(c.delta.content or "" for c in chunks), chunks[-1].finish_reason
    else:
        choice = openai_client.chat.completions.create(**request).choices[0]
        text, reason = choice.message.content, choice.finish_reason
    assert (text, reason) == ("".join(DOUBLE.SCRIPT[:3]), "length")


def test_sampling_reaches_the_llm_api_with_the_checkpoints_defaults(openai_client, record, tiny_model_dir):
    from tritonrepo.source.tiny_llama import TINY_LLAMA_SAMPLING

    def sampling(prompt: str, **kwargs) -> dict:
        openai_client.completions.create(model=MODEL, prompt=prompt, max_tokens=4, **kwargs)
        found = record.last_generation(prompt=prompt)["sampling"]
        return {key: found[key] for key in ("temperature", "top_p", "top_k")}

    # No temperature: the checkpoint's generation_config.json (model.yaml's `model`), here tiny-llama's 0.6 / 0.95.
    assert TINY_LLAMA_SAMPLING["temperature"] == 0.6 and TINY_LLAMA_SAMPLING["top_p"] == 0.95
    assert sampling("defaults") == {"temperature": pytest.approx(0.6), "top_p": pytest.approx(0.95), "top_k": None}
    assert sampling("greedy", temperature=0) == {"temperature": None, "top_p": None, "top_k": 1}
    assert sampling("given", temperature=1.5, top_p=0.5) == {"temperature": 1.5, "top_p": 0.5, "top_k": None}


def test_a_stop_string_reaches_the_model_and_ends_the_text_before_it(openai_client, record):
    reply = openai_client.completions.create(model=MODEL, prompt="hello", max_tokens=64, stop=[" 東京"])
    assert reply.choices[0].text == "Triton double speaking: café"
    assert reply.choices[0].finish_reason == "stop"
    generation = record.last_generation(prompt="hello")
    assert generation["sampling"]["stop"] == [" 東京"]
    assert record.wait_for("finish", generation["request_id"])["generated"] == 6  # the model stopped, not the front end


def test_a_client_that_disconnects_mid_stream_aborts_the_generation(deployment, record):
    import httpx

    body = {"model": MODEL, "prompt": f"go on {DOUBLE.ENDLESS_MARKER}", "max_tokens": 3000, "stream": True}
    with httpx.stream("POST", f"{deployment.base_url}/completions", json=body, timeout=30) as response:
        for index, _line in enumerate(response.iter_lines()):
            if index >= 6:
                break  # leave mid-stream: the connection closes here
    generation = record.last_generation(prompt=body["prompt"])
    aborted = record.wait_for("abort", generation["request_id"])
    assert aborted["generated"] < 300  # 3000 pieces take 30 s; the abort came within the cancellation poll
    assert record.wait_for("finish", generation["request_id"])["reason"] == "cancelled"


# --- the Triton interface itself (upstream's llmapi clients) --------------------------------------------------------
def _grpc(deployment, inputs: dict[str, np.ndarray], request_id: str = "") -> list:
    """Every response of one request over gRPC streaming: {output: first value} dicts, or an error string."""
    responses, error = grpc_stream(deployment.grpc, MODEL, inputs, request_id=request_id)
    found = [
        {o.name: r.as_numpy(o.name).reshape(-1)[0].decode() for o in r.get_response().outputs}
        for r in responses
        if r.get_response().outputs
    ]
    return [*found, error] if error else found


def _text(value: str) -> np.ndarray:
    return np.array([value.encode()], dtype=object)


def test_streamed_text_output_is_cumulative_and_may_echo_the_prompt(deployment):
    responses = _grpc(
        deployment,
        {
            "text_input": _text("Q: "),
            "streaming": np.array([True]),
            "sampling_param_max_tokens": np.array([4], dtype=np.int32),
            "sampling_param_exclude_input_from_output": np.array([False]),
            "return_finish_reason": np.array([True]),
        },
    )
    texts = [response["text_output"] for response in responses]
    assert texts == ["Q: " + "".join(DOUBLE.SCRIPT[:n]) for n in range(1, 5)]  # as upstream: the whole text each time
    assert [response["finish_reason"] for response in responses] == ["", "", "", "length"]


def test_a_stop_request_with_the_same_request_id_ends_a_running_generation(deployment, record):
    import threading

    long_request = {
        "text_input": _text(f"stop me {DOUBLE.ENDLESS_MARKER}"),
        "streaming": np.array([True]),
        "sampling_param_max_tokens": np.array([3000], dtype=np.int32),
        "return_finish_reason": np.array([True]),
    }
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(responses=_grpc(deployment, long_request, "job-7")))
    worker.start()
    deadline = time.monotonic() + 15
    while not [e for e in record.events("generate") if e["prompt"] == f"stop me {DOUBLE.ENDLESS_MARKER}"]:
        assert time.monotonic() < deadline, "the long request never started"
        time.sleep(0.05)
    stopped = _grpc(deployment, {"text_input": _text(""), "stop": np.array([True])}, request_id="job-7")
    worker.join(timeout=30)
    assert stopped and "request cancelled" in stopped[-1]
    assert outcome["responses"][-1]["finish_reason"] == "cancelled"
    assert len(outcome["responses"]) < 3000


def test_a_bad_request_gets_an_error_and_the_model_keeps_serving(deployment):
    two_prompts = _grpc(deployment, {"text_input": np.array([b"a", b"b"], dtype=object)})
    assert two_prompts and "text_input must hold exactly one prompt" in two_prompts[-1]
    no_tokens = _grpc(deployment, {"text_input": _text("a"), "sampling_param_max_tokens": np.array([0], np.int32)})
    assert "max_tokens must be a positive integer" in no_tokens[-1]
    fine = _grpc(deployment, {"text_input": _text("a"), "sampling_param_max_tokens": np.array([1], np.int32)})
    assert fine == [{"text_output": DOUBLE.SCRIPT[0]}]
