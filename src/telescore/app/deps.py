"""Dependencies of the routes, as `Annotated` aliases; tests swap them via dependency_overrides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import Annotated, Any, Final

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from telescore.app.metrics import AppMetrics
from telescore.app.security import (
    SESSION_COOKIE,
    ApiKeys,
    Session,
    SessionChecks,
    Sessions,
    tokens_match,
)
from telescore.app.services import Services
from telescore.core.access import API_KEY_HEADER, Principal, Role, allows
from telescore.io.access_store import AccessStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prospect_store import ProspectStore
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient
from telescore.jobs.calls import CallRecorder
from telescore.jobs.explanations import Explainer
from telescore.jobs.logins import LoginGuard
from telescore.jobs.loop_status import LoopStatusReader
from telescore.jobs.prospect_scoring import ProspectScorer
from telescore.jobs.ranking import CallListCache
from telescore.jobs.scoring import ScoringService
from telescore.settings import Settings

MONGODB_UNREACHABLE: Final = "MongoDB is unreachable: nothing was read or recorded; try again later"
MONGODB_FAILED: Final = "MongoDB failed to answer: nothing was read or recorded; try again later"

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key from `telescore apikey create` (role caller, integration or ops).",
)

_scraper_token = HTTPBearer(
    auto_error=False,
    description="The metrics token (`TELESCORE_API_METRICS_TOKEN`) Prometheus scrapes with.",
)


async def get_settings(request: Request) -> Settings:
    """Return the app's settings (set by `create_app`)."""
    settings: Settings = request.app.state.settings
    return settings


async def get_sessions(request: Request) -> Sessions:
    """Return the signer of session and login cookies (set by `create_app`)."""
    sessions: Sessions = request.app.state.sessions
    return sessions


async def get_metrics(request: Request) -> AppMetrics:
    """Return the app's metrics (set by `create_app`)."""
    metrics: AppMetrics = request.app.state.metrics
    return metrics


async def requires_metrics_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_scraper_token)],
) -> None:
    """Admit the scraper: 401 unless the bearer token is the app's metrics token."""
    expected: str = request.app.state.metrics_token
    if credentials is None or not tokens_match(expected, credentials.credentials):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "the metrics token is required as a bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def part(name: str) -> Callable[[Request], Awaitable[Any]]:
    """Return the dependency giving the lifespan's part `name` (a field of `Services`)."""
    if name not in {field.name for field in fields(Services)}:
        raise ValueError(f"no part {name!r} in Services")

    async def get(request: Request) -> Any:
        return getattr(request.app.state.services, name)

    get.__name__ = f"get_{name}"
    return get


# One dependency per part, named get_<part>. Each reads what the lifespan built, in the event
# loop: no thread hop, and nothing is built per request.
get_outcome_store = part("outcome_store")
get_prospect_store = part("prospect_store")
get_access_store = part("access_store")
get_release_store = part("release_store")
get_serving = part("serving")
"""MLServer, for readiness only: scoring goes through `get_scoring`."""
get_scoring = part("scoring")
get_scorer = part("scorer")
get_call_list = part("call_list")
get_calls = part("calls")
get_explainer = part("explainer")
get_api_keys = part("api_keys")
get_logins = part("logins")
get_session_checks = part("session_checks")
get_loop = part("loop")


async def get_session(
    request: Request,
    sessions: Annotated[Sessions, Depends(get_sessions)],
    checks: Annotated[SessionChecks, Depends(get_session_checks)],
) -> Session | None:
    """Return the logged-in user's live session, or None (no cookie, forged, expired or ended)."""
    cookie = sessions.read(request.cookies.get(SESSION_COOKIE))
    if cookie is None:
        return None
    # A user read lately costs no thread hop; only a miss reads MongoDB, in a thread.
    if (cached := checks.cached(cookie)) is not None:
        return cached[0]
    return await run_in_threadpool(checks.check, cookie)


def requires(role: Role, *others: Role) -> Callable[..., Awaitable[Principal]]:
    """Return a dependency admitting API keys allowed any of the roles: 401 without, 403 else."""
    roles = (role, *others)

    async def check(
        keys: Annotated[ApiKeys, Depends(get_api_keys)],
        metrics: Annotated[AppMetrics, Depends(get_metrics)],
        key: Annotated[str | None, Security(_api_key)],
    ) -> Principal:
        # A key seen lately costs no thread hop; only a miss reads MongoDB, in a thread.
        principal = keys.cached(key) if key else None
        if principal is None and key:
            principal = await run_in_threadpool(keys.principal, key)
        if principal is None:
            if key:
                metrics.failed_logins.inc()  # a wrong key is a failed login; none is not
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"a valid API key is required in the {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        if not any(allows(principal.role, each) for each in roles):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {' or '.join(roles)} role; the key has {principal.role}",
            )
        return principal

    return check


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[AppMetrics, Depends(get_metrics)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]
OutcomeStoreDep = Annotated[OutcomeStore, Depends(get_outcome_store)]
ProspectStoreDep = Annotated[ProspectStore, Depends(get_prospect_store)]
AccessStoreDep = Annotated[AccessStore, Depends(get_access_store)]
ReleaseStoreDep = Annotated[ReleaseStore, Depends(get_release_store)]
ServingDep = Annotated[ServingClient, Depends(get_serving)]
ScoringDep = Annotated[ScoringService, Depends(get_scoring)]
ScorerDep = Annotated[ProspectScorer, Depends(get_scorer)]
CallListDep = Annotated[CallListCache, Depends(get_call_list)]
CallsDep = Annotated[CallRecorder, Depends(get_calls)]
ExplainerDep = Annotated[Explainer, Depends(get_explainer)]
LoginsDep = Annotated[LoginGuard, Depends(get_logins)]
SessionChecksDep = Annotated[SessionChecks, Depends(get_session_checks)]
LoopDep = Annotated[LoopStatusReader, Depends(get_loop)]
SessionDep = Annotated[Session | None, Depends(get_session)]
CallerDep = Annotated[Principal, Depends(requires("caller"))]
OpsDep = Annotated[Principal, Depends(requires("ops"))]
