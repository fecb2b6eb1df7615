"""End to end through the real tritonserver with the scripted model (its greedy output is known by construction):
reasoning split, known completions, ignore_eos/min_tokens, API keys (from a key file), body limits in size and time,
concurrency limits, long prompts, metrics and cancellation seen in the runtime's own counters."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
from serve_support import Deployment

from tritonrepo.source.scripted_llama import COMPLETION_PROMPT, DEFAULT_SCRIPT, expected_reasoning_and_answer

pytestmark = pytest.mark.e2e

KEY = "e2e-secret-key-123"
REASONING, ANSWER = expected_reasoning_and_answer(DEFAULT_SCRIPT)
MESSAGES = [{"role": "user", "content": "What does 猫 mean?"}]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    from tritonrepo.planning.build import build
    from tritonrepo.planning.request import DeploymentRequest

    root = tmp_path_factory.mktemp("e2e-frontend")
    repository = build(DeploymentRequest(model="scripted-llama", output=root / "scripted-llama")).path
    key_file = root / "api-keys"
    key_file.write_text(f"# the e2e key\n\n{KEY}\n")
    deployment = Deployment(
        repository,
        root / "serve.log",
        "--max-concurrent-requests", "2", "--max-queued-requests", "0",
        "--max-request-bytes", "65536", "--cors-origin", "http://allowed.example",
        "--request-body-timeout", "3", "--api-key-file", str(key_file),
        env={"TRITONREPO_API_KEY": ""},
    )  # fmt: skip
    deployment.wait_healthy()
    yield deployment
    deployment.stop_cleanly()
    assert KEY not in deployment.log.read_text()  # the key is never logged


@pytest.fixture(scope="module")
def client(deployment):
    from openai import OpenAI

    return OpenAI(base_url=deployment.base_url, api_key=KEY, max_retries=0)


def _post(deployment, path: str, body: dict, key: str | None = KEY, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{deployment.base_url}{path}", json=body, headers=headers, timeout=60, **kwargs)


def _sample(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += sample.value
    return total


# --- reasoning -----------------------------------------------------------------------------------------------------
def test_chat_splits_reasoning_from_the_answer(client):
    response = client.chat.completions.create(model="scripted-llama", messages=MESSAGES, max_tokens=200)
    message = response.choices[0].message
    assert message.reasoning_content == REASONING and "猫" in REASONING and "🙂" in REASONING
    assert message.content == ANSWER and "✨" in ANSWER
    assert response.choices[0].finish_reason == "stop"


def test_streamed_reasoning_and_content_deltas_add_up_to_the_same_split(client):
    stream = client.chat.completions.create(
        model="scripted-llama",
        messages=MESSAGES,
        max_tokens=200,
        stream=True,
        stream_options={"include_usage": True},
    )
    reasoning, content, reasons, usage = [], [], [], None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            delta = choice.delta.model_dump()
            reasoning.append(delta.get("reasoning_content") or "")
            content.append(delta.get("content") or "")
            reasons.append(choice.finish_reason)
    assert "".join(reasoning) == REASONING and "".join(content) == ANSWER
    assert sum(1 for r in reasoning if r) > 3 and sum(1 for c in content if c) > 1  # really streamed, both channels
    assert reasons[-1] == "stop" and usage is not None and usage.completion_tokens > 10


def test_a_response_cut_short_while_thinking_is_all_reasoning_with_finish_length(client):
    response = client.chat.completions.create(model="scripted-llama", messages=MESSAGES, max_tokens=5)
    message = response.choices[0].message
    assert response.choices[0].finish_reason == "length" and response.usage.completion_tokens == 5
    assert REASONING.startswith(message.reasoning_content) and message.content == ""


def test_completions_return_the_raw_text_without_splitting(client):
    response = client.completions.create(model="scripted-llama", prompt=COMPLETION_PROMPT, max_tokens=200)
    assert response.choices[0].text == DEFAULT_SCRIPT
    assert response.choices[0].finish_reason == "stop"


# --- usage when a stop string cuts the text ------------------------------------------------------------------------
STOP = " cat"  # in the middle of the script: "... which means cat in Chinese ..."


@pytest.fixture(scope="module")
def tokens_before_stop(deployment) -> int:
    """How many of the script's tokens make up the text before STOP (the tokens whose text is returned)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(deployment.repository / "preprocessing/1/tokenizer"))
    ids = tokenizer.encode(DEFAULT_SCRIPT, add_special_tokens=False)
    prefix = DEFAULT_SCRIPT[: DEFAULT_SCRIPT.index(STOP)]
    count = next(k for k in range(len(ids) + 1) if tokenizer.decode(ids[:k]) == prefix)
    assert 5 < count < len(ids) - 5  # the cut is well inside the script
    return count


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["scripted-llama", "ensemble", "tensorrt_llm_bls"])
def test_usage_counts_only_the_tokens_of_the_text_a_stop_string_left(client, tokens_before_stop, model, stream):
    kwargs = dict(model=model, prompt=COMPLETION_PROMPT, max_tokens=200, stop=[STOP])
    if stream:
        chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        reason = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        usage = chunks[-1].usage
    else:
        reply = client.completions.create(**kwargs)
        text, reason, usage = reply.choices[0].text, reply.choices[0].finish_reason, reply.usage
    assert (text, reason) == (DEFAULT_SCRIPT[: DEFAULT_SCRIPT.index(STOP)], "stop")
    # Not the whole generation (the script runs on after the stop string), nor the stop string's own tokens.
    assert usage.completion_tokens == tokens_before_stop
    assert usage.total_tokens == usage.prompt_tokens + tokens_before_stop


