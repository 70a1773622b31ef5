"""The web app's factory: `create_app(settings)`; its lifespan opens and closes the clients.

Run with `uvicorn --factory telescore.app.main:create_app` (settings from the environment).
One app serves the callers' page, the JSON API (OpenAPI at /docs) and the outcomes API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from telescore.app.errors import BodyLimit, install_error_handlers
from telescore.app.routes import health, indicators, outcomes, pages, prospects, releases
from telescore.app.security import ApiKeys, Sessions, session_secret
from telescore.io.access_store import AccessStore
from telescore.io.call_list_store import CallListStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prospect_store import ProspectStore
from telescore.io.registry import Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient
from telescore.jobs.call_lists import SharedCallLists
from telescore.jobs.explanations import Explainer
from telescore.jobs.ranking import CallList
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
        uri = resolved.mongodb.resolved_uri(resolved.project.host)
        database = resolved.mongodb.database
        # The clients connect lazily: the app starts, and answers 503, while MongoDB is down.
        with ExitStack() as stack:
            outcome_store = stack.enter_context(OutcomeStore(uri, database))
            prospect_store = stack.enter_context(ProspectStore(uri, database))
            access_store = stack.enter_context(AccessStore(uri, database))
            release_store = stack.enter_context(ReleaseStore(uri, database))
            call_list_store = stack.enter_context(CallListStore(uri, database))
            serving = stack.enter_context(
                ServingClient(
                    resolved.serving.resolved_url(resolved.project.host),
                    timeout=SCORING_TIMEOUT_SECONDS,
                )
            )
            scoring = ScoringService(serving, release_store, batch_rows=resolved.api.batch_rows)
            stack.callback(scoring.close)
            app.state.outcome_store = outcome_store
            app.state.prospect_store = prospect_store
            app.state.access_store = access_store
            app.state.release_store = release_store
            app.state.serving = serving
            app.state.scoring = scoring
            app.state.call_list = CallList(
                scoring,
                prospect_store,
                outcome_store,
                explainer=Explainer(
                    lambda: Registry.from_settings(resolved.mlflow, resolved.project.host)
                ),
                # One list per cache key for every replica, scored by one of them.
                shared=SharedCallLists(call_list_store),
                outcome_expiry=resolved.mongodb.pending_outcome_expiry,
            )
            app.state.api_keys = ApiKeys(access_store)
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
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for module in (pages, prospects, outcomes, indicators, releases, health):
        app.include_router(module.router)
    return app
