"""Tests of request admission: API keys, body size limit and concurrency limit, in process and over real HTTP."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from conftest import free_port
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tritonrepo.errors import ServerError
from tritonrepo.frontend.admission import (
    AdmissionStack,
    ApiKeyMiddleware,
    BodySizeLimitMiddleware,
    ConcurrencyLimitMiddleware,
    admission_stack,
    api_keys_from,
)

KEY = "sk-right-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = "/v1/chat/completions"


# --- a small app: a JSON endpoint, a body echo, and streams held open by events ------------------------------------
class Backend:
    """What the app saw; each stream stays open until its gate is opened."""

    def __init__(self) -> None:
        self.gates: collections.defaultdict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
        self.started: list[str] = []
        self.finished: list[str] = []
        self.closed: list[str] = []
        self.echoed: list[int] = []
        self.loop: asyncio.AbstractEventLoop | None = None

    def open_gate_from_thread(self, name: str) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(lambda: self.gates[name].set())


def make_app(backend: Backend) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict:
        return {"object": "list", "data": []}

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict:
        body = await request.body()
        backend.echoed.append(len(body))
        return {"bytes": len(body)}

    @app.post(CHAT)
    async def chat(request: Request) -> StreamingResponse:
        raw = await request.body()
        name = json.loads(raw)["name"]
        backend.loop = asyncio.get_running_loop()
        backend.started.append(name)

        async def events() -> AsyncIterator[str]:
            try:
                yield f"data: {json.dumps({'name': name, 'bytes': len(raw)})}\n\n"
                await backend.gates[name].wait()
                yield "data: [DONE]\n\n"
                backend.finished.append(name)
            finally:
                backend.closed.append(name)

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def make_stack(backend: Backend, **options) -> AdmissionStack:
    settings = dict(api_keys=(KEY, "sk-second"), max_body_bytes=1024, max_in_flight=1, max_queued=1, queue_timeout_s=30)
    return admission_stack(make_app(backend), **{**settings, **options})


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def run(coro):
    # The bound turns a hung request (a leaked slot, a lost message) into a failure instead of a stuck test run.
    return asyncio.run(asyncio.wait_for(coro, timeout=10))


async def until(condition: Callable[[], bool], what: str) -> None:
    """Waits for a state the test then asserts on; the bound only turns a hang into a readable failure."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def until_sync(condition: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


