"""Tests of request admission: API keys, request body limits (size and time) and generation slots, in process, over
real HTTP and over raw sockets that never finish their body."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from tritonrepo.errors import ServerError
from tritonrepo.frontend.admission import (
    ApiKeyMiddleware,
    CapacityError,
    GenerationSlots,
    RequestBodyLimitMiddleware,
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


def make_stack(backend: Backend, **options):
    settings = dict(api_keys=(KEY, "sk-second"), max_body_bytes=1024, body_timeout_s=30)
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
    app,
    path: str,
    chunks: list[bytes],
    *,
    content_length: bool = True,
    headers=(),
    leave: asyncio.Event | None = None,
    stall: bool = False,
) -> tuple[list[dict], list[int]]:
    """Calls the ASGI app as uvicorn does; the client goes away when `leave` is set (else when the response ends).
    `stall`: the client never sends the end of its body (the last chunk says more is coming).

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
            return {"type": "http.request", "body": body, "more_body": bool(queue) or stall}
        await (leave or done).wait()
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            done.set()

    head = [(b"host", b"test"), *headers, (b"authorization", f"Bearer {KEY}".encode())]  # the first one counts
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
        async with client_for(stack) as client:
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
        async with client_for(stack) as client:
            return await client.get("/v1/models", headers={"Authorization": f"bearer  {key} "})

    response = run(scenario())
    assert response.status_code == 200 and response.json() == {"object": "list", "data": []}


def test_health_stays_open_without_a_key():
    stack = make_stack(Backend())

    async def scenario():
        async with client_for(stack) as client:
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


def test_other_protected_prefixes_need_the_key_too():
    app = ApiKeyMiddleware(make_app(Backend()), api_keys=[KEY], protected_prefixes=("/v1", "/health"))

    async def scenario():
        async with client_for(app) as client:
            return await client.get("/health"), await client.get("/health", headers=AUTH)

    without, with_key = run(scenario())
    assert without.status_code == 401 and with_key.status_code == 200


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


def test_api_keys_that_no_header_can_carry_are_refused_without_printing_them(tmp_path):
    with pytest.raises(ServerError) as caught:
        api_keys_from("sk-good,sk bad\u00e9")
    assert "sk bad" not in str(caught.value) and "--api-key" in str(caught.value)
    key_file = tmp_path / "keys"
    key_file.write_text("sk-good\nsk bad\u00e9\n")
    with pytest.raises(ServerError) as caught:
        api_keys_from(None, key_file)
    assert "sk bad" not in str(caught.value) and str(key_file) in str(caught.value)


def test_api_keys_from_a_file_one_per_line_without_comments_or_blank_lines(tmp_path, monkeypatch):
    monkeypatch.setenv("TRITONREPO_API_KEY", "sk-env")
    key_file = tmp_path / "keys"
    key_file.write_text("# rotated 2026-05\n\n  sk-new  \nsk-old,with-comma\r\n# sk-retired\nsk-new\n")
    # The file wins over the environment; a line is one key (commas included), duplicates count once.
    assert api_keys_from(None, key_file) == ("sk-new", "sk-old,with-comma")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "No such file"),
        ("", "holds no key"),
        ("# only a comment\n\n   \n", "holds no key"),
        (b"\xff\xfe", "utf-8"),
    ],
    ids=["missing", "empty", "comments-only", "not-text"],
)
def test_an_unreadable_or_empty_key_file_is_a_clear_error(tmp_path, content, expected):
    # Starting without keys after the operator asked for some would open /v1 to everyone.
    key_file = tmp_path / "keys"
    if isinstance(content, bytes):
        key_file.write_bytes(content)
    elif content is not None:
        key_file.write_text(content)
    with pytest.raises(ServerError) as caught:
        api_keys_from(None, key_file)
    assert str(key_file) in str(caught.value) and expected in str(caught.value)


