"""How failures are answered: a status and one clear sentence, never a stack trace.

MongoDB down or failing → 503; MLServer unreachable or failing → 503; a request body over the
size limit → 413; an unknown prospect → 404; a call citing another prospect's prediction → 422;
no indicators entered yet → 409; the call list still being scored by another replica after the
wait → 503; no model serving (none has passed its gates yet, or the champion is gone) → 503
with the reason and a `Retry-After`.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import httpx
from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pymongo.errors import ConnectionFailure, PyMongoError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telescore.app.deps import MONGODB_FAILED, MONGODB_UNREACHABLE
from telescore.io.serving_client import ServingError
from telescore.jobs.call_lists import CallListNotReadyError
from telescore.jobs.calls import NotThisProspectsPredictionError
from telescore.jobs.indicators import NoIndicatorsError
from telescore.jobs.prospect_scoring import UnknownProspectsError
from telescore.jobs.scoring import NoModelServingError

logger = logging.getLogger(__name__)

MLSERVER_UNREACHABLE: Final = "the scoring service (MLServer) is unreachable: nothing was scored"


class Detail(BaseModel):
    """An error, for a person."""

    detail: str


class FieldErrors(BaseModel):
    """The request's fields that failed validation, each naming where it is (FastAPI's 422)."""

    detail: list[dict[str, Any]]


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Return OpenAPI `responses` documenting these error statuses."""
    described = {
        status.HTTP_400_BAD_REQUEST: "The body is not JSON (UTF-8)",
        status.HTTP_401_UNAUTHORIZED: "No API key, or not a valid one",
        status.HTTP_403_FORBIDDEN: "The key's role may not do this",
        status.HTTP_404_NOT_FOUND: "Unknown id",
        status.HTTP_409_CONFLICT: "Conflicts with what is stored",
        status.HTTP_413_REQUEST_ENTITY_TOO_LARGE: "Request body too large",
        status.HTTP_422_UNPROCESSABLE_ENTITY: "Malformed, or cites another prospect's prediction",
        status.HTTP_503_SERVICE_UNAVAILABLE: (
            "MongoDB or MLServer is unreachable, or no model is serving yet (with Retry-After)"
        ),
    }
    # A route's own 422 is a sentence; the same status from validation lists the fields.
    models: dict[int, Any] = {status.HTTP_422_UNPROCESSABLE_ENTITY: Detail | FieldErrors}
    return {
        code: {"model": models.get(code, Detail), "description": described[code]} for code in codes
    }


API_ERRORS: Final = responses(400, 401, 403, 413, 503)
"""What any authenticated JSON route may answer besides its own statuses."""


def install_error_handlers(app: FastAPI) -> None:
    """Answer the failures of the stores and of MLServer with a status and a sentence."""

    @app.exception_handler(PyMongoError)
    async def mongodb_failed(request: Request, error: PyMongoError) -> JSONResponse:
        # The client is told MongoDB's state, not shown a stack trace; the log keeps the cause.
        logger.warning("MongoDB error while serving %s: %s", request.url.path, error)
        detail = MONGODB_UNREACHABLE if isinstance(error, ConnectionFailure) else MONGODB_FAILED
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, detail)

    @app.exception_handler(httpx.TransportError)
    async def mlserver_unreachable(request: Request, error: httpx.TransportError) -> JSONResponse:
        logger.warning("MLServer unreachable while serving %s: %s", request.url.path, error)
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, MLSERVER_UNREACHABLE)

    @app.exception_handler(ServingError)
    async def mlserver_failed(request: Request, error: ServingError) -> JSONResponse:
        logger.warning("MLServer refused %s: %s", request.url.path, error)
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, f"the scoring service failed: {error}")

    @app.exception_handler(NoModelServingError)
    async def no_model_serving(request: Request, error: NoModelServingError) -> JSONResponse:
        answer = _answer(status.HTTP_503_SERVICE_UNAVAILABLE, str(error))
        answer.headers["Retry-After"] = str(error.retry_after)
        return answer

    @app.exception_handler(UnknownProspectsError)
    async def unknown_prospects(request: Request, error: UnknownProspectsError) -> JSONResponse:
        return _answer(status.HTTP_404_NOT_FOUND, str(error))

    @app.exception_handler(CallListNotReadyError)
    async def call_list_not_ready(request: Request, error: CallListNotReadyError) -> JSONResponse:
        return _answer(status.HTTP_503_SERVICE_UNAVAILABLE, str(error))

    @app.exception_handler(NotThisProspectsPredictionError)
    async def not_this_prospect(
        request: Request, error: NotThisProspectsPredictionError
    ) -> JSONResponse:
        return _answer(status.HTTP_422_UNPROCESSABLE_ENTITY, str(error))

    @app.exception_handler(NoIndicatorsError)
    async def no_indicators(request: Request, error: NoIndicatorsError) -> JSONResponse:
        return _answer(status.HTTP_409_CONFLICT, str(error))


def _answer(code: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code)


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` (413), declared or streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 413 once its body is over the limit."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(self.max_bytes)(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLargeError(self.max_bytes)
            return message

        try:
            await self.app(scope, counting_receive, send)
        except _TooLargeError:
            # Read outside a route (no handler answered it): answer here.
            await _too_large(self.max_bytes)(scope, receive, send)


class _TooLargeError(HTTPException):
    """Raised from `receive` once a streamed body is over the limit.

    An HTTPException: FastAPI passes it on while it reads a body (any other error there becomes
    a 400), and its handler answers 413.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            f"request body over {max_bytes} bytes: refused",
        )


def _too_large(max_bytes: int) -> JSONResponse:
    return _answer(
        status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"request body over {max_bytes} bytes: refused"
    )