def openai_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def drive(
    app, path: str, chunks: list[bytes], *, content_length: bool = True, headers=(), leave: asyncio.Event | None = None
) -> tuple[list[dict], list[int]]:
    """Calls the ASGI app as uvicorn does; the client goes away when `leave` is set (else when the response ends).

    Returns the messages the app sent and, per receive() call, how many body bytes had been handed out before it.
    """
    sent: list[dict] = []
    receive_calls: list[int] = []
    queue = collections.deque(chunks)
    handed = 0
    done = asyncio.Event()

    async def receive() -> dict:
        nonlocal handed
        receive_calls.append(handed)
        if queue:
            body = queue.popleft()
            handed += len(body)
            return {"type": "http.request", "body": body, "more_body": bool(queue)}
        await (leave or done).wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    head = [(b"host", b"test"), (b"authorization", f"Bearer {KEY}".encode()), *headers]
    if content_length:
        head.append((b"content-length", str(sum(map(len, chunks))).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": head,
        "client": ("127.0.0.1", 5000),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return sent, receive_calls


def starts(sent: list[dict]) -> list[int]:
    return [m["status"] for m in sent if m["type"] == "http.response.start"]


def body_of(sent: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# --- API keys ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer sk-wrong-key-456"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": "Bearer"}],
    ids=["none", "wrong-key", "wrong-scheme", "empty-bearer"],
)
def test_v1_without_a_valid_key_is_401_and_never_echoes_the_key(headers, caplog):
    backend = Backend()
    stack = make_stack(backend)

    async def scenario():
        async with client_for(stack.app) as client:
            return await client.post("/v1/echo", content=b"{}", headers=headers)

    with caplog.at_level("DEBUG", logger="tritonrepo.frontend.admission"):
        response = run(scenario())
    error = openai_error(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    assert error["code"] == "invalid_api_key" and "Authorization: Bearer" in error["message"]
    for secret in ("sk-wrong-key-456", KEY):
        assert secret not in response.text and secret not in caplog.text
    assert "rejected POST /v1/echo" in caplog.text
    assert backend.echoed == []  # the app never ran


@pytest.mark.parametrize("key", [KEY, "sk-second"])
def test_any_configured_key_is_accepted(key):
    stack = make_stack(Backend())

    async def scenario():
        async with client_for(stack.app) as client:
            return await client.get("/v1/models", headers={"Authorization": f"bearer  {key} "})

    response = run(scenario())
    assert response.status_code == 200 and response.json() == {"object": "list", "data": []}


def test_health_stays_open_without_a_key():
    stack = make_stack(Backend())

    async def scenario():
        async with client_for(stack.app) as client:
            return await client.get("/health"), await client.get("/v1/models")

    health, models = run(scenario())
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert models.status_code == 401


def test_no_keys_means_no_authentication():
    backend = Backend()
    app = ApiKeyMiddleware(make_app(backend), api_keys=[])

    async def scenario():
        async with client_for(app) as client:
            return await client.post("/v1/echo", content=b"abc")

    assert run(scenario()).json() == {"bytes": 3}


def test_the_prefix_is_matched_below_the_root_path():
    # Behind a proxy that mounts the app at /api, the route /v1/models arrives as /api/v1/models: still protected.
    app = ApiKeyMiddleware(make_app(Backend()), api_keys=[KEY])
    transport = httpx.ASGITransport(app=app, root_path="/api")

    async def scenario():
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/api/v1/models"), await client.get("/api/v1/models", headers=AUTH)

    without, with_key = run(scenario())
    assert without.status_code == 401 and with_key.status_code == 200


def test_cors_preflight_is_not_asked_for_a_key():
    app = ApiKeyMiddleware(make_app(Backend()), api_keys=[KEY])

    async def scenario():
        async with client_for(app) as client:
            preflight = await client.options(CHAT, headers={"Access-Control-Request-Method": "POST"})
            plain = await client.options(CHAT)
            return preflight, plain

    preflight, plain = run(scenario())
    assert preflight.status_code == 405  # the app answered (it has no CORS), not the key check
    assert plain.status_code == 401


def test_api_keys_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.setenv("TRITONREPO_API_KEY", " sk-a, sk-b ,,sk-a ")
    assert api_keys_from(None) == ("sk-a", "sk-b")
    assert api_keys_from("sk-flag") == ("sk-flag",)  # the flag wins over the environment
    assert api_keys_from("") == ()  # an explicitly empty flag turns authentication off
    monkeypatch.delenv("TRITONREPO_API_KEY")
    assert api_keys_from(None) == ()
    monkeypatch.setenv("OTHER_KEY_VAR", "sk-other")
    assert api_keys_from(None, env_var="OTHER_KEY_VAR") == ("sk-other",)


def test_api_keys_that_no_header_can_carry_are_refused_without_printing_them():
    with pytest.raises(ServerError) as caught:
        api_keys_from("sk-good,sk bad\u00e9")
    assert "sk bad" not in str(caught.value) and "--api-key" in str(caught.value)


# --- body size -----------------------------------------------------------------------------------------------------
def test_content_length_over_the_limit_is_413_before_the_body_is_read():
    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)
    sent, receive_calls = run(drive(stack.app, "/v1/echo", [b"x" * 101]))
    assert starts(sent) == [413] and receive_calls == []
    error = json.loads(body_of(sent))["error"]
    assert "100 bytes" in error["message"] and error["code"] == "request_too_large"
    assert backend.echoed == []


def test_bodies_up_to_the_limit_pass():
    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)

    async def scenario():
        async with client_for(stack.app) as client:
            return await client.post("/v1/echo", content=b"x" * 100, headers=AUTH)

    assert run(scenario()).json() == {"bytes": 100} and backend.echoed == [100]


def test_oversized_content_length_gets_413_over_http_too():
    stack = make_stack(Backend(), max_body_bytes=100)

    async def scenario():
        async with client_for(stack.app) as client:
            return await client.post("/v1/echo", json={"pad": "x" * 200}, headers=AUTH)

    assert "100 bytes" in openai_error(run(scenario()), 413)["message"]


def test_chunked_body_crossing_the_limit_gets_only_the_413():
    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)
    sent, receive_calls = run(drive(stack.app, "/v1/echo", [b"x" * 60, b"x" * 60, b"x" * 60], content_length=False))
    # One response only: the app's own (FastAPI answers a cut-off body with 400) is dropped.
    assert starts(sent) == [413] and len([m for m in sent if m["type"] == "http.response.body"]) == 1
    assert "100 bytes" in json.loads(body_of(sent))["error"]["message"]
    assert receive_calls == [0, 60]  # reading stopped at the chunk that crossed the limit
    assert backend.echoed == []