def test_the_key_and_the_key_file_together_are_refused(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text("sk-file\n")
    with pytest.raises(ServerError, match="not both"):
        api_keys_from("sk-flag", key_file)


# --- body size -----------------------------------------------------------------------------------------------------
def test_content_length_over_the_limit_is_413_before_the_body_is_read():
    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)
    sent, receive_calls = run(drive(stack, "/v1/echo", [b"x" * 101]))
    assert starts(sent) == [413] and receive_calls == []
    error = json.loads(body_of(sent))["error"]
    assert "100 bytes" in error["message"] and error["code"] == "request_too_large"
    assert backend.echoed == []


def test_bodies_up_to_the_limit_pass():
    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)

    async def scenario():
        async with client_for(stack) as client:
            return await client.post("/v1/echo", content=b"x" * 100, headers=AUTH)

    assert run(scenario()).json() == {"bytes": 100} and backend.echoed == [100]


def test_oversized_content_length_gets_413_over_http_too():
    stack = make_stack(Backend(), max_body_bytes=100)

    async def scenario():
        async with client_for(stack) as client:
            return await client.post("/v1/echo", json={"pad": "x" * 200}, headers=AUTH)

    assert "100 bytes" in openai_error(run(scenario()), 413)["message"]


def test_chunked_body_crossing_the_limit_gets_only_the_413():
    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)
    sent, receive_calls = run(drive(stack, "/v1/echo", [b"x" * 60, b"x" * 60, b"x" * 60], content_length=False))
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
        async with client_for(stack) as client:
            return await client.post("/v1/echo", content=chunks(), headers=AUTH)

    response = run(scenario())
    assert "content-length" not in response.request.headers  # it really was sent chunked
    assert "100 bytes" in openai_error(response, 413)["message"] and backend.echoed == []


def test_chunked_body_under_the_limit_reaches_the_app_whole():
    backend = Backend()
    sent, _ = run(drive(make_stack(backend, max_body_bytes=100), "/v1/echo", [b"a" * 50] * 2, content_length=False))
    assert starts(sent) == [200] and json.loads(body_of(sent)) == {"bytes": 100}


# --- request body: time --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content_length", [True, False], ids=["short-content-length", "chunked-left-open"])
def test_a_body_that_does_not_arrive_in_time_gets_408_and_the_connection_is_closed(content_length):
    backend = Backend()
    stack = make_stack(backend, body_timeout_s=0.05)
    head = [(b"content-length", b"500")] if content_length else []  # declares more than ever comes
    sent, receive_calls = run(drive(stack, "/v1/echo", [b'{"pad": "'], content_length=False, headers=head, stall=True))
    assert starts(sent) == [408] and len([m for m in sent if m["type"] == "http.response.body"]) == 1
    assert (b"connection", b"close") in sent[0]["headers"]  # so the server drops the connection
    error = json.loads(body_of(sent))["error"]
    assert error["code"] == "request_timeout" and "0.05 s" in error["message"] and "9 bytes came" in error["message"]
    assert receive_calls == [0, 9]  # the second read was the one that timed out
    assert backend.echoed == []


def test_the_body_deadline_does_not_time_the_response_after_a_complete_body():
    # A stream that outlives the body timeout: its app keeps listening for the client leaving, untimed.
    backend = Backend()
    stack = make_stack(backend, body_timeout_s=0.05)

    async def scenario():
        async with client_for(stack) as client:
            stream = asyncio.create_task(client.post(CHAT, json=chat("a"), headers=AUTH))
            await until(lambda: backend.started == ["a"], "a runs")
            await asyncio.sleep(0.2)  # past the body deadline while the response is open
            backend.gates["a"].set()
            return await stream

    response = run(scenario())
    assert response.status_code == 200 and response.text.endswith("data: [DONE]\n\n")


