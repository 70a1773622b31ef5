"""The web app's factory: `create_app(settings)`; its lifespan opens and closes one context.

Run with `uvicorn --factory telescore.app.main:create_app` (settings from the environment).
One app serves the callers' page, the JSON API (OpenAPI at /docs) and the outcomes API. The
routes reach the lifespan's parts (`app/services.py`) through `app/deps.py` only: a test can
build the app without its lifespan and hand the parts in through `app.dependency_overrides`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from telescore.app.errors import BodyLimit, install_error_handlers
from telescore.app.headers import SecurityHeaders
from telescore.app.routes import (
    alerts,
    health,
    indicators,
    outcomes,
    pages,
    prospects,
    releases,
)
from telescore.app.security import Sessions, session_secret
from telescore.app.services import build_services
from telescore.io.context import Context
from telescore.io.release_store import ReleaseStore
from telescore.jobs.scoring import ScoringService
from telescore.settings import Settings, load_settings

STATIC = Path(__file__).parent / "static"
SCORING_TIMEOUT_SECONDS = 10.0


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` default to those of the environment, read now.

    Settings are validated first: in production a missing or placeholder secret stops here.
    """
    resolved = settings or load_settings()
    secret = session_secret(resolved)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One context for the app's life; its clients connect lazily: the app starts, and
        # answers 503, while MongoDB or MLServer is down. Leaving closes them all.
        with Context(resolved) as ctx:
            serving = ctx.serving_client(SCORING_TIMEOUT_SECONDS)
            release_store = ctx.store(ReleaseStore)
            batch_rows = resolved.api.batch_rows
            with ScoringService(serving, release_store, batch_rows=batch_rows) as scoring:
                app.state.services = build_services(ctx, scoring, serving)
                yield

    app = FastAPI(
        title="telescore",
        summary="Rank telemarketing prospects, record call outcomes, release models safely.",
        lifespan=lifespan,
    )
    app.state.settings = resolved
    app.state.sessions = Sessions(secret, round(resolved.api.session_hours * 3600))
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=resolved.api.max_body_bytes)
    # Added last, so outermost: every answer gets the headers, the body limit's 413 too.
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (pages, prospects, outcomes, indicators, releases, alerts, health):
        app.include_router(module.router)
    return app