def test_chunked_body_over_the_limit_with_a_real_client():
    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"y" * 60

    async def scenario():
        async with client_for(stack.app) as client:
            return await client.post("/v1/echo", content=chunks(), headers=AUTH)

    response = run(scenario())
    assert "content-length" not in response.request.headers  # it really was sent chunked
    assert "100 bytes" in openai_error(response, 413)["message"] and backend.echoed == []


def test_chunked_body_under_the_limit_reaches_the_app_whole():
    backend = Backend()
    sent, _ = run(drive(make_stack(backend, max_body_bytes=100).app, "/v1/echo", [b"a" * 50] * 2, content_length=False))
    assert starts(sent) == [200] and json.loads(body_of(sent)) == {"bytes": 100}


# --- concurrency ---------------------------------------------------------------------------------------------------
def chat(name: str, pad: int = 0) -> dict:
    return {"name": name, "pad": "p" * pad}


def test_full_slots_and_queue_give_429_with_retry_after_and_the_queued_body_survives():
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=1, queue_timeout_s=7.5)
    limiter = stack.concurrency

    async def scenario():
        async with client_for(stack.app) as client:
            first = asyncio.create_task(client.post(CHAT, json=chat("a"), headers=AUTH))
            await until(lambda: backend.started == ["a"], "a runs")
            second = asyncio.create_task(client.post(CHAT, json=chat("b", pad=300), headers=AUTH))
            await until(lambda: limiter.queued == 1, "b waits")
            third = await client.post(CHAT, json=chat("c"), headers=AUTH)
            state = (limiter.in_flight, limiter.queued, list(backend.started))
            backend.gates["a"].set()
            backend.gates["b"].set()
            return third, state, await first, await second

    third, state, first, second = run(scenario())
    error = openai_error(third, 429)
    assert third.headers["retry-after"] == "8"  # whole seconds, rounded up from the queue timeout
    assert error["type"] == "rate_limit_exceeded" and error["code"] == "rate_limit_exceeded"
    assert state == (1, 1, ["a"])  # c never reached the app, b waited
    assert first.status_code == 200 and second.status_code == 200
    # b's body was read while it waited and handed to the app intact.
    assert json.loads(second.text.split("\n")[0].removeprefix("data: ")) == {"name": "b", "bytes": 321}
    assert backend.started == ["a", "b"] and (limiter.in_flight, limiter.queued) == (0, 0)


def test_queued_requests_run_in_arrival_order_as_slots_free():
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=2)
    limiter = stack.concurrency

    async def scenario():
        async with client_for(stack.app) as client:
            tasks = {}
            for count, name in enumerate("abc", 1):  # one at a time, so the arrival order is known
                tasks[name] = asyncio.create_task(client.post(CHAT, json=chat(name), headers=AUTH))
                await until(lambda c=count: limiter.in_flight + limiter.queued == c, f"{name} arrives")
            await until(lambda: backend.started == ["a"], "a runs")
            seen = [list(backend.started)]
            for name in "ab":
                backend.gates[name].set()
                await until(lambda n=name: n in backend.closed, f"{name} ends")
                await until(lambda: len(backend.started) == len(seen) + 1, "the next one starts")
                seen.append(list(backend.started))
            backend.gates["c"].set()
            return seen, [(await task).status_code for task in tasks.values()]

    seen, statuses = run(scenario())
    assert seen == [["a"], ["a", "b"], ["a", "b", "c"]] and statuses == [200, 200, 200]
    assert (limiter.in_flight, limiter.queued) == (0, 0)


