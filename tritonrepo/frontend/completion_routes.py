"""POST /v1/chat/completions and /v1/completions as plain ASGI, ahead of FastAPI's routing.

Every generated token goes out through these two routes. On a small CPU, FastAPI's routing, dependency solving and
StreamingResponse task group take about 0.6 ms before a request reaches Triton, a third of the front end's 2 ms
time-to-first-token budget (benchmarks/frontend_overhead.py), so these two are served here directly: parse, hand to
OpenAIServing, write the answer. FastAPI keeps every other route; `document_completion_routes` puts these two in its
OpenAPI schema.

A request takes a generation slot (admission.GenerationSlots) only after its body has been read and validated, and
holds it until its response ends or its client leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from .admission import CapacityError, GenerationSlots, route_path, send_error
from .asgi_types import ASGIApp, Receive, Scope, Send
from .protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChunk,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
)
from .router import as_openai_error, validation_error
from .serving import DONE_EVENT, OpenAIError

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)
T = TypeVar("T")

# path -> (request model, OpenAIServing method, response model, stream chunk model, summary)
ROUTES: dict[str, tuple[type[BaseModel], str, type[BaseModel], type[BaseModel], str]] = {
    "/v1/chat/completions": (
        ChatCompletionRequest,
        "chat",
        ChatCompletionResponse,
        ChatCompletionChunk,
        "Create a chat completion",
    ),
    "/v1/completions": (CompletionRequest, "complete", CompletionResponse, CompletionChunk, "Create a completion"),
}
_SSE_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
    ],
}


class _ClientGone(Exception):
    """The client disconnected before its request body arrived; there is nobody to answer."""


class CompletionRoutes:
    """Pure ASGI middleware serving the two completion routes with `state.serving`; other paths pass through.

    `state` is the FastAPI app's state: `serving` (OpenAIServing), `slots` (GenerationSlots) and, once uvicorn runs,
    `stopping` (a callable that says the server is shutting down, so open streams end at their next event).
    """

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(route_path(scope)) if scope["type"] == "http" else None
        if route is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await send_error(send, OpenAIError(405, "Method Not Allowed"), [(b"allow", b"POST")])
            return
        try:
            request: Any = route[0].model_validate_json(await _read_body(receive))
        except _ClientGone:
            return
        except ValidationError as exc:
            await send_error(send, validation_error(exc))
            return
        slots: GenerationSlots = self.state.slots
        try:
            admitted = await slots.acquire(receive)
        except CapacityError as exc:
            log.info("rejected %s %s: %s", scope.get("method"), scope.get("path"), exc.message)
            await send_error(send, exc, exc.headers())
            return
        if admitted is None:  # the client left while it waited: nobody to answer
            return
        started = slots.clock()
        try:
            await self._serve(getattr(self.state.serving, route[1]), request, admitted, send)
        finally:
            slots.release(slots.clock() - started, admitted)

    async def _serve(self, method: Callable[[Any], Awaitable[Any]], request: Any, receive: Receive, send: Send) -> None:
        work = method(request)
        try:
            if not request.stream:  # the whole generation happens in `work`: a client that leaves must cancel it
                result = await until_disconnect(receive, work)
            else:  # `work` only validates and starts the generation: awaited here, so nothing delays the request
                events = await work
        except Exception as exc:
            await send_error(send, as_openai_error(exc))
            return
        if not request.stream:
            await _send_json(send, result)
            return
        await stream_events(send, receive, events, getattr(self.state, "stopping", _never))


def _never() -> bool:
    return False


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            # One message (the usual case) is used as it is: a large body is not copied again.
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _send_json(send: Send, result: BaseModel) -> None:
    body = result.model_dump_json().encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --- disconnects and streaming -------------------------------------------------------------------------------------
async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Runs `work`, cancelling it if the client goes away first (so a non-streamed Triton request is cancelled)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
    if not task.done() or task.cancelled():
        await asyncio.wait({task})  # let its cleanup run: closing the generation cancels the Triton request
        log.info("client disconnected; request cancelled")
        raise OpenAIError(499, "The client closed the request.")
    return task.result()


async def sse_with_errors(events: AsyncIterator[str], stopping: Callable[[], bool] = _never) -> AsyncIterator[str]:
    """Passes SSE events through; an error mid-stream becomes an error event and the stream still ends with [DONE].

    `stopping` says the server is shutting down: the stream then ends at the next event (cancelling the Triton
    request) instead of holding the shutdown until uvicorn's grace period runs out.
    """
    try:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                yield event
                if stopping() and event != DONE_EVENT:
                    raise OpenAIError(503, "The server is shutting down; the response was cut short.")
    except Exception as exc:
        yield f"data: {as_openai_error(exc).to_response().model_dump_json()}\n\n"
        yield DONE_EVENT


async def stream_events(
    send: Send, receive: Receive, events: AsyncIterator[str], stopping: Callable[[], bool] = _never
) -> None:
    """Sends `events` as a server-sent event stream. The response starts with the first event, so a failure before it
    is an HTTP error status; after it, failures become error events. A client that goes away ends the stream at once,
    and `events` is closed however the stream ends (its generation is already running; closing it cancels the
    Triton request)."""

    async def write() -> None:
        try:
            first = await anext(events)
        except Exception as exc:  # nothing was generated yet: the failure can still be the response's status
            await send_error(send, as_openai_error(exc))
            return
        await send(_SSE_START)
        async for event in sse_with_errors(_chain(first, events), stopping):
            await send({"type": "http.response.body", "body": event.encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    writer = asyncio.ensure_future(write())
    gone = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait({writer, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        writer.cancel()
        gone.cancel()
        await asyncio.wait({writer, gone})
        await events.aclose()  # type: ignore[attr-defined]
    if not writer.cancelled() and (failure := writer.exception()) is not None:
        raise failure  # the server could not send: uvicorn logs it


async def _chain(first: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield first
    async for event in rest:
        yield event


# --- the OpenAPI schema --------------------------------------------------------------------------------------------
def document_completion_routes(app: FastAPI) -> None:
    """Adds the two completion routes to `app`'s OpenAPI schema (FastAPI documents only the routes it serves)."""
    from pydantic.json_schema import models_json_schema

    make_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = make_schema()
        models: list[tuple[type[BaseModel], Any]] = [(ErrorResponse, "serialization")]
        for request_model, _, response_model, chunk_model, _ in ROUTES.values():
            models += [(request_model, "validation"), (response_model, "serialization"), (chunk_model, "serialization")]
        refs, definitions = models_json_schema(models, ref_template="#/components/schemas/{model}")
        schema.setdefault("components", {}).setdefault("schemas", {}).update(definitions.get("$defs", {}))
        error = {"content": {"application/json": {"schema": refs[(ErrorResponse, "serialization")]}}}
        for path, (request_model, method, response_model, chunk_model, summary) in ROUTES.items():
            answers = {
                "application/json": {"schema": refs[(response_model, "serialization")]},
                "text/event-stream": {"schema": refs[(chunk_model, "serialization")]},  # with "stream": true
            }
            schema.setdefault("paths", {})[path] = {
                "post": {
                    "summary": summary,
                    "operationId": f"create_{method}",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": refs[(request_model, "validation")]}},
                    },
                    "responses": {
                        "200": {"description": "The completion, or its events when streamed", "content": answers},
                        **{
                            status: {"description": description, **error}
                            for status, description in (
                                ("400", "Invalid request"),
                                ("404", "Unknown model"),
                                ("503", "Triton or the model is not available"),
                            )
                        },
                    },
                }
            }
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