def test_unauthenticated_requests_get_401_before_any_body_is_read():
    # The key is checked from the headers: a client without one never gets as far as the body deadline.
    backend = Backend()
    stack = make_stack(backend, body_timeout_s=0.05)
    sent, receive_calls = run(
        drive(stack, "/v1/echo", [b"{"], stall=True, headers=[(b"authorization", b"Bearer sk-wrong")])
    )
    assert starts(sent)[0] == 401 and receive_calls == []


def test_invalid_body_limits_are_refused():
    with pytest.raises(ValueError, match="timeout_s"):
        RequestBodyLimitMiddleware(make_app(Backend()), 100, 0)
    with pytest.raises(ValueError, match="max_bytes"):
        RequestBodyLimitMiddleware(make_app(Backend()), -1, 1.0)


def test_non_http_scopes_pass_through_every_middleware():
    seen: list[str] = []

    async def inner(scope, receive, send):
        seen.append(scope["type"])

    app = RequestBodyLimitMiddleware(ApiKeyMiddleware(inner, [KEY]), 0, 1.0)
    for kind in ("lifespan", "websocket"):
        run(app({"type": kind, "path": CHAT, "headers": [(b"content-length", b"10")]}, None, None))
    assert seen == ["lifespan", "websocket"]


# --- generation slots ----------------------------------------------------------------------------------------------
class Client:
    """The receive side of a request whose body has been read: it only ever says that the client left."""

    def __init__(self) -> None:
        self.left = asyncio.Event()

    async def receive(self) -> dict:
        await self.left.wait()
        return {"type": "http.disconnect"}


def chat(name: str, pad: int = 0) -> dict:
    return {"name": name, "pad": "p" * pad}


def test_free_slots_are_taken_at_once_and_the_same_receive_is_kept():
    slots = GenerationSlots(2, 0, 1.0)

    async def scenario():
        first, second = Client(), Client()
        return await slots.acquire(first.receive), first.receive, await slots.acquire(second.receive)

    got, expected, _ = run(scenario())
    assert got == expected and (slots.in_flight, slots.queued) == (2, 0)


def test_a_full_queue_is_a_capacity_error_and_queued_requests_run_in_arrival_order():
    slots = GenerationSlots(1, 2, 30.0)
    order: list[str] = []

    async def request(name: str) -> None:
        await slots.acquire(Client().receive)
        order.append(name)

    async def scenario():
        await slots.acquire(Client().receive)  # the one slot
        waiting = [asyncio.create_task(request(name)) for name in "bc"]
        await until(lambda: slots.queued == 2, "b and c wait")
        with pytest.raises(CapacityError) as full:
            await slots.acquire(Client().receive)
        for _ in "abc":
            slots.release(0.5)
            await asyncio.sleep(0)
        await asyncio.gather(*waiting)
        return full.value

    full = run(scenario())
    assert full.status == 429 and full.code == "rate_limit_exceeded" and full.type == "rate_limit_exceeded"
    assert "1 requests running, 2 waiting" in full.message
    assert order == ["b", "c"] and (slots.in_flight, slots.queued) == (0, 0)


def test_waiting_longer_than_the_queue_timeout_is_a_capacity_error():
    slots = GenerationSlots(1, 1, 0.05)

    async def scenario():
        await slots.acquire(Client().receive)
        with pytest.raises(CapacityError) as late:
            await slots.acquire(Client().receive)
        return late.value, (slots.in_flight, slots.queued)

    late, state = run(scenario())
    assert "0.05 s" in late.message and late.headers() == [(b"retry-after", b"1")]
    assert state == (1, 0)


