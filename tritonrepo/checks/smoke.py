"""`tritonrepo smoke`: check a running deployment end to end with tritonclient (HTTP, gRPC) and the OpenAI endpoint."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tritonrepo.errors import SmokeError

PROMPT = "The capital of France is"
MAX_TOKENS = 8
# A model may end its answer at once (an end token first: scripted-llama does for any prompt but its own), which says
# nothing about the transports checked here; where the entry point takes a minimum length (`min_length` in ours and
# older upstream ensembles, `min_tokens` in newer ones), MAX_TOKENS tokens are asked for.
MIN_LENGTH_INPUTS = ("min_length", "min_tokens")


@dataclass(frozen=True)
class SmokeTargets:
    http_url: str = "127.0.0.1:8000"
    grpc_url: str = "127.0.0.1:8001"
    openai_url: str | None = "http://127.0.0.1:9000/v1"
    timeout: float = 60.0
    dynamo: bool = False  # a Dynamo deployment: only the OpenAI endpoint exists, Triton's protocol does not apply


# Triton's own checks, listed as not applicable against a Dynamo deployment (its frontend speaks only OpenAI here)
TRITON_CHECKS = ("server live", "server ready", "repository index", "entry points over HTTP and gRPC streaming")


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float
    applies: bool = True  # False: not applicable to this deployment (neither passed nor failed)

    def as_dict(self) -> dict:
        return asdict(self)


def run_smoke(targets: SmokeTargets) -> list[CheckResult]:
    if targets.dynamo:
        return _dynamo_smoke(targets)
    import tritonclient.http as http_client

    http = http_client.InferenceServerClient(targets.http_url, network_timeout=targets.timeout)
    results = [_check("server live", lambda: _expect(http.is_server_live(), "not live"))]
    results.append(_check("server ready", lambda: _expect(http.is_server_ready(), "not ready")))
    models: list[str] = []
    results.append(_check("repository index", lambda: _index(http, models)))
    for model in models:
        results.append(_check(f"model ready: {model}", lambda m=model: _expect(http.is_model_ready(m), "not ready")))
    entry_points = [m for m in ("ensemble", "tensorrt_llm_bls") if m in models]
    for model in entry_points:
        results.append(_check(f"{model} over HTTP", lambda m=model: _http_generate(targets, m, _min_length(http, m))))
        results.append(
            _check(f"{model} over gRPC streaming", lambda m=model: _grpc_stream(targets, m, _min_length(http, m)))
        )
    if targets.openai_url:
        results.append(_check("OpenAI chat (non-stream)", lambda: _openai_chat(targets, stream=False)))
        results.append(_check("OpenAI chat (stream)", lambda: _openai_chat(targets, stream=True)))
    return results


def _dynamo_smoke(targets: SmokeTargets) -> list[CheckResult]:
    reason = "not applicable: a Dynamo deployment has no Triton endpoint (its frontend serves OpenAI only)"
    results = [CheckResult(name, True, reason, 0.0, applies=False) for name in TRITON_CHECKS]
    if not targets.openai_url:
        raise SmokeError("a Dynamo deployment is checked through its OpenAI endpoint: give --openai-url")
    results.append(_check("OpenAI chat (non-stream)", lambda: _openai_chat(targets, stream=False)))
    results.append(_check("OpenAI chat (stream)", lambda: _openai_chat(targets, stream=True)))
    return results


def _check(name: str, action: Callable[[], str | None]) -> CheckResult:
    started = time.monotonic()
    try:
        detail = action() or "ok"
        ok = True
    except Exception as error:  # a smoke check reports every failure as a row, it never crashes the run
        detail, ok = f"{type(error).__name__}: {error}", False
    return CheckResult(name, ok, detail.replace("\n", " ")[:160], time.monotonic() - started)


def _expect(condition: bool, message: str) -> str:
    if not condition:
        raise AssertionError(message)
    return "ok"


def _index(http, models: list[str]) -> str:
    index = http.get_model_repository_index()
    models.extend(entry["name"] for entry in index)
    if not models:
        raise AssertionError("the repository has no models")
    return ", ".join(models)


def _min_length(http, model: str) -> str | None:
    """The entry point's minimum-length input, if it has one."""
    names = {tensor["name"] for tensor in http.get_model_config(model).get("input", [])}
    return next((name for name in MIN_LENGTH_INPUTS if name in names), None)


