"""Tests for tritonrepo/frontend/router.py and app.py over HTTP (ASGI in process) and with the openai client."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
from pathlib import Path

import httpx
import pytest
from frontend_fixtures import REPLY, ScriptedGenerator, make_repository, make_tokenizer_dir

from tritonrepo.errors import ServerError
from tritonrepo.frontend.app import FrontendSettings, FrontendThread, build_app, load_repository_info
from tritonrepo.frontend.triton_client import GenerationError

CHAT = {"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    return make_tokenizer_dir(tmp_path_factory.mktemp("tok") / "tokenizer")


@pytest.fixture(scope="module")
def repository(tmp_path_factory, tokenizer_dir) -> Path:
    return make_repository(tmp_path_factory.mktemp("repo"), tokenizer_dir)


@pytest.fixture
def make_app(repository):
    def make(generator=None, **settings):
        generator = generator or ScriptedGenerator()
        return build_app(FrontendSettings(repository=repository, **settings), generator=generator), generator

    return make


def client_for(app) -> httpx.AsyncClient:
    # raise_app_exceptions=False: a 500 must come back as a response, as it would from uvicorn.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


async def post(app, path: str, **kwargs) -> httpx.Response:
    async with client_for(app) as client:
        return await client.post(path, **kwargs)


def run(coro):
    return asyncio.run(coro)


def assert_openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# --- invalid requests ----------------------------------------------------------------------------------------------
def test_malformed_json_is_400_not_422(make_app):
    app, _ = make_app()
    response = run(
        post(app, "/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    )
    assert "not valid JSON" in assert_openai_error(response, 400)["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**CHAT, "temperature": "hot"}, "temperature"),
        ({**CHAT, "max_tokens": 0}, "max_tokens"),
        ({**CHAT, "max_tokens": -5}, "max_tokens"),
        ({**CHAT, "messages": []}, "messages"),
        ({**CHAT, "messages": [{"role": "user", "content": 5}]}, "messages.0.content"),
        ({"model": "tiny-llama"}, "messages"),
    ],
)
def test_wrong_values_are_400_naming_the_field(make_app, body, field):
    app, generator = make_app()
    error = assert_openai_error(run(post(app, "/v1/chat/completions", json=body)), 400)
    assert error["param"] == field and field in error["message"]
    assert error["type"] == "invalid_request_error" and not generator.calls


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/chat/completions", {**CHAT, "top_k": 2**40}, "top_k"),  # was a 500: "'i' format requires ..."
        ("/v1/completions", {"prompt": "hi", "top_k": 2**31}, "top_k"),
        ("/v1/completions", {"prompt": "hi", "seed": 2**64}, "seed"),
        ("/v1/completions", {"prompt": "hi", "max_tokens": 2**31}, "max_tokens"),
        ("/v1/chat/completions", {**CHAT, "min_tokens": 2**33}, "min_tokens"),
        ("/v1/chat/completions", {**CHAT, "temperature": 2.5}, "temperature"),
        ("/v1/chat/completions", {**CHAT, "repetition_penalty": 0}, "repetition_penalty"),
    ],
)
def test_numbers_beyond_their_range_are_400_naming_the_field(make_app, path, body, field):
    app, generator = make_app()
    error = assert_openai_error(run(post(app, path, json=body)), 400)
    assert error["param"] == field and field in error["message"] and not generator.calls


def test_non_finite_numbers_are_400_naming_the_field(make_app):
    app, _ = make_app()
    body = b'{"model": "tiny-llama", "prompt": "hi", "temperature": NaN}'
    response = run(post(app, "/v1/completions", content=body, headers={"content-type": "application/json"}))
    error = assert_openai_error(response, 400)
    assert error["param"] == "temperature" and "finite" in error["message"]


@pytest.mark.parametrize(
    ("path", "extra", "field"),
    [
        ("/v1/chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ("/v1/chat/completions", {"tool_choice": "required"}, "tool_choice"),
        ("/v1/chat/completions", {"response_format": {"type": "json_object"}}, "response_format"),
        ("/v1/chat/completions", {"logit_bias": {"5": 10}}, "logit_bias"),
        ("/v1/chat/completions", {"functions": [{"name": "f"}]}, "functions"),
        ("/v1/completions", {"suffix": "the end"}, "suffix"),
        ("/v1/completions", {"best_of": 2}, "best_of"),
        ("/v1/completions", {"logit_bias": {"5": 10}}, "logit_bias"),
    ],
)
def test_features_this_server_lacks_are_400_naming_them(make_app, path, extra, field):
    app, generator = make_app()
    body = {**(CHAT if path == "/v1/chat/completions" else {"prompt": "hi"}), **extra}
    error = assert_openai_error(run(post(app, path, json=body)), 400)
    assert error["param"] == field and error["message"].startswith(field) and "not supported" in error["message"]
    assert not generator.calls


def test_an_unknown_field_is_400_naming_it(make_app):
    app, generator = make_app()
    error = assert_openai_error(run(post(app, "/v1/chat/completions", json={**CHAT, "min_p": 0.1})), 400)
    assert error == {
        "message": "Unrecognized request argument supplied: min_p",
        "type": "invalid_request_error",
        "param": "min_p",
        "code": None,
    }
    assert not generator.calls


def test_values_that_ask_for_nothing_are_served(make_app):
    app, generator = make_app()
    neutral = {"tools": [], "tool_choice": "none", "response_format": {"type": "text"}, "logit_bias": {}, "user": "u"}
    assert run(post(app, "/v1/chat/completions", json={**CHAT, **neutral})).status_code == 200
    completion = {"prompt": "hi", "suffix": "", "best_of": 1, "n": 1}
    assert run(post(app, "/v1/completions", json=completion)).status_code == 200
    assert len(generator.calls) == 2


def test_empty_prompt_and_non_object_body_are_400(make_app):
    app, _ = make_app()
    assert assert_openai_error(run(post(app, "/v1/completions", json={"prompt": ""})), 400)["param"] == "prompt"
    assert assert_openai_error(run(post(app, "/v1/completions", json=[1, 2])), 400)["message"]


def test_too_large_max_tokens_is_400_with_numbers(make_app):
    app, _ = make_app()
    error = assert_openai_error(run(post(app, "/v1/completions", json={"prompt": "hi", "max_tokens": 4096})), 400)
    assert "4096" in error["message"] and "128" in error["message"]


def test_unknown_model_and_unknown_route_use_the_openai_error_shape(make_app):
    app, _ = make_app()
    error = assert_openai_error(run(post(app, "/v1/chat/completions", json={**CHAT, "model": "nope"})), 404)
    assert "tiny-llama" in error["message"] and error["code"] == "model_not_found"
    assert_openai_error(run(post(app, "/v1/embeddings", json={})), 404)


def test_server_keeps_serving_after_bad_requests(make_app):
    app, _ = make_app(ScriptedGenerator(error=GenerationError(400, "bad input"), error_after=0))

    async def scenario():
        async with client_for(app) as client:
            bad_json = await client.post("/v1/completions", content=b"{", headers={"content-type": "application/json"})
            bad_generation = await client.post("/v1/completions", json={"prompt": "hi"})
            app.state.generator.error = None
            good = await client.post("/v1/completions", json={"prompt": "hi"})
            return bad_json, bad_generation, good

    bad_json, bad_generation, good = run(scenario())
    assert bad_json.status_code == 400
    assert assert_openai_error(bad_generation, 400)["message"] == "bad input"
    assert good.status_code == 200 and good.json()["choices"][0]["text"] == REPLY


def test_unexpected_error_is_a_generic_500(make_app):
    class Broken(ScriptedGenerator):
        async def generate(self, model, request):
            raise RuntimeError("secret internals")
            yield  # pragma: no cover

    app, _ = make_app(Broken())
    error = assert_openai_error(run(post(app, "/v1/completions", json={"prompt": "hi"})), 500)
    assert "secret" not in error["message"] and error["type"] == "server_error"


# --- models and health ---------------------------------------------------------------------------------------------
def test_models_lists_alias_and_entry_points_only(make_app):
    app, _ = make_app()

    async def get():
        async with client_for(app) as client:
            return await client.get("/v1/models"), await client.get("/v1/models/ensemble")

    listing, one = run(get())
    ids = [card["id"] for card in listing.json()["data"]]
    assert ids == ["tiny-llama", "ensemble", "tensorrt_llm_bls"]
    assert not {"preprocessing", "postprocessing", "tensorrt_llm"} & set(ids)
    assert one.json()["object"] == "model" and one.json()["id"] == "ensemble"


@pytest.mark.parametrize(("ready", "status"), [(True, 200), (False, 503)])
def test_health_follows_generator_readiness(make_app, ready, status):
    app, _ = make_app(ScriptedGenerator(ready=ready))

    async def get():
        async with client_for(app) as client:
            return await client.get("/health")

    assert run(get()).status_code == status


def test_health_says_why_while_serve_reports_triton_broken(make_app):
    generator = ScriptedGenerator(ready=True)
    generator.unavailable = "the Python backend stub of model instance tensorrt_llm_0_0 (pid 7) died"
    app, _ = make_app(generator)

    async def get():
        async with client_for(app) as client:
            return await client.get("/health")

    answer = run(get())
    assert answer.status_code == 503
    assert answer.json() == {"status": "unavailable", "reason": generator.unavailable}


# --- streaming -----------------------------------------------------------------------------------------------------
def sse_events(text: str) -> list[str]:
    assert text.endswith("data: [DONE]\n\n")
    events = text.split("\n\n")[:-1]
    assert all(event.startswith("data: ") for event in events)
    return [event[len("data: ") :] for event in events]


def test_sse_format_and_content(make_app):
    app, _ = make_app()
    response = run(post(app, "/v1/chat/completions", json={**CHAT, "stream": True}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [json.loads(e) for e in sse_events(response.text)[:-1]]
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == REPLY


def test_error_mid_stream_becomes_error_event_then_done(make_app):
    app, _ = make_app(ScriptedGenerator(error=GenerationError(500, "engine fell over"), error_after=2))
    response = run(post(app, "/v1/completions", json={"prompt": "hi", "stream": True}))
    events = sse_events(response.text)
    assert json.loads(events[-2])["error"]["message"] == "engine fell over"
    assert events[-1] == "[DONE]"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_stream_failing_before_any_text_is_an_http_error(make_app, path):
    app, _ = make_app(ScriptedGenerator(error=GenerationError(400, "prompt rejected by the engine"), error_after=0))
    body = {**CHAT, "stream": True} if "chat" in path else {"prompt": "hi", "stream": True}
    error = assert_openai_error(run(post(app, path, json=body)), 400)
    assert error["message"] == "prompt rejected by the engine"


def test_completion_routes_refuse_other_methods_in_the_openai_shape(make_app):
    app, _ = make_app()

    async def get():
        async with client_for(app) as client:
            return await client.get("/v1/chat/completions")

    response = run(get())
    assert_openai_error(response, 405)
    assert response.headers["allow"] == "POST"


def test_openapi_documents_the_completion_routes_with_their_models(make_app):
    app, _ = make_app()

    async def get():
        async with client_for(app) as client:
            return (await client.get("/openapi.json")).json()

    schema = run(get())
    components = schema["components"]["schemas"]
    for path, request_model in (
        ("/v1/chat/completions", "ChatCompletionRequest"),
        ("/v1/completions", "CompletionRequest"),
    ):
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": f"#/components/schemas/{request_model}"}
        assert "max_tokens" in components[request_model]["properties"]
    refs = set(_refs(schema))
    assert refs and all(ref.removeprefix("#/components/schemas/") in components for ref in refs)  # none dangle


def _refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


async def call_with_disconnect(
    app, path: str, body: dict, disconnect: asyncio.Event, *, slow_client: bool = False
) -> list[dict]:
    """Drives the ASGI app as uvicorn does; the client goes away once `disconnect` is set.

    slow_client: sending response bytes blocks (a client that stopped reading), so the event stream is left
    suspended at a yield rather than inside an await when the disconnect arrives.
    """
    messages: list[dict] = []
    request_sent = False

    async def receive():
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
        await disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message):
        messages.append(message)
        if slow_client and b'"content":"h"' in message.get("body", b""):  # mid-generation
            disconnect.set()
            await asyncio.Event().wait()

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"host", b"test")],
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    await asyncio.wait_for(app(scope, receive, send), timeout=5)
    return messages


@pytest.mark.parametrize("stream", [True, False])
def test_client_disconnect_while_waiting_for_triton_cancels_the_generation(make_app, stream):
    app, generator = make_app(ScriptedGenerator(hang_after=2))
    messages = run(call_with_disconnect(app, "/v1/chat/completions", {**CHAT, "stream": stream}, generator.hanging))
    assert generator.closed_early == 1 and generator.finished == 0
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    if stream:  # what was generated before the disconnect went out; nothing after it
        assert b'"content":"h"' in body and b"[DONE]" not in body
    else:  # nobody reads it, but the handler must end cleanly rather than with a 500
        assert messages[0]["status"] == 499 and b"closed the request" in body


def test_client_disconnect_while_stream_is_paused_closes_the_generation_at_once(make_app):
    app, generator = make_app(ScriptedGenerator())

    async def scenario():
        await call_with_disconnect(
            app, "/v1/chat/completions", {**CHAT, "stream": True}, asyncio.Event(), slow_client=True
        )
        return generator.closed_early  # read before the event loop could run any garbage-collection cleanup

    assert run(scenario()) == 1 and generator.finished == 0


def test_shutdown_ends_open_streams_at_the_next_event(make_app):
    app, generator = make_app()
    asked = itertools.count()
    app.state.stopping = lambda: next(asked) >= 1  # asked after each event: uvicorn began shutting down after the first
    events = sse_events(run(post(app, "/v1/chat/completions", json={**CHAT, "stream": True})).text)
    assert json.loads(events[1])["choices"][0]["delta"] == {"content": "h"}
    assert "shutting down" in json.loads(events[2])["error"]["message"] and events[3:] == ["[DONE]"]
    assert generator.closed_early == 1


# --- the official openai client ------------------------------------------------------------------------------------
def openai_client(app):
    import openai

    return openai.AsyncOpenAI(
        base_url="http://test/v1",
        api_key="unused",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test"),
    )


def test_openai_client_chat_non_streamed_and_streamed(make_app):
    app, _ = make_app()

    async def scenario():
        client = openai_client(app)
        messages = [{"role": "user", "content": "hi"}]
        completion = await client.chat.completions.create(model="tiny-llama", messages=messages, max_tokens=50)
        stream = await client.chat.completions.create(
            model="tiny-llama", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
        return completion, chunks

    completion, chunks = run(scenario())
    assert completion.choices[0].message.content == REPLY and completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 6
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert chunks[-1].usage.total_tokens == completion.usage.total_tokens


def test_openai_client_completions_and_errors(make_app):
    import openai

    app, _ = make_app()

    async def scenario():
        client = openai_client(app)
        completion = await client.completions.create(model="ensemble", prompt="hi", max_tokens=6)
        with pytest.raises(openai.NotFoundError):
            await client.completions.create(model="missing", prompt="hi")
        with pytest.raises(openai.BadRequestError) as caught:
            await client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}], n=2)
        with pytest.raises(openai.BadRequestError) as tools:
            await client.chat.completions.create(
                model="tiny-llama",
                messages=[{"role": "user", "content": "hi"}],
                tools=[{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
            )
        return completion, caught.value, tools.value

    completion, error, tools = run(scenario())
    assert completion.choices[0].text == REPLY and completion.choices[0].finish_reason == "length"
    assert "n > 1" in error.message
    assert tools.body["param"] == "tools" and "not supported" in tools.body["message"]


# --- app.py: reading the repository and running ---------------------------------------------------------------------
def test_repository_without_manifest_falls_back_to_layout(tmp_path, tokenizer_dir):
    for name in ("ensemble", "preprocessing", "postprocessing", "tensorrt_llm"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.pbtxt").write_text(f'name: "{name}"\n')
    (tmp_path / "preprocessing" / "config.pbtxt").write_text(
        'name: "preprocessing"\nbackend: "python"\n'
        f'parameters {{ key: "tokenizer_dir" value: {{ string_value: "{tokenizer_dir}" }} }}\n'
    )
    info = load_repository_info(tmp_path, served_model_name="my-llm")
    assert info.models.names() == ["my-llm", "ensemble"] and info.tokenizer_dir == tokenizer_dir
    assert info.models.limits.max_seq_len is None


def test_generation_defaults_come_from_the_manifest_else_the_tokenizer_folder(tmp_path, tokenizer_dir):
    import shutil

    recorded = {"do_sample": True, "temperature": 0.6, "top_p": 0.95}
    ours = make_repository(tmp_path / "ours", tokenizer_dir)
    manifest = json.loads((ours / "tritonrepo.json").read_text())
    (ours / "tritonrepo.json").write_text(json.dumps({**manifest, "generation_defaults": recorded}))
    assert load_repository_info(ours).generation_defaults == recorded
    # No record (a repository made elsewhere, or before builds recorded it): the tokenizer folder is often the
    # checkpoint itself, whose generation_config.json says the same.
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(tokenizer_dir, checkpoint)
    (checkpoint / "generation_config.json").write_text(json.dumps({"eos_token_id": 1, "do_sample": False}))
    older = make_repository(tmp_path / "older", checkpoint)
    assert load_repository_info(older).generation_defaults == {"do_sample": False}
    assert load_repository_info(make_repository(tmp_path / "plain", tokenizer_dir)).generation_defaults == {}


def test_the_app_serves_with_the_recorded_defaults(tmp_path, tokenizer_dir):
    repository = make_repository(tmp_path / "repo", tokenizer_dir)
    manifest = json.loads((repository / "tritonrepo.json").read_text())
    recorded = {"do_sample": True, "temperature": 0.6, "top_p": 0.95}
    (repository / "tritonrepo.json").write_text(json.dumps({**manifest, "generation_defaults": recorded}))
    generator = ScriptedGenerator()
    app = build_app(FrontendSettings(repository=repository), generator=generator)
    assert run(post(app, "/v1/completions", json={"prompt": "hi"})).status_code == 200
    params = generator.calls[0][1]
    assert (params.temperature, params.top_p, params.top_k) == (0.6, 0.95, None)


def test_repository_with_missing_tokenizer_is_a_clear_error(tmp_path, tokenizer_dir):
    make_repository(tmp_path, tokenizer_dir)
    manifest = json.loads((tmp_path / "tritonrepo.json").read_text())
    (tmp_path / "tritonrepo.json").write_text(json.dumps({**manifest, "tokenizer_dir": "nowhere"}))
    with pytest.raises(ServerError, match="Tokenizer directory .*nowhere"):
        load_repository_info(tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_frontend_thread_serves_until_stopped_and_frees_its_port(repository):
    # serve runs the front end on a thread of its own (its main thread supervises tritonserver)
    port = free_port()
    frontend = FrontendThread(FrontendSettings(repository=repository, triton_grpc_url="127.0.0.1:1", port=port))
    frontend.start()  # returns once it listens
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 503  # no Triton behind it
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).json()
        assert models["data"][0]["id"] == "tiny-llama"
    finally:
        frontend.stop()
    assert not frontend.alive
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))


def test_the_frontend_thread_says_when_it_cannot_listen(repository):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        frontend = FrontendThread(FrontendSettings(repository=repository, triton_grpc_url="127.0.0.1:1", port=port))
        with pytest.raises(ServerError, match=f"did not start on 127.0.0.1:{port}"):
            frontend.start(timeout=20)
