"""The API's app factory: `create_app(settings)`; its lifespan opens and closes the clients.

Run with `uvicorn --factory telescore.app.main:create_app` (settings from the environment).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from telescore.app.deps import SettingsDep
from telescore.app.routes import outcomes
from telescore.io.outcome_store import OutcomeStore
from telescore.settings import Settings, load_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API; `settings` default to those of the environment, read now."""
    resolved = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mongodb = resolved.mongodb
        # The client connects lazily: the API starts, and answers 503, while MongoDB is down.
        with OutcomeStore(
            mongodb.resolved_uri(resolved.project.host), mongodb.database
        ) as outcome_store:
            app.state.outcome_store = outcome_store
            yield

    app = FastAPI(
        title="telescore", summary="Call outcomes for telescore's predictions.", lifespan=lifespan
    )
    app.state.settings = resolved
    app.include_router(outcomes.router)
    app.add_api_route("/health", health, methods=["GET"], tags=["health"])
    return app


def health(settings: SettingsDep) -> dict[str, str]:
    """Say that the API is up (whatever MongoDB's state: outcome routes answer 503 then)."""
    return {"status": "ok", "environment": settings.project.environment}