def _http_generate(targets: SmokeTargets, model: str, min_length: str | None) -> str:
    """Triton's generate extension: works for decoupled models, which plain HTTP infer rejects."""
    import httpx

    body = {"text_input": PROMPT, "max_tokens": MAX_TOKENS, "exclude_input_in_output": True}
    if min_length:
        body[min_length] = MAX_TOKENS
    response = httpx.post(f"http://{targets.http_url}/v2/models/{model}/generate", json=body, timeout=targets.timeout)
    if response.status_code != 200:
        raise AssertionError(f"HTTP {response.status_code}: {response.text[:200]}")
    # Triton copies BYTES outputs into the JSON verbatim; a character cut by max_tokens is not valid UTF-8 there
    payload = json.loads(response.content.decode("utf-8", "replace"))
    text, tokens = payload.get("text_output"), payload.get("num_output_tokens")
    # Empty text is an answer when tokens were generated (special tokens decode to nothing), as in the stream check.
    if not isinstance(text, str) or not (text or tokens):
        raise AssertionError(f"no text_output in {response.text[:200]}")
    return f"{tokens} tokens: {text!r}" if tokens is not None else repr(text)


def _grpc_stream(targets: SmokeTargets, model: str, min_length: str | None) -> str:
    import numpy as np
    import tritonclient.grpc as grpc_client

    responses: queue.Queue = queue.Queue()
    client = grpc_client.InferenceServerClient(targets.grpc_url)
    inputs = []
    tensors = [
        ("text_input", np.array([[PROMPT.encode()]], dtype=object), "BYTES"),
        ("max_tokens", np.array([[MAX_TOKENS]], dtype=np.int32), "INT32"),
        ("stream", np.array([[True]]), "BOOL"),
        ("exclude_input_in_output", np.array([[True]]), "BOOL"),
    ]
    if min_length:
        tensors.append((min_length, np.array([[MAX_TOKENS]], dtype=np.int32), "INT32"))
    for name, value, dtype in tensors:
        tensor = grpc_client.InferInput(name, list(value.shape), dtype)
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer(model, inputs, enable_empty_final_response=True)
        chunks = b""
        count = 0
        while True:
            result, error = responses.get(timeout=targets.timeout)
            if error is not None:
                raise AssertionError(str(error))
            final = result.get_response().parameters.get("triton_final_response")
            output = result.as_numpy("text_output")
            if output is not None:
                chunks += b"".join(output.reshape(-1))
                count += 1
            if final is not None and final.bool_param:
                break
    finally:
        client.stop_stream()
        client.close()
    if count < 2:
        raise AssertionError(f"expected several streamed responses, got {count}")
    return f"{count} responses: {chunks.decode('utf-8', 'replace')!r}"


def _openai_chat(targets: SmokeTargets, *, stream: bool) -> str:
    import httpx

    base = targets.openai_url.rstrip("/")
    models = httpx.get(f"{base}/models", timeout=targets.timeout).json()["data"]
    body = {
        "model": models[0]["id"],
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }
    if not stream:
        response = httpx.post(f"{base}/chat/completions", json=body, timeout=targets.timeout)
        if response.status_code != 200:
            raise AssertionError(f"HTTP {response.status_code}: {response.text[:200]}")
        payload = response.json()
        message = payload["choices"][0]["message"]
        tokens = payload["usage"]["completion_tokens"]
        return f"{tokens} tokens: {_shown(message.get('content') or '', message.get('reasoning_content') or '')}"
    text, reasoning, events = "", "", 0
    with httpx.stream("POST", f"{base}/chat/completions", json=body, timeout=targets.timeout) as response:
        if response.status_code != 200:
            raise AssertionError(f"HTTP {response.status_code}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            events += 1
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
                reasoning += choice.get("delta", {}).get("reasoning_content") or ""
    if events < 2:
        raise AssertionError(f"expected several stream events, got {events}")
    return f"{events} events: {_shown(text, reasoning)}"


def _shown(content: str, reasoning: str) -> str:
    """The answer, and the reasoning where the model thinks first (a short reply may hold nothing else yet)."""
    return f"{content!r} (reasoning: {reasoning!r})" if reasoning else repr(content)


def format_table(results: list[CheckResult]) -> str:
    width = max(len(r.name) for r in results)
    lines = [f"{'check':<{width}}  result  time    detail", f"{'-' * width}  ------  ------  ------"]
    for r in results:
        result = "N/A" if not r.applies else "PASS" if r.ok else "FAIL"
        lines.append(f"{r.name:<{width}}  {result:<6}  {r.seconds:5.2f}s  {r.detail}")
    applicable = [r for r in results if r.applies]
    failed = sum(not r.ok for r in applicable)
    skipped = len(results) - len(applicable)
    lines.append(
        f"{len(applicable) - failed} of {len(applicable)} checks passed"
        + (f"; {skipped} not applicable to this deployment" if skipped else "")
    )
    return "\n".join(lines)


def raise_on_failure(results: list[CheckResult]) -> None:
    failed = [r.name for r in results if r.applies and not r.ok]
    if failed:
        raise SmokeError(f"{len(failed)} smoke check(s) failed: {', '.join(failed)}")