def test_waiting_longer_than_the_queue_timeout_gives_429():
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=1, queue_timeout_s=0.05)
    limiter = stack.concurrency

    async def scenario():
        async with client_for(stack.app) as client:
            first = asyncio.create_task(client.post(CHAT, json=chat("a"), headers=AUTH))
            await until(lambda: backend.started == ["a"], "a runs")
            late = await client.post(CHAT, json=chat("b"), headers=AUTH)
            state = (limiter.in_flight, limiter.queued)
            backend.gates["a"].set()
            return late, state, await first

    late, state, first = run(scenario())
    error = openai_error(late, 429)
    assert late.headers["retry-after"] == "1" and "0.05 s" in error["message"]
    assert state == (1, 0) and backend.started == ["a"] and first.status_code == 200
    assert limiter.in_flight == 0


def test_unauthenticated_or_oversized_requests_never_take_a_slot():
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=0, max_body_bytes=100)

    async def scenario():
        async with client_for(stack.app) as client:
            first = asyncio.create_task(client.post(CHAT, json=chat("a"), headers=AUTH))
            await until(lambda: backend.started == ["a"], "a runs")
            anonymous = await client.post(CHAT, json=chat("b"))
            too_big = await client.post(CHAT, json=chat("c", pad=200), headers=AUTH)
            full = await client.post(CHAT, json=chat("d"), headers=AUTH)
            backend.gates["a"].set()
            await first
            return anonymous.status_code, too_big.status_code, full.status_code

    assert run(scenario()) == (401, 413, 429)
    assert stack.concurrency.in_flight == 0


def test_other_paths_are_not_limited():
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=0)

    async def scenario():
        async with client_for(stack.app) as client:
            first = asyncio.create_task(client.post(CHAT, json=chat("a"), headers=AUTH))
            await until(lambda: backend.started == ["a"], "a runs")
            models = await client.get("/v1/models", headers=AUTH)
            backend.gates["a"].set()
            await first
            return models.status_code

    assert run(scenario()) == 200


def test_a_queued_client_that_leaves_frees_its_place():
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=1)
    limiter = stack.concurrency

    async def scenario():
        async with client_for(stack.app) as client:
            first = asyncio.create_task(client.post(CHAT, json=chat("a"), headers=AUTH))
            await until(lambda: backend.started == ["a"], "a runs")
            leave = asyncio.Event()
            body = json.dumps(chat("b")).encode()
            queued = asyncio.create_task(drive(stack.app, CHAT, [body], leave=leave))
            await until(lambda: limiter.queued == 1, "b waits")
            leave.set()
            sent, _ = await queued
            after_leaving = (limiter.in_flight, limiter.queued)
            # The place is free again: a new request queues instead of getting 429, and runs once a finishes.
            third = asyncio.create_task(client.post(CHAT, json=chat("c"), headers=AUTH))
            await until(lambda: limiter.queued == 1, "c waits")
            backend.gates["a"].set()
            backend.gates["c"].set()
            return sent, after_leaving, await first, await third

    sent, after_leaving, first, third = run(scenario())
    assert sent == []  # nobody is left to answer
    assert after_leaving == (1, 0)
    assert first.status_code == 200 and third.status_code == 200
    assert backend.started == ["a", "c"] and (limiter.in_flight, limiter.queued) == (0, 0)


def test_a_queued_request_whose_chunked_body_grows_too_large_gets_413_and_leaves_the_queue():
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=1, max_body_bytes=100)
    limiter = stack.concurrency

    async def scenario():
        async with client_for(stack.app) as client:
            first = asyncio.create_task(client.post(CHAT, json=chat("a"), headers=AUTH))
            await until(lambda: backend.started == ["a"], "a runs")
            sent, _ = await drive(stack.app, CHAT, [b'{"name": "b", "pad": "', b"p" * 120, b'"}'], content_length=False)
            state = (limiter.in_flight, limiter.queued)
            backend.gates["a"].set()
            await first
            return sent, state

    sent, state = run(scenario())
    assert starts(sent) == [413] and state == (1, 0)
    assert backend.started == ["a"] and stack.concurrency.in_flight == 0