def test_a_queued_client_that_leaves_frees_its_place():
    slots = GenerationSlots(1, 1, 30.0)

    async def scenario():
        await slots.acquire(Client().receive)
        leaving = Client()
        waiting = asyncio.create_task(slots.acquire(leaving.receive))
        await until(lambda: slots.queued == 1, "it waits")
        leaving.left.set()
        result = await waiting
        state = (slots.in_flight, slots.queued)
        # Its place is free again: the next one queues instead of getting a 429, and gets the slot.
        staying = Client()
        next_one = asyncio.create_task(slots.acquire(staying.receive))
        await until(lambda: slots.queued == 1, "the next one waits")
        slots.release(0.1)
        admitted = await next_one
        return result, state, admitted, staying

    result, state, admitted, staying = run(scenario())
    assert result is None and state == (1, 0)  # nobody is left to answer
    assert admitted is not None and (slots.in_flight, slots.queued) == (1, 0)


def test_a_request_that_waited_gets_its_disconnect_through_the_returned_receive():
    # The read outstanding while it waited is handed on, not lost: the app still hears the client leave.
    slots = GenerationSlots(1, 1, 30.0)

    async def scenario():
        await slots.acquire(Client().receive)
        client = Client()
        waiting = asyncio.create_task(slots.acquire(client.receive))
        await until(lambda: slots.queued == 1, "it waits")
        slots.release(0.1)
        receive = await waiting
        client.left.set()
        return await asyncio.wait_for(receive(), 5)

    assert run(scenario()) == {"type": "http.disconnect"}


def test_releasing_a_slot_drops_the_read_its_wait_left_outstanding():
    slots = GenerationSlots(1, 1, 30.0)

    async def scenario():
        await slots.acquire(Client().receive)
        waiting = asyncio.create_task(slots.acquire(Client().receive))
        await until(lambda: slots.queued == 1, "it waits")
        slots.release(0.1)
        receive = await waiting
        tasks_while_running = len(asyncio.all_tasks())
        slots.release(0.1, receive)  # ended without reading: its outstanding read must not outlive it
        await asyncio.sleep(0)
        return tasks_while_running - len(asyncio.all_tasks())

    assert run(scenario()) == 1 and slots.in_flight == 0


def test_a_cancelled_queued_request_gives_its_place_back():
    # What uvicorn does to requests still waiting when it shuts down.
    slots = GenerationSlots(1, 1, 30.0)

    async def scenario():
        await slots.acquire(Client().receive)
        waiting = asyncio.create_task(slots.acquire(Client().receive))
        await until(lambda: slots.queued == 1, "it waits")
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        return slots.in_flight, slots.queued

    assert run(scenario()) == (1, 0)


@pytest.mark.parametrize(
    ("holds", "age", "in_flight", "queued", "timeout", "expected"),
    [
        ([], 0.01, 4, 0, 60.0, 1),  # a burst before any request ended: the first has run 10 ms so far
        ([], 3.2, 1, 1, 60.0, 7),  # ... 3.2 s: every hold is at least that, and one more is queued ahead
        ([0.3], 0, 1, 0, 60.0, 1),  # never below one second
        ([2.0], 0, 1, 0, 60.0, 2),  # one slot, held 2 s: free in about 2 s
        ([2.0], 0, 1, 2, 60.0, 6),  # two more ahead in the queue
        ([2.0], 0, 4, 2, 60.0, 2),  # four slots free up four times as often: 2 * 3 / 4, rounded up
        ([30.0], 0, 1, 3, 60.0, 60),  # never above the queue timeout
        ([30.0], 0, 1, 0, 7.5, 8),  # ... rounded up to whole seconds
        ([1.0] + [11.0] * 40, 0, 1, 0, 60.0, 11),  # the mean follows recent holds
    ],
)
def test_retry_after_is_estimated_from_recent_holds_and_the_queue(holds, age, in_flight, queued, timeout, expected):
    now = [100.0]
    slots = GenerationSlots(in_flight, queued, timeout, clock=lambda: now[0])

    async def scenario():
        for held in holds:
            await slots.acquire(Client().receive)
            slots.release(held)
        for _ in range(in_flight):
            await slots.acquire(Client().receive)
        now[0] += age
        waiting = [asyncio.create_task(slots.acquire(Client().receive)) for _ in range(queued)]
        await until(lambda: slots.queued == queued, "the queue fills")
        with pytest.raises(CapacityError) as refused:
            await slots.acquire(Client().receive)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        return refused.value

    refused = run(scenario())
    assert refused.retry_after_s == expected and refused.headers() == [(b"retry-after", str(expected).encode())]
    assert f"Retry after {expected} s." in refused.message


