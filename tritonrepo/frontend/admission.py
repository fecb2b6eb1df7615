"""Request admission for the OpenAI front end: API keys and request body limits (pure ASGI middlewares), and the
generation slots that completion requests take once their body is read and valid."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hmac
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..errors import ServerError
from .asgi_types import ASGIApp, Message, Receive, Scope, Send
from .serving import OpenAIError

log = logging.getLogger(__name__)


API_KEY_ENV = "TRITONREPO_API_KEY"
DEFAULT_PROTECTED_PREFIXES = ("/v1",)


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
def api_keys_from(cli_value: str | None, key_file: Path | None = None, env_var: str = API_KEY_ENV) -> tuple[str, ...]:
    """The accepted API keys: --api-key (comma-separated), or --api-key-file (one per line), else the environment
    variable (comma-separated). A key on the command line is visible to every local user in `ps`; the file and the
    environment variable are not."""
    if cli_value is not None and key_file is not None:
        raise ServerError("Give --api-key or --api-key-file, not both.", hint="Put every key in the file.")
    if key_file is not None:
        return _checked_keys(_keys_in_file(Path(key_file)), f"Check {key_file}.")
    raw = cli_value if cli_value is not None else os.environ.get(env_var, "")
    return _checked_keys((part.strip() for part in raw.split(",")), f"Check --api-key or ${env_var}.")


def _keys_in_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ServerError(f"Cannot read the API key file {path}: {reason}.") from exc
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        # Starting without keys would silently open /v1 to everyone: refuse instead.
        raise ServerError(
            f"The API key file {path} holds no key (only blank lines or # comments).",
            hint="Write one key per line.",
        )
    return keys


def _checked_keys(candidates: Iterable[str], hint: str) -> tuple[str, ...]:
    keys = tuple(dict.fromkeys(key for key in candidates if key))
    for key in keys:
        # A key a client cannot put in an HTTP header would lock everyone out; the key itself is never printed.
        if not (key.isascii() and key.isprintable()) or " " in key:
            raise ServerError("An API key may only contain printable ASCII characters without spaces.", hint=hint)
    return keys


class ApiKeyMiddleware:
    """Requests under `protected_prefixes` need `Authorization: Bearer <key>` with one of `api_keys`; else 401.

    Health and metrics live outside the prefixes and stay open. With no keys the middleware lets everything through.
    The key is checked from the headers alone, before any of the request body is read.
    """

    def __init__(
        self, app: ASGIApp, api_keys: Sequence[str], protected_prefixes: Sequence[str] = DEFAULT_PROTECTED_PREFIXES
    ) -> None:
        self.app = app
        self.protected_prefixes = tuple(protected_prefixes)
        self._keys = tuple(key.encode() for key in api_keys if key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self._keys
            or scope["type"] != "http"
            or not route_path(scope).startswith(self.protected_prefixes)
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


# --- request body: size and time -----------------------------------------------------------------------------------
class RequestBodyLimitMiddleware:
    """Bounds what a request body may cost: more than `max_bytes` is a 413 (by Content-Length up front, or while a
    chunked body streams in), a body not complete `timeout_s` after the request arrived is a 408, sent with
    `Connection: close` so the server drops the connection.

    When a limit is crossed mid-body, the app's receive gets `http.disconnect` from then on (it stops as if the client
    had left). If the app had not started its response, the refusal goes out at once and anything the app sends
    afterwards is dropped, so the client gets exactly one response. If it had started one, no status can be changed
    any more: the rest of that response is dropped and the server closes the connection. Once the body is complete,
    receive passes straight through (an app waiting for the client to leave is not timed).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, not {max_bytes}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, not {timeout_s}")
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    def _too_large(self) -> OpenAIError:
        return OpenAIError(
            413,
            f"The request body is larger than this server's limit of {self.max_bytes} bytes.",
            code="request_too_large",
        )

    def _too_slow(self, received: int) -> OpenAIError:
        return OpenAIError(
            408,
            f"The request body did not arrive within {self.timeout_s:g} s ({received} bytes came); "
            "send the whole body at once, or ask the operator to raise --request-body-timeout.",
            code="request_timeout",
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

        deadline = asyncio.get_running_loop().time() + self.timeout_s
        received = 0
        body_done = False
        response_started = False
        refused = False

        async def refuse(error: OpenAIError, why: str) -> Message:
            nonlocal response_started, refused
            refused = True  # set before the awaits below, so an app send meanwhile is dropped
            log.info("rejected %s %s: %s", scope.get("method"), scope.get("path"), why)
            if not response_started:
                response_started = True
                await send_error(send, error, [(b"connection", b"close")] if error.status == 408 else ())
            return {"type": "http.disconnect"}

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if refused:
                return {"type": "http.disconnect"}
            if body_done:
                return await receive()
            try:
                message = await _receive_before(receive, deadline)
            except asyncio.TimeoutError:
                return await refuse(self._too_slow(received), f"body incomplete after {self.timeout_s:g} s")
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    return await refuse(self._too_large(), f"body over {self.max_bytes} bytes")
                body_done = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refused:
                return
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise
            # The app saw the client "leave" mid-body and may raise for it (Starlette's ClientDisconnect); expected.
            log.debug("app raised after its request body was cut off", exc_info=True)


if sys.version_info >= (3, 11):

    async def _receive_before(receive: Receive, deadline: float) -> Message:
        # A timer, not a task: a body that is already there costs no extra turn of the event loop.
        async with asyncio.timeout_at(deadline):
            return await receive()

else:  # pragma: no cover - Python 3.10

    async def _receive_before(receive: Receive, deadline: float) -> Message:
        remaining = deadline - asyncio.get_running_loop().time()
        return await asyncio.wait_for(receive(), max(remaining, 0.0))


def _content_length(scope: Scope) -> int | None:
    value = _header(scope, b"content-length")
    if value is None or not value.strip().isdigit():
        return None  # absent or malformed: the byte count in limited_receive still applies
    return int(value)


# --- generation slots ----------------------------------------------------------------------------------------------
class CapacityError(OpenAIError):
    """No generation slot for this request: a 429 whose Retry-After header says when to try again."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(
            429, f"{reason} Retry after {retry_after_s} s.", type="rate_limit_exceeded", code="rate_limit_exceeded"
        )
        self.retry_after_s = retry_after_s

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [(b"retry-after", str(self.retry_after_s).encode())]


class GenerationSlots:
    """At most `max_in_flight` generations run at once; up to `max_queued` more wait for a slot, first come first
    served. A full queue, or `queue_timeout_s` spent waiting, is a CapacityError (429).

    A request takes its slot only once its body has been read and validated, so a client that is slow to send (or
    never finishes) its body holds no slot. Retry-After is estimated from how long slots were held lately and how
    many requests wait: slots free up about `max_in_flight` times per mean hold, and a newcomer waits for everyone
    queued ahead of it. Until a first slot is given back, the time since the first was taken stands in for the mean
    (every hold so far is at least that long; a burst at start-up is told to come back soon, not after the queue
    timeout). The estimate is whole seconds, at least 1 and at most the queue timeout (rounded up). `clock` is the
    one `release` durations are measured with.
    """

    HOLD_WEIGHT = 0.1  # weight of the newest hold in the moving mean: about the last 10 requests count

    def __init__(
        self,
        max_in_flight: int,
        max_queued: int,
        queue_timeout_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, not {max_in_flight}")
        if max_queued < 0:
            raise ValueError(f"max_queued must be >= 0, not {max_queued}")
        if queue_timeout_s < 0:
            raise ValueError(f"queue_timeout_s must be >= 0, not {queue_timeout_s}")
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.queue_timeout_s = queue_timeout_s
        self.mean_hold_s: float | None = None
        self.clock = clock
        self._first_taken_at: float | None = None
        self._in_flight = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def in_flight(self) -> int:
        """Slots held: requests running, plus any handed to a queued request that has not resumed yet."""
        return self._in_flight

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def retry_after_s(self) -> int:
        ceiling = max(1, math.ceil(self.queue_timeout_s))
        mean = self.mean_hold_s
        if mean is None:
            if self._first_taken_at is None:
                return ceiling
            mean = self.clock() - self._first_taken_at
        wait = mean * (len(self._waiters) + 1) / self.max_in_flight
        return min(ceiling, max(1, math.ceil(wait)))

    async def acquire(self, receive: Receive) -> Receive | None:
        """Takes a slot, waiting in the queue if need be. Returns the receive channel the request uses from now on,
        or None if its client left while it waited; raises CapacityError when there is no room. `receive` must be
        past the request body: its next message can only be the client leaving."""
        if self._in_flight < self.max_in_flight and not self._waiters:
            self._in_flight += 1
            if self._first_taken_at is None:
                self._first_taken_at = self.clock()
            return receive
        if len(self._waiters) >= self.max_queued:
            raise CapacityError(
                f"The server is at capacity ({self._in_flight} requests running, {len(self._waiters)} waiting).",
                self.retry_after_s(),
            )
        watched = _WatchedReceive(receive)
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await asyncio.wait(
                {slot, watched.reading()}, timeout=self.queue_timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        except BaseException:  # cancelled (server shutdown): give the place back
            self._leave_queue(slot)
            watched.close()
            raise
        if slot.done() and not watched.gone:
            return watched
        # A slot granted in the same instant the client left or time ran out goes back here, to the next in line.
        self._leave_queue(slot)
        gone = watched.gone
        watched.close()
        if gone:
            return None
        raise CapacityError(f"No capacity freed up within {self.queue_timeout_s:g} s.", self.retry_after_s())

    def release(self, held_s: float, receive: Receive | None = None) -> None:
        """Gives a slot back after `held_s` seconds; it passes straight to the first waiter (FIFO, and no newcomer can
        take it in between). `receive`: what acquire returned, so a read it still has outstanding is dropped."""
        if isinstance(receive, _WatchedReceive):
            receive.close()
        mean = self.mean_hold_s
        self.mean_hold_s = held_s if mean is None else mean + self.HOLD_WEIGHT * (held_s - mean)
        self._pass_on()

    def _pass_on(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._in_flight -= 1

    def _leave_queue(self, slot: asyncio.Future[None]) -> None:
        if slot.done() and not slot.cancelled():
            self._pass_on()  # it was granted: hand it on, without counting it as a hold
            return
        slot.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(slot)


class _WatchedReceive:
    """The receive channel of a request that waits for a slot. Its body is read, so the one read outstanding while it
    waits can only end with the client leaving; that read is handed on to the app rather than cancelled, because
    cancelling a server's receive() can lose the message it was about to return."""

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._reading: asyncio.Future[Message] | None = None

    def reading(self) -> asyncio.Future[Message]:
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._receive())
        return self._reading

    @property
    def gone(self) -> bool:
        return self._reading is not None and self._reading.done()

    async def __call__(self) -> Message:
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
def admission_stack(
    app: ASGIApp,
    *,
    api_keys: Sequence[str],
    max_body_bytes: int,
    body_timeout_s: float,
    protected_prefixes: Sequence[str] = DEFAULT_PROTECTED_PREFIXES,
) -> ASGIApp:
    """`app` behind body limits -> API key: cheap checks first, and the key is checked before the body is read.

    Generation slots are taken later, by the completion routes, once the body is read and valid."""
    return RequestBodyLimitMiddleware(
        ApiKeyMiddleware(app, api_keys, protected_prefixes), max_body_bytes, body_timeout_s
    )