def test_without_temperature_the_scripted_model_stays_greedy(deployment, client):
    manifest = (deployment.repository / "tritonrepo.json").read_text()
    assert '"generation_defaults": {\n    "do_sample": false\n  }' in manifest  # its generation_config.json says greedy
    for seed in (1, 2):
        reply = client.completions.create(model="ensemble", prompt=COMPLETION_PROMPT, max_tokens=200, seed=seed)
        assert reply.choices[0].text == DEFAULT_SCRIPT


# --- sampling extensions -------------------------------------------------------------------------------------------
def test_ignore_eos_and_min_tokens_generate_past_the_end_token(client):
    plain = client.completions.create(model="scripted-llama", prompt=COMPLETION_PROMPT, max_tokens=200)
    natural = plain.usage.completion_tokens
    forced = client.completions.create(
        model="scripted-llama", prompt=COMPLETION_PROMPT, max_tokens=natural + 7, extra_body={"ignore_eos": True}
    )
    assert forced.usage.completion_tokens == natural + 7 and forced.choices[0].finish_reason == "length"
    assert forced.choices[0].text.startswith(DEFAULT_SCRIPT)
    at_least = client.completions.create(
        model="scripted-llama", prompt=COMPLETION_PROMPT, max_tokens=200, extra_body={"min_tokens": natural + 3}
    )
    assert at_least.usage.completion_tokens >= natural + 3


def test_min_tokens_above_max_tokens_is_a_400(deployment):
    body = {"model": "scripted-llama", "prompt": COMPLETION_PROMPT, "max_tokens": 4, "min_tokens": 9}
    response = _post(deployment, "/completions", body)
    assert response.status_code == 400 and "min_tokens" in response.json()["error"]["message"]


# --- security and limits -------------------------------------------------------------------------------------------
def test_requests_without_the_right_key_get_401_and_health_stays_open(deployment):
    body = {"model": "scripted-llama", "messages": MESSAGES}
    for key in (None, "wrong-key"):
        response = _post(deployment, "/chat/completions", body, key=key)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "invalid_api_key" and "wrong-key" not in response.text
    assert httpx.get(f"{deployment.base_url}/models", timeout=10).status_code == 401
    assert httpx.get(f"http://127.0.0.1:{deployment.openai}/health", timeout=10).status_code == 200


