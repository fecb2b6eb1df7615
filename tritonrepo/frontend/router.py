"""The OpenAI front end's FastAPI routes (health, models) and its one error channel.

The two completion routes are plain ASGI, in completion_routes.py; they answer errors through the functions here.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from .serving import OpenAIError, OpenAIServing
from .triton_client import GenerationError

log = logging.getLogger(__name__)

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


def validation_error(exc: RequestValidationError | ValidationError) -> OpenAIError:
    """OpenAI answers invalid requests with 400 and names the field; FastAPI's default would be a 422."""
    first = exc.errors()[0]
    location = [str(part) for part in first.get("loc", ()) if _is_field(part)]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", first.get("msg", ""))
        return OpenAIError(400, f"The request body is not valid JSON: {detail}")
    if not location:
        return OpenAIError(400, f"The request body must be a JSON object: {first.get('msg', '')}")
    param = ".".join(location)
    if first.get("type") == "extra_forbidden":  # OpenAI's words for a field it does not know
        return OpenAIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    if first.get("type") == "unsupported":  # the message already names the field (protocol.py)
        return OpenAIError(400, first.get("msg", ""), param=param)
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


def _serving(request: Request) -> OpenAIServing:
    return request.app.state.serving


# --- routes --------------------------------------------------------------------------------------------------------
@router.get("/health")
async def health(request: Request) -> JSONResponse:
    generator = request.app.state.generator
    reason = generator.unavailable  # serve's supervisor says why, e.g. a dead model stub
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    if await generator.is_ready():
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