def test_retry_after_is_the_queue_timeout_when_nothing_ever_ran():
    assert GenerationSlots(1, 0, 42.0).retry_after_s() == 42


def test_invalid_limits_are_refused():
    with pytest.raises(ValueError, match="max_in_flight"):
        GenerationSlots(0, 1, 1.0)
    with pytest.raises(ValueError, match="max_queued"):
        GenerationSlots(1, -1, 1.0)
    with pytest.raises(ValueError, match="queue_timeout_s"):
        GenerationSlots(1, 1, -1.0)


# --- the whole front end: completion routes take slots once the body is in -----------------------------------------
@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    from frontend_fixtures import make_repository, make_tokenizer_dir

    root = tmp_path_factory.mktemp("admission")
    return make_repository(root / "repo", make_tokenizer_dir(root / "tokenizer"))


@pytest.fixture
def front_end(repository):
    """(the served ASGI app, the FastAPI app, the generator double) for a policy's settings."""
    from frontend_fixtures import GatedGenerator

    from tritonrepo.frontend.app import FrontendSettings, build_asgi
    from tritonrepo.frontend.policy import FrontendPolicy

    def make(**policy):
        settings = dict(api_keys=(KEY,), max_in_flight=1, max_queued=0, queue_timeout_s=60.0)
        generator = GatedGenerator()
        asgi, app = build_asgi(
            FrontendSettings(repository=repository, policy=FrontendPolicy(**{**settings, **policy})), generator
        )
        return asgi, app, generator

    return make


def completion(prompt: str, stream: bool = False) -> dict:
    return {"model": "tiny-llama", "prompt": prompt, "max_tokens": 4, "stream": stream}


def test_retry_after_follows_how_long_requests_took_not_the_queue_timeout(front_end):
    asgi, app, generator = front_end(queue_timeout_s=60.0)

    async def scenario():
        async with client_for(asgi) as client:
            quick = await client.post("/v1/completions", json=completion("quick"), headers=AUTH)
            held = asyncio.create_task(client.post("/v1/completions", json=completion("hold-a"), headers=AUTH))
            await until(lambda: generator.started == ["quick", "hold-a"], "hold-a runs")
            refused = await client.post("/v1/completions", json=completion("late"), headers=AUTH)
            generator.open_gate("hold-a")
            return quick, refused, await held

    quick, refused, held = run(scenario())
    assert quick.status_code == 200 and held.status_code == 200
    error = openai_error(refused, 429)
    assert error["code"] == "rate_limit_exceeded"
    # The only request seen took far less than a second: come back in a second, not in the queue timeout's 60.
    assert refused.headers["retry-after"] == "1" and "Retry after 1 s." in error["message"]
    assert app.state.slots.in_flight == 0 and "late" not in generator.started


def test_a_queued_request_runs_when_the_slot_frees_with_its_body_intact(front_end):
    asgi, app, generator = front_end(max_queued=1)
    slots = app.state.slots
    long_prompt = "hold-b " + "p" * 30

    async def scenario():
        async with client_for(asgi) as client:
            first = asyncio.create_task(client.post("/v1/completions", json=completion("hold-a"), headers=AUTH))
            await until(lambda: generator.started == ["hold-a"], "a runs")
            second = asyncio.create_task(client.post("/v1/completions", json=completion(long_prompt), headers=AUTH))
            await until(lambda: slots.queued == 1, "b waits")
            metrics = (await client.get("/metrics")).text
            generator.open_gate("hold-a")
            await until(lambda: long_prompt in generator.started, "b runs")
            generator.open_gate(long_prompt)
            return await first, await second, metrics

    first, second, metrics = run(scenario())
    assert first.status_code == 200 and second.status_code == 200
    assert second.json()["choices"][0]["text"] == f"{long_prompt[:40]}:done"
    assert "tritonrepo_queue_depth 1.0" in metrics  # the queue depth gauge reads the slots
    assert (slots.in_flight, slots.queued) == (0, 0)