def test_a_cancelled_queued_request_gives_its_place_back():
    # What uvicorn does to requests still waiting when it shuts down.
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=1)
    limiter = stack.concurrency

    async def scenario():
        async with client_for(stack.app) as client:
            first = asyncio.create_task(client.post(CHAT, json=chat("a"), headers=AUTH))
            await until(lambda: backend.started == ["a"], "a runs")
            queued = asyncio.create_task(drive(stack.app, CHAT, [json.dumps(chat("b")).encode()]))
            await until(lambda: limiter.queued == 1, "b waits")
            queued.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await queued
            state = (limiter.in_flight, limiter.queued)
            backend.gates["a"].set()
            await first
            return state

    assert run(scenario()) == (1, 0)
    assert backend.started == ["a"] and limiter.in_flight == 0


def test_non_http_scopes_pass_through_every_middleware():
    seen: list[str] = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    app = BodySizeLimitMiddleware(ApiKeyMiddleware(ConcurrencyLimitMiddleware(inner, 1, 0, 1.0), [KEY]), 0)
    for kind in ("lifespan", "websocket"):
        run(app({"type": kind, "path": CHAT, "headers": [(b"content-length", b"10")]}, None, None))
    assert seen == ["lifespan", "websocket"]


@pytest.mark.parametrize(("timeout", "explicit", "expected"), [(0, None, 1), (0.2, None, 1), (7.5, None, 8), (0, 3, 3)])
def test_retry_after_is_whole_seconds_and_at_least_one(timeout, explicit, expected):
    limiter = ConcurrencyLimitMiddleware(make_app(Backend()), 1, 0, timeout, retry_after_s=explicit)
    assert limiter.retry_after_s == expected


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError, match="max_in_flight"):
        ConcurrencyLimitMiddleware(make_app(Backend()), 0, 1, 1.0)
    with pytest.raises(ValueError, match="max_queued"):
        ConcurrencyLimitMiddleware(make_app(Backend()), 1, -1, 1.0)


# --- over real HTTP: streams that end, and clients that leave mid-stream -------------------------------------------
@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, daemon=True, name="admission-test-server")
    thread.start()
    try:
        until_sync(lambda: server.started, "uvicorn listens")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_stream_holds_its_slot_until_it_ends_or_the_client_leaves():
    backend = Backend()
    stack = make_stack(backend, max_in_flight=1, max_queued=0)
    limiter = stack.concurrency

    with serving(stack.app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
        # A stream that runs to its end.
        with client.stream("POST", CHAT, json=chat("a")) as stream:
            lines = stream.iter_lines()
            assert json.loads(next(lines).removeprefix("data: "))["name"] == "a"
            assert limiter.in_flight == 1
            assert client.post(CHAT, json=chat("x")).status_code == 429  # the open stream holds the only slot
            backend.open_gate_from_thread("a")
            assert [line for line in lines if line] == ["data: [DONE]"]
        until_sync(lambda: limiter.in_flight == 0, "a's slot is released")

        # A stream whose client goes away in the middle (its gate never opens).
        with client.stream("POST", CHAT, json=chat("b")) as stream:
            lines = stream.iter_lines()  # kept: a discarded, half-read line iterator would close the response
            assert json.loads(next(lines).removeprefix("data: "))["name"] == "b"
            assert limiter.in_flight == 1 and backend.closed == ["a"]
        # Leaving the block with the body unread closes the connection: the server sees the disconnect.
        until_sync(lambda: limiter.in_flight == 0, "b's slot is released after the disconnect")
        assert "b" in backend.closed and "b" not in backend.finished

        # The slot really is free: the next stream is admitted.
        with client.stream("POST", CHAT, json=chat("c")) as stream:
            assert stream.status_code == 200
            backend.open_gate_from_thread("c")
            stream.read()

    assert backend.started == ["a", "b", "c"] and backend.finished == ["a", "c"]


def test_oversized_bodies_get_413_over_real_http():
    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"y" * 60

    with serving(stack.app) as url, httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
        chunked = client.post("/v1/echo", content=chunks())
        declared = client.post("/v1/echo", content=b"y" * 101)
        fitting = client.post("/v1/echo", content=b"y" * 100)
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    for response in (chunked, declared):
        assert "100 bytes" in openai_error(response, 413)["message"]
    assert fitting.json() == {"bytes": 100} and backend.echoed == [100]
