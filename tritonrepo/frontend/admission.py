"""Request admission for the OpenAI front end: API keys, body size and concurrency limits as pure ASGI middlewares."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import math
import os
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from ..errors import ServerError
from .asgi_types import ASGIApp, Message, Receive, Scope, Send
from .serving import OpenAIError

log = logging.getLogger(__name__)


API_KEY_ENV = "TRITONREPO_API_KEY"
LIMITED_PATHS = ("/v1/chat/completions", "/v1/completions")


# --- shared helpers ------------------------------------------------------------------------------------------------
async def send_error(send: Send, error: OpenAIError, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """Answers with the front end's one error format (the body the router's error handlers also write)."""
    body = error.to_response().model_dump_json().encode()
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.status, "headers": [*start_headers, *headers]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers") or ():
        if key.lower() == name:
            return value
    return None


def route_path(scope: Scope) -> str:
    # Servers started with a root path put it in front of `path`; routes (and so our prefixes) are matched without it.
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


# --- API keys ------------------------------------------------------------------------------------------------------
def api_keys_from(cli_value: str | None, env_var: str = API_KEY_ENV) -> tuple[str, ...]:
    """The accepted API keys: --api-key if given, else the environment variable; several may be comma-separated."""
    raw = cli_value if cli_value is not None else os.environ.get(env_var, "")
    keys = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    for key in keys:
        # A key a client cannot put in an HTTP header would lock everyone out; the key itself is never printed.
        if not (key.isascii() and key.isprintable()) or " " in key:
            raise ServerError(
                "An API key may only contain printable ASCII characters without spaces.",
                hint=f"Check --api-key or ${env_var}.",
            )
    return keys


class ApiKeyMiddleware:
    """Requests under `protected_prefix` need `Authorization: Bearer <key>` with one of `api_keys`; else 401.

    Health and metrics live outside the prefix and stay open. With no keys the middleware lets everything through.
    """

    def __init__(self, app: ASGIApp, api_keys: Sequence[str], protected_prefix: str = "/v1") -> None:
        self.app = app
        self.protected_prefix = protected_prefix
        self._keys = tuple(key.encode() for key in api_keys if key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self._keys
            or scope["type"] != "http"
            or not route_path(scope).startswith(self.protected_prefix)
            or _is_cors_preflight(scope)
        ):
            await self.app(scope, receive, send)
            return
        presented = _bearer_token(scope)
        if presented is not None and self._accepts(presented):
            await self.app(scope, receive, send)
            return
        # Logged and answered without the presented key: it may be a real key sent to the wrong server.
        reason = "no API key" if presented is None else "an invalid API key"
        log.info("rejected %s %s: %s", scope.get("method"), scope.get("path"), reason)
        message = (
            "You didn't provide an API key." if presented is None else "Incorrect API key provided."
        ) + " Pass it in the Authorization header: 'Authorization: Bearer YOUR_API_KEY'."
        await send_error(send, OpenAIError(401, message, code="invalid_api_key"), [(b"www-authenticate", b"Bearer")])

    def _accepts(self, presented: bytes) -> bool:
        # Every key is compared (no early exit), each in constant time, so timing does not tell which one was close.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(presented, key)
        return matched


def _bearer_token(scope: Scope) -> bytes | None:
    value = _header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(b" ")
    token = token.strip()
    return token if scheme.lower() == b"bearer" and token else None


def _is_cors_preflight(scope: Scope) -> bool:
    # Browsers never send credentials on a CORS preflight; it carries no request body and runs nothing.
    return scope.get("method") == "OPTIONS" and _header(scope, b"access-control-request-method") is not None


# --- body size -----------------------------------------------------------------------------------------------------
class BodySizeLimitMiddleware:
    """Answers 413 for request bodies over `max_bytes`, by Content-Length up front, or while a chunked body streams in.

    When a body without Content-Length crosses the limit, the app's receive gets `http.disconnect` from then on (it
    stops as if the client had left). If the app had not started its response, the 413 goes out at once and
    anything the app sends afterwards is dropped, so the client gets exactly one response. If it had started one,
    no status can be changed any more: the rest of that response is dropped and the server closes the connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> OpenAIError:
        return OpenAIError(
            413,
            f"The request body is larger than this server's limit of {self.max_bytes} bytes.",
            code="request_too_large",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            log.info("rejected %s %s: body of %d bytes", scope.get("method"), scope.get("path"), declared)
            await send_error(send, self._too_large())
            return

        received = 0
        response_started = False
        rejected = False

        async def limited_receive() -> Message:
            nonlocal received, response_started, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    rejected = True  # set before the awaits below, so an app send meanwhile is dropped
                    log.info("rejected %s %s: body over %d bytes", scope.get("method"), scope.get("path"), received)
                    if not response_started:
                        response_started = True
                        await send_error(send, self._too_large())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if rejected:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise
            # The app saw the client "leave" mid-body and may raise for it (Starlette's ClientDisconnect); expected.
            log.debug("app raised after its request body was cut off", exc_info=True)


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None or not value.strip().isdigit():
        return None  # absent or malformed: the byte count in limited_receive still applies
    return int(value)


# --- concurrency ---------------------------------------------------------------------------------------------------
class ConcurrencyLimitMiddleware:
    """At most `max_in_flight` requests on `paths` run at once; up to `max_queued` more wait for a slot, first come
    first served. A full queue, or `queue_timeout_s` spent waiting, is answered 429 with Retry-After.

    A slot is held until the app returns, so a streamed response holds it until the stream ends or the client
    leaves. While a request waits its body is read (and kept for the app), which is how a client that leaves the
    queue is noticed; the body size limit in front of this middleware bounds that memory.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_in_flight: int,
        max_queued: int,
        queue_timeout_s: float,
        paths: Iterable[str] = LIMITED_PATHS,
        *,
        retry_after_s: int | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, not {max_in_flight}")
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, not {max_queued}")
        if queue_timeout_s < 0:
            raise ValueError(f"queue_timeout_s must be >= 0, not {queue_timeout_s}")
        self.app = app
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.paths = frozenset(paths)
        # Nothing says how long requests run; a client that waits as long as the queue would have is a fair guess.
        self.retry_after_s = max(1, retry_after_s if retry_after_s is not None else math.ceil(queue_timeout_s))
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def in_flight(self) -> int:
        """Slots held: requests running, plus any handed to a queued request that has not resumed yet."""
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or route_path(scope) not in self.paths:
            await self.app(scope, receive, send)
            return
        if self._in_flight < self.max_in_flight and not self._waiters:
            self._in_flight += 1
            try:
                await self.app(scope, receive, send)
            finally:
                self._release()
            return
        if len(self._waiters) >= self.max_queued:
            await self._reject(
                scope,
                send,
                f"The server is at capacity ({self._in_flight} requests running, {len(self._waiters)} waiting).",
            )
            return
        replay = _ReplayReceive(receive)
        if not await self._wait_for_slot(replay):
            if not replay.disconnected:  # a client that left the queue has nobody to answer
                await self._reject(scope, send, f"No capacity freed up within {self.queue_timeout_s:g} s.")
            return
        try:
            await self.app(scope, replay, send)
        finally:
            replay.close()
            self._release()

    async def _wait_for_slot(self, replay: _ReplayReceive) -> bool:
        """Whether a slot became this request's; False if its client left or the queue timeout ran out."""
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[None] = loop.create_future()
        self._waiters.append(slot)
        deadline = loop.time() + self.queue_timeout_s
        try:
            while not slot.done() and not replay.disconnected:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                reading = replay.read_ahead()
                waits = {slot} if reading is None else {slot, reading}
                await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                if reading is not None and reading.done():
                    replay.keep(reading)
        except BaseException:  # cancelled (server shutdown) or a failing receive: give the place back
            self._leave_queue(slot)
            replay.close()
            raise
        if slot.done() and not replay.disconnected:
            return True
        # A slot granted in the same instant the client left or time ran out goes back here, to the next in line.
        self._leave_queue(slot)
        replay.close()
        return False

    def _leave_queue(self, slot: asyncio.Future[None]) -> None:
        if slot.done() and not slot.cancelled():
            self._release()
            return
        slot.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(slot)

    def _release(self) -> None:
        # The slot passes straight to the first waiter (FIFO, and no newcomer can take it in between).
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_flight -= 1

    async def _reject(self, scope: Scope, send: Send, reason: str) -> None:
        log.info("rejected %s %s: %s", scope.get("method"), scope.get("path"), reason)
        error = OpenAIError(
            429,
            f"{reason} Retry after {self.retry_after_s} s.",
            type="rate_limit_exceeded",
            code="rate_limit_exceeded",
        )
        await send_error(send, error, [(b"retry-after", str(self.retry_after_s).encode())])


class _ReplayReceive:
    """The receive channel of a request that waited: hands the app what was read meanwhile, then reads on.

    A read still outstanding when the slot arrives is handed over rather than cancelled, because cancelling a
    server's receive() can lose the message it was about to return.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._kept: collections.deque[Message] = collections.deque()
        self._reading: asyncio.Future[Message] | None = None
        self.disconnected = False

    def read_ahead(self) -> asyncio.Future[Message] | None:
        """The outstanding read, started if there is none (a finished body's next message is the disconnect)."""
        if self._reading is None and not self.disconnected:
            self._reading = asyncio.ensure_future(self._receive())
        return self._reading

    def keep(self, reading: asyncio.Future[Message]) -> None:
        self._reading = None
        message = reading.result()
        self.disconnected = message["type"] == "http.disconnect"
        self._kept.append(message)

    async def __call__(self) -> Message:
        if self._kept:
            return self._kept.popleft()
        if self._reading is not None:
            reading, self._reading = self._reading, None
            return await reading
        return await self._receive()

    def close(self) -> None:
        reading, self._reading = self._reading, None
        if reading is None:
            return
        if not reading.done():
            reading.cancel()
        elif not reading.cancelled():
            reading.exception()  # retrieved, so asyncio does not warn about a read nobody wanted any more


# --- the stack -----------------------------------------------------------------------------------------------------
class AdmissionStack(NamedTuple):
    app: ASGIApp  # what the server runs
    concurrency: ConcurrencyLimitMiddleware  # its in_flight and queued are the queue-depth metrics


def admission_stack(
    app: ASGIApp,
    *,
    api_keys: Sequence[str],
    max_body_bytes: int,
    max_in_flight: int,
    max_queued: int,
    queue_timeout_s: float,
) -> AdmissionStack:
    """`app` behind body size -> API key -> concurrency: cheap checks first, and no slot for an unauthenticated call."""
    concurrency = ConcurrencyLimitMiddleware(app, max_in_flight, max_queued, queue_timeout_s)
    outer = BodySizeLimitMiddleware(ApiKeyMiddleware(concurrency, api_keys), max_body_bytes)
    return AdmissionStack(app=outer, concurrency=concurrency)