def test_unauthenticated_oversized_or_invalid_requests_never_take_a_slot(front_end):
    asgi, app, generator = front_end(max_body_bytes=2048)

    async def scenario():
        async with client_for(asgi) as client:
            held = asyncio.create_task(client.post("/v1/completions", json=completion("hold-a"), headers=AUTH))
            await until(lambda: generator.started == ["hold-a"], "a runs")
            answers = [
                await client.post("/v1/completions", json=completion("b")),
                await client.post("/v1/completions", json=completion("c" * 3000), headers=AUTH),
                await client.post("/v1/completions", json={"prompt": 3}, headers=AUTH),
                await client.post("/v1/completions", json=completion("d"), headers=AUTH),
            ]
            generator.open_gate("hold-a")
            await held
            return [answer.status_code for answer in answers]

    # Refused for what they are (401, 413, 400), not for capacity: only the last, valid one meets the full slot.
    assert run(scenario()) == [401, 413, 400, 429]
    assert app.state.slots.in_flight == 0 and generator.started == ["hold-a"]


def test_with_keys_the_schema_and_the_docs_need_the_key_too(front_end):
    asgi, _, _ = front_end()
    open_asgi, _, _ = front_end(api_keys=())

    async def scenario():
        async with client_for(asgi) as client, client_for(open_asgi) as open_client:
            paths = ("/openapi.json", "/docs", "/redoc")
            without = [await client.get(path) for path in paths]
            with_key = [await client.get(path, headers=AUTH) for path in paths]
            keyless_server = [await open_client.get(path) for path in paths]
            health = await client.get("/health")
            return without, with_key, keyless_server, health

    without, with_key, keyless_server, health = run(scenario())
    for response in without:
        assert openai_error(response, 401)["code"] == "invalid_api_key"
    assert [r.status_code for r in with_key] == [200] * 3 and [r.status_code for r in keyless_server] == [200] * 3
    assert "/v1/completions" in with_key[0].json()["paths"]
    assert health.status_code == 200  # health (and metrics) stay open for probes


# --- over real HTTP: streams, and clients that never finish their body ---------------------------------------------
def test_a_stream_holds_its_slot_until_it_ends_or_the_client_leaves(front_end):
    from frontend_fixtures import uvicorn_in_thread

    asgi, app, generator = front_end()
    slots = app.state.slots

    with uvicorn_in_thread(asgi) as url, httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
        # A stream that runs to its end.
        with client.stream("POST", "/v1/completions", json=completion("hold-a", stream=True)) as stream:
            lines = stream.iter_lines()
            assert "hold-a:" in next(lines)
            assert slots.in_flight == 1
            assert client.post("/v1/completions", json=completion("x")).status_code == 429  # the only slot is held
            generator.open_gate("hold-a")
            assert [line for line in lines if line][-1] == "data: [DONE]"
        until_sync(lambda: slots.in_flight == 0, "a's slot is released")

        # A stream whose client goes away in the middle (its gate never opens).
        with client.stream("POST", "/v1/completions", json=completion("hold-b", stream=True)) as stream:
            lines = stream.iter_lines()  # kept: a discarded, half-read line iterator would close the response
            assert "hold-b:" in next(lines)
            assert slots.in_flight == 1
        # Leaving the block with the body unread closes the connection: the server sees the disconnect.
        until_sync(lambda: slots.in_flight == 0, "b's slot is released after the disconnect")
        until_sync(lambda: "hold-b" in generator.closed, "b's generation is closed")
        assert "hold-b" not in generator.finished

        # The slot really is free: the next request is admitted.
        assert client.post("/v1/completions", json=completion("c")).status_code == 200
    assert generator.finished == ["hold-a", "c"]