def test_the_key_comes_from_the_file_never_the_command_line_and_guards_the_docs(deployment):
    command_line = (f"/proc/{deployment.process.pid}/cmdline", "rb")
    with open(*command_line) as handle:
        assert KEY.encode() not in handle.read()
    base = f"http://127.0.0.1:{deployment.openai}"
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 401
    schema = httpx.get(f"{base}/openapi.json", headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
    assert schema.status_code == 200 and "/v1/chat/completions" in schema.json()["paths"]


def test_cors_allows_only_the_configured_origin(deployment):
    url = f"{deployment.base_url}/chat/completions"
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
    allowed = httpx.options(url, headers={"Origin": "http://allowed.example", **preflight}, timeout=10)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "http://allowed.example"
    other = httpx.options(url, headers={"Origin": "http://evil.example", **preflight}, timeout=10)
    assert "access-control-allow-origin" not in other.headers


def test_a_body_over_the_limit_is_a_413(deployment):
    body = {"model": "scripted-llama", "prompt": "x" * 70000}
    response = _post(deployment, "/completions", body)
    assert response.status_code == 413 and "65536" in response.json()["error"]["message"]


def _stalled_request(deployment, chunked: bool) -> socket.socket:
    """A completion request whose body never ends: a Content-Length larger than what is sent, or an unfinished
    chunked body."""
    sock = socket.create_connection(("127.0.0.1", deployment.openai), timeout=60)
    body = json.dumps({"model": "scripted-llama", "prompt": COMPLETION_PROMPT, "max_tokens": 4}).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
    if chunked:
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode() + body + b"\r\n")
    else:
        sock.sendall(f"{head}Content-Length: {len(body) + 50}\r\n\r\n".encode() + body)
    return sock


def test_clients_that_never_finish_their_body_take_no_slot_and_get_408(deployment):
    # Twice as many stalled connections as generation slots: a normal request is served while they hang, and each
    # of them gets a 408 once --request-body-timeout (3 s here) has passed, and is disconnected.
    stalled = [_stalled_request(deployment, chunked=index % 2 == 1) for index in range(4)]
    try:
        body = {"model": "scripted-llama", "prompt": COMPLETION_PROMPT, "max_tokens": 4}
        served = _post(deployment, "/completions", body)
        answers = []
        for sock in stalled:
            data = b""
            while chunk := sock.recv(65536):  # the server answers, then hangs up
                data += chunk
            answers.append(data)
    finally:
        for sock in stalled:
            sock.close()
    assert served.status_code == 200 and served.json()["usage"]["completion_tokens"] == 4
    for answer in answers:
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and json.loads(payload)["error"]["code"] == "request_timeout"


def test_a_huge_prompt_is_refused_at_once_while_health_stays_responsive(deployment):
    # The body limit here is 64 KiB, so the prompt is 60,000 characters: far past what the scripted model accepts,
    # refused by its length (no tokenizing: "at least"), and /health answers alongside.
    body = {"model": "scripted-llama", "prompt": "x" * 60000, "max_tokens": 4}
    results: dict[str, int] = {}
    sender = threading.Thread(target=lambda: results.update(huge=_post(deployment, "/completions", body).status_code))
    sender.start()
    health = httpx.get(f"http://127.0.0.1:{deployment.openai}/health", timeout=30)
    sender.join(60)
    refused = _post(deployment, "/completions", body)
    assert health.status_code == 200 and results["huge"] == 400
    error = refused.json()["error"]
    assert error["code"] == "context_length_exceeded" and "at least" in error["message"]


