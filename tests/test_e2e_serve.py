"""End to end: `tritonrepo serve` on the tiny model with the bundled (real) tritonserver, checked through
tritonclient and the official openai client. The portable runtime's output is compared with plain transformers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import free_port, reference_greedy
from serve_support import Deployment, grpc_stream, processes_using

pytestmark = pytest.mark.e2e

PROMPTS = ["Hello world", "The café in 東京 serves", "Ünïcödé 🙂 and"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest

    root = tmp_path_factory.mktemp("e2e")
    repository = build(DeploymentRequest(model="tiny-llama", output=root / "tiny-llama")).path
    deployment = Deployment(repository, root / "serve.log")
    startup = deployment.wait_healthy()
    print(f"\n[e2e] tritonserver + front end ready in {startup:.1f}s")
    yield deployment
    deployment.stop_cleanly()


# --- tritonclient helpers ------------------------------------------------------------------------------------------
def _grpc_generate(deployment, model: str, inputs: dict[str, np.ndarray]) -> list:
    """All responses of one decoupled request over gRPC streaming, until the final flag."""
    responses, error = grpc_stream(deployment.grpc, model, inputs)
    assert error is None, error
    return [r for r in responses if r.get_response().outputs]


def _text_request(prompt: str, max_tokens: int, stream: bool) -> dict[str, np.ndarray]:
    return {
        "text_input": np.array([[prompt.encode()]], dtype=object),
        "max_tokens": np.array([[max_tokens]], dtype=np.int32),
        "stream": np.array([[stream]]),
        "exclude_input_in_output": np.array([[True]]),
    }


def _incremental(chunks: list[bytes]) -> str:
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    return "".join(decoder.decode(c) for c in chunks) + decoder.decode(b"", final=True)


def _chunks(responses) -> list[bytes]:
    return [b"".join(r.as_numpy("text_output").reshape(-1)) for r in responses]


# --- the runtime is transformers, token for token ------------------------------------------------------------------
@pytest.mark.parametrize("prompt", PROMPTS)
def test_tensorrt_llm_model_greedy_equals_transformers_generate(
    deployment, tiny_tokenizer, tiny_reference_model, prompt
):
    expected = reference_greedy(tiny_reference_model, tiny_tokenizer, prompt, 24)
    ids = tiny_tokenizer(prompt).input_ids
    responses = _grpc_generate(
        deployment,
        "tensorrt_llm",
        {
            "input_ids": np.array([ids], dtype=np.int32),
            "input_lengths": np.array([[len(ids)]], dtype=np.int32),
            "request_output_len": np.array([[24]], dtype=np.int32),
            "exclude_input_in_output": np.array([[True]]),
        },
    )
    assert len(responses) == 1
    assert responses[0].as_numpy("output_ids").reshape(-1).tolist() == expected


@pytest.mark.parametrize("prompt", PROMPTS)
def test_ensemble_text_is_the_decoded_greedy_output_and_bls_agrees(
    deployment, tiny_tokenizer, tiny_reference_model, prompt
):
    expected_ids = reference_greedy(tiny_reference_model, tiny_tokenizer, prompt, 24)
    expected = tiny_tokenizer.decode(expected_ids, skip_special_tokens=True)
    ensemble = _incremental(_chunks(_grpc_generate(deployment, "ensemble", _text_request(prompt, 24, False))))
    bls = b"".join(_chunks(_grpc_generate(deployment, "tensorrt_llm_bls", _text_request(prompt, 24, False)))).decode()
    assert ensemble == expected
    assert bls == ensemble


def test_streamed_text_equals_non_streamed_text_even_when_characters_split(deployment):
    split_seen = False
    for prompt in PROMPTS:
        whole = _incremental(_chunks(_grpc_generate(deployment, "ensemble", _text_request(prompt, 40, False))))
        ensemble_chunks = _chunks(_grpc_generate(deployment, "ensemble", _text_request(prompt, 40, True)))
        assert len(ensemble_chunks) >= 40  # one response per token
        assert _incremental(ensemble_chunks) == whole
        for chunk in ensemble_chunks:
            try:
                chunk.decode("utf-8")
            except UnicodeDecodeError:
                split_seen = True  # a character split across two responses: decoding chunks alone would break it
        bls_chunks = [
            c.decode("utf-8")
            for c in _chunks(_grpc_generate(deployment, "tensorrt_llm_bls", _text_request(prompt, 40, True)))
        ]
        assert "".join(bls_chunks) == whole
    assert split_seen, "the prompts should produce at least one multi-byte character split across tokens"


# --- the OpenAI endpoint, with the official client -------------------------------------------------------------------
@pytest.fixture(scope="module")
def openai_client(deployment):
    import openai

    return openai.OpenAI(base_url=deployment.base_url, api_key="unused", max_retries=0, timeout=60)


def test_models_lists_the_served_names(openai_client):
    ids = [model.id for model in openai_client.models.list().data]
    assert ids[0] == "tiny-llama"
    assert {"ensemble", "tensorrt_llm_bls"} <= set(ids)
    assert not {"preprocessing", "postprocessing", "tensorrt_llm"} & set(ids)


def test_chat_stream_and_non_stream_agree_with_usage_and_finish_reason(openai_client, tiny_tokenizer):
    messages = [{"role": "user", "content": "Tell me about 東京 🙂"}]
    reply = openai_client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=32, temperature=0)
    content = reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    prompt = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert reply.usage.prompt_tokens == len(tiny_tokenizer.encode(prompt, add_special_tokens=False))
    assert reply.usage.completion_tokens == 32
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 32
    stream = openai_client.chat.completions.create(
        model="tiny-llama",
        messages=messages,
        max_tokens=32,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.completion_tokens == 32


@pytest.mark.parametrize("model", ["tiny-llama", "tensorrt_llm_bls"])
def test_completions_stream_equals_non_stream(openai_client, model):
    kwargs = dict(model=model, prompt="The café in 東京 serves", max_tokens=24, temperature=0)
    text = openai_client.completions.create(**kwargs).choices[0].text
    streamed = "".join(c.choices[0].text for c in openai_client.completions.create(**kwargs, stream=True) if c.choices)
    assert streamed == text and len(text) > 0


def test_seeded_sampling_is_reproducible_over_the_api(openai_client):
    kwargs = dict(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=16, temperature=1.0, seed=11
    )
    first = openai_client.chat.completions.create(**kwargs).choices[0].message.content
    assert openai_client.chat.completions.create(**kwargs).choices[0].message.content == first


def test_concurrent_requests_each_get_their_own_answer(openai_client):
    from concurrent.futures import ThreadPoolExecutor

    prompts = [f"Request number {i} about 🙂" for i in range(6)]

    def ask(prompt):
        return (
            openai_client.completions.create(model="tiny-llama", prompt=prompt, max_tokens=20, temperature=0)
            .choices[0]
            .text
        )

    solo = [ask(p) for p in prompts]
    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(ask, prompts)) == solo


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"model": "tiny-llama", "prompt": "", "max_tokens": 4}, 400, "prompt"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": -3}, 400, "max_tokens"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 100000}, 400, "max_tokens"),
        ({"model": "gpt-17", "prompt": "hi", "max_tokens": 4}, 404, "gpt-17"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": "many"}, 400, "max_tokens"),
        ({"model": "tiny-llama", "prompt": "hi", "temperature": "hot"}, 400, "temperature"),
        # beyond the tensors the values are sent as (top_k 2^40 was a 500 with a Python struct error)
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 4, "top_k": 2**40}, 400, "top_k"),
        ({"model": "ensemble", "prompt": "hi", "max_tokens": 4, "top_k": 2**31}, 400, "top_k"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 4, "seed": 2**64}, 400, "seed"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 4, "min_tokens": 2**31}, 400, "min_tokens"),
        # OpenAI features this server lacks, and fields it does not know: refused by name, never ignored
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 4, "best_of": 3}, 400, "best_of"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 4, "suffix": "end"}, 400, "suffix"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 4, "logit_bias": {"7": 50}}, 400, "logit_bias"),
        ({"model": "tiny-llama", "prompt": "hi", "max_tokens": 4, "min_p": 0.1}, 400, "min_p"),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_the_server_keeps_serving(deployment, openai_client, body, status, words):
    import httpx

    response = httpx.post(f"{deployment.base_url}/completions", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]["message"]
    assert openai_client.completions.create(model="tiny-llama", prompt="ok", max_tokens=2).choices[0].text is not None


def test_chat_features_this_server_lacks_are_refused_by_name_through_the_openai_client(openai_client):
    import openai

    messages = [{"role": "user", "content": "hi"}]
    refused = {
        "tools": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
        "tool_choice": {"tool_choice": "required"},
        "response_format": {"response_format": {"type": "json_object"}},
        "logit_bias": {"logit_bias": {"7": 50}},
        "functions": {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
    }
    for field, kwargs in refused.items():
        with pytest.raises(openai.BadRequestError) as caught:
            openai_client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=4, **kwargs)
        assert caught.value.body["param"] == field and "not supported" in caught.value.body["message"], field
    neutral = dict(tools=[], tool_choice="none", response_format={"type": "text"}, logit_bias={}, user="someone")
    reply = openai_client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=4, **neutral)
    assert reply.usage.completion_tokens == 4


@pytest.mark.parametrize("model", ["tiny-llama", "ensemble", "tensorrt_llm_bls"])
def test_the_largest_values_the_tensors_hold_are_served(openai_client, model):
    reply = openai_client.completions.create(
        model=model,
        prompt="Hello",
        max_tokens=4,
        temperature=2.0,
        top_p=1.0,
        seed=2**64 - 1,
        extra_body={"top_k": 2**31 - 1, "min_tokens": 4},
    )
    assert reply.usage.completion_tokens == 4


# --- sampling: OpenAI's semantics on every entry point, not TensorRT-LLM's greedy defaults ---------------------------
ENTRY_POINT_NAMES = ["tiny-llama", "ensemble", "tensorrt_llm_bls"]


def _text(openai_client, endpoint: str, model: str, **kwargs) -> str:
    if endpoint == "chat":
        messages = [{"role": "user", "content": "Tell me a story about 東京"}]
        reply = openai_client.chat.completions.create(model=model, messages=messages, max_tokens=16, **kwargs)
        return reply.choices[0].message.content
    return (
        openai_client.completions.create(model=model, prompt="Once upon a time", max_tokens=16, **kwargs)
        .choices[0]
        .text
    )


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("model", ENTRY_POINT_NAMES)
def test_temperature_samples_and_the_seed_decides_what(openai_client, endpoint, model):
    greedy = _text(openai_client, endpoint, model, temperature=0)
    sampled = {seed: _text(openai_client, endpoint, model, temperature=1.0, seed=seed) for seed in (1, 2, 3)}
    assert _text(openai_client, endpoint, model, temperature=1.0, seed=1) == sampled[1]  # same seed, same text
    assert len(set(sampled.values())) > 1, sampled  # other seeds, other text
    # temperature without top_p samples (it was greedy: TensorRT-LLM's top_k 0 + top_p 0 leaked through)
    assert any(text != greedy for text in sampled.values()), (greedy, sampled)


@pytest.mark.parametrize("endpoint", ["chat", "completions"])
@pytest.mark.parametrize("model", ENTRY_POINT_NAMES)
def test_an_absent_temperature_follows_the_recorded_generation_defaults(deployment, openai_client, endpoint, model):
    from tritonrepo.source.tiny_llama import TINY_LLAMA_SAMPLING

    manifest = json.loads((deployment.repository / "tritonrepo.json").read_text())
    assert (
        manifest["generation_defaults"] == TINY_LLAMA_SAMPLING == {"do_sample": True, "temperature": 0.6, "top_p": 0.95}
    )
    seeds = (1, 2, 3)
    default = {seed: _text(openai_client, endpoint, model, seed=seed) for seed in seeds}
    recorded = {seed: _text(openai_client, endpoint, model, seed=seed, temperature=0.6, top_p=0.95) for seed in seeds}
    openai_own = {seed: _text(openai_client, endpoint, model, seed=seed, temperature=1.0, top_p=1.0) for seed in seeds}
    assert default == recorded
    assert default != openai_own  # the checkpoint's defaults, not OpenAI's, apply
    assert len(set(default.values())) > 1  # and they sample


def test_malformed_json_is_a_400(deployment):
    import httpx

    response = httpx.post(
        f"{deployment.base_url}/chat/completions",
        content=b"{not json",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 400 and "error" in response.json()


def test_prompt_longer_than_max_input_len_is_refused_with_the_numbers(deployment):
    import httpx

    response = httpx.post(
        f"{deployment.base_url}/completions",
        json={"model": "tiny-llama", "prompt": "word " * 3000, "max_tokens": 4},
        timeout=30,
    )
    assert response.status_code == 400
    assert "1024" in response.json()["error"]["message"]


# --- tritonrepo smoke ------------------------------------------------------------------------------------------------
def test_smoke_passes_against_the_deployment(deployment):
    from tritonrepo.checks.smoke import SmokeTargets, run_smoke

    results = run_smoke(
        SmokeTargets(
            http_url=f"127.0.0.1:{deployment.http}",
            grpc_url=f"127.0.0.1:{deployment.grpc}",
            openai_url=deployment.base_url,
        )
    )
    assert [r.name for r in results if not r.ok] == [], [r.as_dict() for r in results]
    assert len(results) == 3 + 5 + 4 + 2


def test_smoke_reports_failures_and_exits_non_zero(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tritonrepo.cli.main",
            "smoke",
            "--url",
            f"127.0.0.1:{free_port()}",
            "--openai-url",
            "",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 6
    rows = json.loads(result.stdout)
    assert rows[0]["name"] == "server live" and rows[0]["ok"] is False


# --- failures at start-up --------------------------------------------------------------------------------------------
def test_serve_on_a_broken_repository_prints_tritons_error_and_exits_non_zero(tmp_path):
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest

    repository = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "broken")).path
    weights = repository / "tensorrt_llm/1/hf_model/model.safetensors"
    weights.unlink()
    weights.write_bytes(b"not a safetensors file")
    refused = _serve(repository)  # the manifest's digest no longer matches: nothing starts
    assert refused.returncode == 4, refused.stderr[-2000:]
    assert "tensorrt_llm/1/hf_model/model.safetensors: changed since the build" in refused.stderr
    assert not repository.with_name("broken.tritonserver.log").exists()
    result = _serve(repository, "--trust-repository")  # told to serve it anyway: Triton's own error
    assert result.returncode == 5, result.stderr[-2000:]
    assert "WARNING: serving" in result.stderr and "every model is ready" not in result.stderr
    assert "failed to load 'tensorrt_llm'" in result.stderr and "SafetensorError" in result.stderr
    assert "Full log:" in result.stderr and "Traceback" not in result.stderr


def _serve(repository, *flags: str) -> subprocess.CompletedProcess:
    ports = [str(free_port()) for _ in range(4)]
    env = {**os.environ, "TRITONREPO_QUIET": "0"}
    return subprocess.run(
        [sys.executable, "-m", "tritonrepo.cli.main", "serve", str(repository), "--http-port", ports[0], "--grpc-port", ports[1],
         "--metrics-port", ports[2], "--openai-port", ports[3], *flags],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def test_serve_on_a_folder_that_is_not_a_repository_fails_like_validate_and_says_nothing_of_success(tmp_path):
    folder = tmp_path / "downloads"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "todo.txt").write_text("not a model")
    result = _serve(folder)
    assert result.returncode == 4, result.stderr[-2000:]
    assert "notes: model directory has no config.pbtxt" in result.stderr
    validate = subprocess.run(
        [sys.executable, "-m", "tritonrepo.cli.main", "validate", str(folder)], capture_output=True, text=True
    )
    assert validate.returncode == 4 and "notes: model directory has no config.pbtxt" in validate.stderr
    for claim in ("ready", "OpenAI endpoint", "Starting tritonserver", "tritonserver started"):
        assert claim not in result.stderr, claim
    assert not (tmp_path / "downloads.tritonserver.log").exists()


def test_a_trusted_folder_without_models_is_not_called_ready(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _serve(empty, "--trust-repository")
    assert result.returncode == 5, result.stderr[-2000:]
    assert "tritonserver loaded no model" in result.stderr
    assert "every model is ready" not in result.stderr and "OpenAI endpoint" not in result.stderr


def test_the_repository_loads_with_tritonserver_started_from_another_working_directory(tmp_path):
    """Nothing in a built repository depends on tritonserver's working directory (upstream's launch script and a plain
    `tritonserver --model-repository=/abs/path` start it elsewhere)."""
    import urllib.request

    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest
    from tritonrepo.serving.tritonserver import TritonServer, find_tritonserver

    repository = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "tiny-llama")).path
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    installation = find_tritonserver()
    server = TritonServer(installation, str(repository), log_path=tmp_path / "triton.log",
                          http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())  # fmt: skip
    process = subprocess.Popen(
        server.command(), cwd=elsewhere, env={**os.environ, **installation.env}, start_new_session=True,
        stdout=(tmp_path / "triton.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        assert process.poll() is None, (tmp_path / "triton.log").read_text()[-3000:]
        responses = _grpc_text(server.grpc_url, "tensorrt_llm_bls", "Hello world", 8)
        assert responses, "no text came back"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the whole group: the Python stubs too
        process.wait(timeout=60)
        deadline = time.monotonic() + 15
        while processes_using(repository) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert not processes_using(repository)


def _grpc_text(url: str, model: str, prompt: str, max_tokens: int) -> list:
    port = int(url.rsplit(":", 1)[1])
    responses, error = grpc_stream(port, model, _text_request(prompt, max_tokens, True))
    assert error is None, error
    return [r for r in responses if r.get_response().outputs]


# --- cancellation: a client that goes away stops the engine ---------------------------------------------------------
def _cancellations(deployment) -> list[int]:
    """Token counts of the requests the runtime reports as cancelled, from the tritonserver log."""
    import re

    log = deployment.repository.with_name(deployment.repository.name + ".tritonserver.log").read_text()
    return [int(n) for n in re.findall(r"request cancelled after (\d+) tokens", log)]


def _wait_for_new_cancellation(deployment, before: int) -> int:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        seen = _cancellations(deployment)
        if len(seen) > before:
            return seen[-1]
        time.sleep(0.2)
    raise AssertionError("the runtime never saw the cancellation: it would have generated to max_tokens")


@pytest.mark.parametrize("model", ["tiny-llama", "tensorrt_llm_bls"])
def test_an_openai_client_that_disconnects_mid_stream_stops_generation(deployment, model):
    import httpx

    before = len(_cancellations(deployment))
    body = {"model": model, "prompt": "hi", "max_tokens": 1500, "stream": True}
    with httpx.stream("POST", f"{deployment.base_url}/completions", json=body, timeout=30) as response:
        for index, _line in enumerate(response.iter_lines()):
            if index >= 8:
                break  # leave mid-stream: the connection closes here
    assert _wait_for_new_cancellation(deployment, before) < 200


def test_cancelling_a_bls_stream_over_grpc_stops_generation(deployment):
    import queue

    import tritonclient.grpc as grpc_client

    before = len(_cancellations(deployment))
    results: queue.Queue = queue.Queue()
    client = grpc_client.InferenceServerClient(f"127.0.0.1:{deployment.grpc}")
    tensors = []
    for name, value in _text_request("hi", 1500, True).items():
        tensor = grpc_client.InferInput(
            name,
            list(value.shape),
            "BYTES" if value.dtype == object else "INT32" if value.dtype == np.int32 else "BOOL",
        )
        tensor.set_data_from_numpy(value)
        tensors.append(tensor)
    client.start_stream(callback=lambda result, error: results.put((result, error)))
    client.async_stream_infer("tensorrt_llm_bls", tensors)
    for _ in range(5):
        results.get(timeout=30)
    client.stop_stream(cancel_requests=True)
    client.close()
    assert _wait_for_new_cancellation(deployment, before) < 200


def test_ctrl_c_stops_serve_and_tritonserver_cleanly(tmp_path):
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest

    repository = build(DeploymentRequest(model="tiny-llama", output=tmp_path / "ctrl-c")).path
    second = Deployment(repository, tmp_path / "serve.log")
    second.wait_healthy()
    assert len(processes_using(repository)) >= 5  # tritonserver and a stub per Python model: the check can fail
    second.process.send_signal(signal.SIGINT)
    assert second.process.wait(timeout=60) == 0
    output = second.log.read_text()
    assert output.rstrip().endswith("Stopped.") and "Traceback" not in output
    assert not processes_using(repository)