def test_oversized_bodies_get_413_over_real_http():
    from frontend_fixtures import uvicorn_in_thread

    backend = Backend()
    stack = make_stack(backend, max_body_bytes=100)

    def chunks() -> Iterator[bytes]:
        for _ in range(50):
            yield b"y" * 60

    with uvicorn_in_thread(stack) as url, httpx.Client(base_url=url, headers=AUTH, timeout=10) as client:
        chunked = client.post("/v1/echo", content=chunks())
        declared = client.post("/v1/echo", content=b"y" * 101)
        fitting = client.post("/v1/echo", content=b"y" * 100)
    assert chunked.request.headers["transfer-encoding"] == "chunked"
    for response in (chunked, declared):
        assert "100 bytes" in openai_error(response, 413)["message"]
    assert fitting.json() == {"bytes": 100} and backend.echoed == [100]


def open_stalled_request(url: str, chunked: bool) -> socket.socket:
    """A completion request over a raw socket whose body never ends: a Content-Length larger than what is sent, or a
    chunked body whose last chunk never comes."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    body = json.dumps(completion("stalled")).encode()
    head = f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {KEY}\r\n"
    head += "Content-Type: application/json\r\n"
    if chunked:
        sock.sendall(f"{head}Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode() + body + b"\r\n")
    else:
        sock.sendall(f"{head}Content-Length: {len(body) + 100}\r\n\r\n".encode() + body)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def in_flight(client: httpx.Client, endpoint: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "tritonrepo_http_requests_in_flight" and sample.labels["endpoint"] == endpoint:
                return sample.value
    return 0.0


def test_clients_that_never_finish_their_body_hold_no_slot(front_end):
    # The issue: 256 such connections held all 256 slots. Here 8 hold open bodies against one slot and no queue.
    from frontend_fixtures import uvicorn_in_thread

    asgi, app, generator = front_end(body_timeout_s=600.0)
    with uvicorn_in_thread(asgi) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        stalled = [open_stalled_request(url, chunked=index % 2 == 1) for index in range(8)]
        try:
            until_sync(lambda: in_flight(client, "/v1/completions") == 8, "the server reads all 8 bodies")
            served = client.post("/v1/completions", json=completion("normal"))
            state = (app.state.slots.in_flight, app.state.slots.queued)
            for sock in stalled:  # still waiting for their bodies: not answered, not refused
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)
        finally:
            for sock in stalled:
                sock.close()
    assert served.status_code == 200 and served.json()["choices"][0]["text"] == "normal:done"
    assert state == (0, 0) and generator.started == ["normal"]


def test_a_body_that_never_finishes_gets_408_and_its_connection_closed(front_end):
    from frontend_fixtures import uvicorn_in_thread

    asgi, app, generator = front_end(body_timeout_s=0.3)
    with uvicorn_in_thread(asgi) as url, httpx.Client(base_url=url, headers=AUTH, timeout=30) as client:
        stalled = [open_stalled_request(url, chunked=chunked) for chunked in (False, True)]
        try:
            answers = [read_until_closed(sock) for sock in stalled]  # the server answers, then hangs up
        finally:
            for sock in stalled:
                sock.close()
        served = client.post("/v1/completions", json=completion("normal"))
        metrics = client.get("/metrics").text
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
        error = json.loads(body)["error"]
        assert error["code"] == "request_timeout" and "0.3 s" in error["message"]
    assert served.status_code == 200 and generator.started == ["normal"]
    assert 'tritonrepo_http_requests_total{endpoint="/v1/completions",status="408"} 2.0' in metrics