def test_beyond_the_concurrency_limit_clients_get_429_with_retry_after(deployment):
    import contextlib

    # Two long streams hold both slots (no queue) for as long as they are open; every other request meanwhile is
    # refused at once. Holding them open, rather than racing long generations, keeps this independent of speed.
    body = {"model": "scripted-llama", "prompt": COMPLETION_PROMPT, "max_tokens": 1500, "ignore_eos": True}
    headers = {"Authorization": f"Bearer {KEY}"}
    assert _post(deployment, "/completions", {**body, "max_tokens": 4}).status_code == 200  # one hold to estimate from
    lines = []  # kept referenced: an iterator that is collected closes its response, which frees the slot
    with contextlib.ExitStack() as held:
        for _ in range(2):
            stream = held.enter_context(
                httpx.stream(
                    "POST", f"{deployment.base_url}/completions", json={**body, "stream": True}, headers=headers,
                    timeout=60,
                )
            )  # fmt: skip
            assert stream.status_code == 200
            lines.append(stream.iter_lines())
            next(lines[-1])  # generating: its slot is taken
        refused = [_post(deployment, "/completions", {**body, "max_tokens": 4}) for _ in range(4)]
    assert [r.status_code for r in refused] == [429] * 4
    for response in refused:
        # Estimated from how long requests held their slots (the streams are still open, so those seen before),
        # never the 60 s queue timeout: requests here take well under a second.
        assert 1 <= int(response.headers["retry-after"]) < 60
        assert response.json()["error"]["code"] == "rate_limit_exceeded"
    # Closing the streams gave the slots back (and cancelled their generations).
    deadline = time.monotonic() + 10
    while (answer := _post(deployment, "/completions", {**body, "max_tokens": 4})).status_code == 429:
        assert time.monotonic() < deadline, "the slots never came back"
        time.sleep(0.1)
    assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4


# --- metrics and cancellation --------------------------------------------------------------------------------------
def test_a_client_leaving_mid_stream_stops_the_runtime_which_its_counters_show(deployment):
    triton_metrics = f"http://127.0.0.1:{deployment.metrics}/metrics"

    def runtime() -> tuple[float, float]:
        text = httpx.get(triton_metrics, timeout=10).text
        return (
            _sample(text, "tritonrepo_runtime_requests_total", {"outcome": "cancelled"}),
            _sample(text, "tritonrepo_runtime_generated_tokens_total"),
        )

    cancelled_before, tokens_before = runtime()
    body = {"model": "scripted-llama", "prompt": COMPLETION_PROMPT, "max_tokens": 1500, "ignore_eos": True}
    with httpx.stream(
        "POST",
        f"{deployment.base_url}/completions",
        json={**body, "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    ) as response:
        for index, _line in enumerate(response.iter_lines()):
            if index >= 10:
                break
    deadline = time.monotonic() + 30
    while (counts := runtime())[0] == cancelled_before:
        assert time.monotonic() < deadline, "the runtime never counted a cancelled request"
        time.sleep(0.2)
    assert counts[1] - tokens_before < 1000  # it stopped long before the 1500 tokens asked for

    frontend = httpx.get(f"http://127.0.0.1:{deployment.openai}/metrics", timeout=10).text
    assert _sample(frontend, "tritonrepo_requests_cancelled_total", {"model": "scripted-llama"}) >= 1


def test_frontend_metrics_count_requests_tokens_and_latencies(deployment, client):
    url = f"http://127.0.0.1:{deployment.openai}/metrics"
    before = httpx.get(url, timeout=10).text
    client.chat.completions.create(model="scripted-llama", messages=MESSAGES, max_tokens=200)
    list(client.chat.completions.create(model="scripted-llama", messages=MESSAGES, max_tokens=200, stream=True))
    _post(deployment, "/chat/completions", {"model": "scripted-llama", "messages": MESSAGES}, key="nope")
    after = httpx.get(url, timeout=10).text

    def grew(name: str, labels: dict[str, str]) -> float:
        return _sample(after, name, labels) - _sample(before, name, labels)

    ok, denied = {"endpoint": "/v1/chat/completions", "status": "200"}, {"endpoint": "/v1/chat/completions"}
    assert grew("tritonrepo_http_requests_total", ok) == 2
    assert grew("tritonrepo_http_requests_total", {**denied, "status": "401"}) == 1
    model = {"model": "scripted-llama"}
    assert grew("tritonrepo_generation_tokens_total", model) > 10
    assert grew("tritonrepo_prompt_tokens_total", model) > 3
    assert grew("tritonrepo_time_to_first_token_seconds_count", model) == 2
    assert grew("tritonrepo_inter_token_latency_seconds_count", model) > 10  # the streamed one, token by token
    assert grew("tritonrepo_e2e_request_latency_seconds_count", model) == 2
