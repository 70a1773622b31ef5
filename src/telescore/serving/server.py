"""Start MLServer (`python -m telescore.serving.server <repository>`) with its REST API guarded.

MLServer 1.7 has no authentication, no middleware setting and no request size limit: its
`cors_settings` only add CORS headers, and a browser's "simple" cross-site POST (text/plain or
a form, no preflight) is still executed. So this does what `mlserver start` does, then adds
one ASGI middleware to MLServer's own FastAPI app, the way MLServer adds its CORS, GZip and
Prometheus middlewares. The middleware:

- answers 401 on the model repository API (`/v2/repository/...`: index, load, unload) unless
  the request carries the control plane's bearer token (`ServingSettings.control_token`);
- answers 403 to any request but GET/HEAD that carries an `Origin` header: browsers send one
  on every cross-site POST (a form, `fetch` in no-cors mode, a sandboxed page's `null`),
  and MLServer's callers (the app, the jobs, the reconciler) are not browsers;
- answers 413 to a body larger than `ServingSettings.max_body_bytes` (declared or streamed),
  and 415 to a compressed one (MLServer would inflate a gzip body of any size in memory),
  whichever of several `Content-Encoding` headers says so.

The gRPC port keeps inference only: its repository service is closed for everyone (the
control plane uses REST), since the middleware cannot see gRPC calls.

On the inference path this costs one pass over the request's headers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from telescore.settings import MIN_SECRET_LENGTH, PLACEHOLDER_SECRETS, load_settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REPOSITORY_PATH: Final = "/v2/repository/"
TOKEN_VARIABLE: Final = "TELESCORE_SERVING_CONTROL_TOKEN"  # noqa: S105 - a variable's name
_SAFE_METHODS: Final = frozenset({"GET", "HEAD"})


class ControlPlaneGuard:
    """ASGI middleware: token on the repository API, no cross-site writes, bounded bodies."""

    def __init__(self, app: ASGIApp, *, control_token: str, max_body_bytes: int) -> None:
        if not control_token:
            raise ValueError("MLServer's repository API needs a control token")
        self._app = app
        self._authorization = f"Bearer {control_token}".encode()
        self._max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse what the control plane alone may do, and what a browser page should not."""
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        origin = authorization = length = None
        compressed = False
        for name, value in scope["headers"]:  # lower-case names, as ASGI servers give them
            if name == b"origin":
                origin = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"content-encoding":
                # Every header, not the last: MLServer inflates if any of them says gzip.
                compressed = compressed or value.strip().lower() != b"identity"
        if origin is not None and scope["method"] not in _SAFE_METHODS:
            await _refuse(send, 403, "cross-site requests are refused")
            return
        # `in`, not a prefix: the path includes MLServer's `root_path` when one is set.
        if REPOSITORY_PATH in scope["path"] and not (
            authorization is not None and hmac.compare_digest(authorization, self._authorization)
        ):
            await _refuse(send, 401, "the model repository API needs the control plane's token")
            return
        if compressed:
            await _refuse(send, 415, "compressed request bodies are refused")
            return
        if length is not None:
            if not length.isdigit() or int(length) > self._max_body_bytes:
                await _refuse(send, 413, f"request bodies over {self._max_body_bytes} bytes")
                return
            await self._app(scope, receive, send)
            return
        if scope["method"] in _SAFE_METHODS:  # MLServer reads no body on these
            await self._app(scope, receive, send)
            return
        # No length: a streamed (chunked) body, or none. Read it up to the limit first.
        body = await _read_bounded(receive, self._max_body_bytes)
        if body is None:
            await _refuse(send, 413, f"request bodies over {self._max_body_bytes} bytes")
            return
        await self._app(scope, _replay(body, receive), send)


async def _read_bounded(receive: Receive, limit: int) -> bytes | None:
    """Return the whole body, or None once it grows over `limit` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away: the app sees an empty body
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # e.g. http.disconnect
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _refuse(send: Send, status: int, message: str) -> None:
    # MLServer's own error shape: {"error": ...}, which ServingClient reports.
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _ClosedRepository:
    """Model repository handlers that refuse every call: gRPC's repository service."""

    async def index(self, payload: object) -> object:
        raise PermissionError("the model repository is reached over REST, with a token")

    async def load(self, name: str) -> bool:
        raise PermissionError("the model repository is reached over REST, with a token")

    async def unload(self, name: str) -> bool:
        raise PermissionError("the model repository is reached over REST, with a token")


async def serve(folder: str, control_token: str, max_body_bytes: int) -> None:
    """Do what `mlserver start <folder>` does, REST guarded and gRPC's repository closed."""
    from mlserver.cli.serve import load_settings as load_mlserver_settings  # noqa: PLC0415
    from mlserver.server import MLServer  # noqa: PLC0415

    settings, models_settings = await load_mlserver_settings(folder)
    server = MLServer(settings)
    # Private attributes of MLServer 1.7 (pinned): there is no public hook for either.
    server._rest_server._app.add_middleware(  # noqa: SLF001
        ControlPlaneGuard, control_token=control_token, max_body_bytes=max_body_bytes
    )
    server._grpc_server._model_repository_handlers = _ClosedRepository()  # noqa: SLF001
    await server.start(models_settings)


def main() -> None:
    """Start MLServer on the repository folder given as the only argument."""
    if len(sys.argv) != 2:  # noqa: PLR2004
        sys.exit("usage: python -m telescore.serving.server <model repository folder>")
    from mlserver.logging import configure_logger  # noqa: PLC0415
    from mlserver.utils import install_uvloop_event_loop  # noqa: PLC0415

    serving = load_settings().serving
    token = serving.control_token.get_secret_value() if serving.control_token else ""
    if token.lower() in PLACEHOLDER_SECRETS or len(token) < MIN_SECRET_LENGTH:
        sys.exit(
            f"{TOKEN_VARIABLE} must be set to {MIN_SECRET_LENGTH}+ random characters: "
            "MLServer's repository API answers only the holder of that token"
        )
    # As `mlserver start` does before it starts.
    configure_logger()
    install_uvloop_event_loop()
    asyncio.run(serve(sys.argv[1], token, serving.max_body_bytes))


if __name__ == "__main__":
    main()
