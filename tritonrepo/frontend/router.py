"""HTTP routes of the OpenAI-compatible front end: thin adapters from FastAPI to OpenAIServing, one error channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from .protocol import ChatCompletionRequest, CompletionRequest
from .serving import DONE_EVENT, OpenAIError, OpenAIServing
from .triton_client import GenerationError

log = logging.getLogger(__name__)
T = TypeVar("T")

router = APIRouter()


# --- errors --------------------------------------------------------------------------------------------------------
def as_openai_error(exc: BaseException) -> OpenAIError:
    """Every failure, whatever its origin, as the one error type the client sees."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, GenerationError):
        return OpenAIError.from_generation(exc)
    log.error("unexpected error while serving a request", exc_info=exc)
    return OpenAIError(500, "Internal server error; see the front end's log.")


def error_response(exc: BaseException) -> JSONResponse:
    error = as_openai_error(exc)
    return JSONResponse(error.to_response().model_dump(), status_code=error.status)


_UNION_TAGS = {"body", "str", "int", "float", "bool", "none", "list", "dict"}


def _is_field(part: Any) -> bool:
    # pydantic names the union member in the location ("content", "str"); clients only care about the field.
    return isinstance(part, int) or (str(part).isidentifier() and str(part) not in _UNION_TAGS)


def validation_error(exc: RequestValidationError) -> OpenAIError:
    """OpenAI answers invalid requests with 400 and names the field; FastAPI's default would be a 422."""
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if _is_field(part)]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", first.get("msg", ""))
        return OpenAIError(400, f"The request body is not valid JSON: {detail}")
    if not location:
        return OpenAIError(400, f"The request body must be a JSON object: {first.get('msg', '')}")
    param = ".".join(location)
    return OpenAIError(400, f"Invalid value for '{param}': {first.get('msg', '')}", param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def on_openai_error(_: Request, exc: Exception) -> JSONResponse:
        return error_response(exc)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return error_response(OpenAIError(exc.status_code, str(exc.detail)))

    app.add_exception_handler(OpenAIError, on_openai_error)
    app.add_exception_handler(GenerationError, on_openai_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_openai_error)


# --- disconnects and streaming -------------------------------------------------------------------------------------
async def _wait_for_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Runs `work`, cancelling it if the client goes away first (so a non-streamed Triton request is cancelled)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
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
    try:
        return task.result()
    except Exception as exc:
        # Converted here, not by an Exception handler: Starlette re-raises after those, so the server would crash-log.
        raise as_openai_error(exc) from exc


async def sse_with_errors(
    events: AsyncIterator[str], stopping: Callable[[], bool] = lambda: False
) -> AsyncIterator[str]:
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


class ClosingStreamingResponse(StreamingResponse):
    """Closes its event iterator however the response ends.

    Starlette cancels the sending task when the client disconnects but leaves the iterator suspended; closing it
    runs the iterators' cleanup down to the Triton stream, which cancels the request.
    """

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[union-attr]


def respond(request: Request, result: BaseModel | AsyncIterator[str]) -> Any:
    if isinstance(result, BaseModel):
        return JSONResponse(result.model_dump())
    stopping = getattr(request.app.state, "stopping", lambda: False)
    return ClosingStreamingResponse(
        sse_with_errors(result, stopping),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _serving(request: Request) -> OpenAIServing:
    return request.app.state.serving


# --- routes --------------------------------------------------------------------------------------------------------
@router.get("/health")
async def health(request: Request) -> JSONResponse:
    if await request.app.state.generator.is_ready():
        return JSONResponse({"status": "ok"})
    return JSONResponse({"status": "unavailable"}, status_code=503)


@router.get("/v1/models")
async def list_models(request: Request) -> JSONResponse:
    return JSONResponse((await _serving(request).list_models()).model_dump())


@router.get("/v1/models/{model}")
async def get_model(model: str, request: Request) -> JSONResponse:
    cards = (await _serving(request).list_models()).data
    for card in cards:
        if card.id == model:
            return JSONResponse(card.model_dump())
    raise OpenAIError(
        404,
        f"The model {model!r} does not exist; served models: {', '.join(c.id for c in cards)}.",
        param="model",
        code="model_not_found",
    )


@router.post("/v1/chat/completions")
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Any:
    return respond(request, await until_disconnect(request, _serving(request).chat(body)))


@router.post("/v1/completions")
async def create_completion(body: CompletionRequest, request: Request) -> Any:
    return respond(request, await until_disconnect(request, _serving(request).complete(body)))
