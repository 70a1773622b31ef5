"""Dependencies of the routes, as `Annotated` aliases; tests swap them via dependency_overrides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader

from telescore.app.security import API_KEY_HEADER, SESSION_COOKIE, ApiKeys, Session, Sessions
from telescore.core.access import Principal, Role, allows
from telescore.io.access_store import AccessStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prospect_store import ProspectStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs.ranking import CallList
from telescore.jobs.scoring import ScoringService
from telescore.settings import Settings

MONGODB_UNREACHABLE: Final = "MongoDB is unreachable: nothing was read or recorded; try again later"
MONGODB_FAILED: Final = "MongoDB failed to answer: nothing was read or recorded; try again later"

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key from `telescore apikey create` (role caller or ops).",
)


async def get_settings(request: Request) -> Settings:
    """Return the settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


async def get_outcome_store(request: Request) -> OutcomeStore:
    """Return the app's outcome store."""
    store: OutcomeStore = request.app.state.outcome_store
    return store


async def get_prospect_store(request: Request) -> ProspectStore:
    """Return the app's prospect store."""
    store: ProspectStore = request.app.state.prospect_store
    return store


async def get_access_store(request: Request) -> AccessStore:
    """Return the app's users and API keys store."""
    store: AccessStore = request.app.state.access_store
    return store


async def get_release_store(request: Request) -> ReleaseStore:
    """Return the app's routing and release decisions store."""
    store: ReleaseStore = request.app.state.release_store
    return store


async def get_call_list(request: Request) -> CallList:
    """Return the app's ranked call list."""
    call_list: CallList = request.app.state.call_list
    return call_list


async def get_scoring(request: Request) -> ScoringService:
    """Return the app's scoring service."""
    scoring: ScoringService = request.app.state.scoring
    return scoring


async def get_sessions(request: Request) -> Sessions:
    """Return the app's session signer."""
    sessions: Sessions = request.app.state.sessions
    return sessions


async def get_session(request: Request) -> Session | None:
    """Return the logged-in user's session, or None (no cookie, forged or expired)."""
    sessions: Sessions = request.app.state.sessions
    return sessions.read(request.cookies.get(SESSION_COOKIE))


def requires(role: Role) -> Callable[..., Awaitable[Principal]]:
    """Return a dependency admitting API keys of `role` or above: 401 without one, 403 below."""

    async def check(request: Request, key: Annotated[str | None, Security(_api_key)]) -> Principal:
        keys: ApiKeys = request.app.state.api_keys
        # A key seen lately costs no thread hop; only a miss reads MongoDB, in a thread.
        principal = keys.cached(key) if key else None
        if principal is None and key:
            principal = await run_in_threadpool(keys.principal, key)
        if principal is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                f"a valid API key is required in the {API_KEY_HEADER} header",
                headers={"WWW-Authenticate": "ApiKey"},
            )
        if not allows(principal.role, role):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"this needs the {role} role; the key has {principal.role}",
            )
        return principal

    return check


SettingsDep = Annotated[Settings, Depends(get_settings)]
OutcomeStoreDep = Annotated[OutcomeStore, Depends(get_outcome_store)]
ProspectStoreDep = Annotated[ProspectStore, Depends(get_prospect_store)]
AccessStoreDep = Annotated[AccessStore, Depends(get_access_store)]
ReleaseStoreDep = Annotated[ReleaseStore, Depends(get_release_store)]
CallListDep = Annotated[CallList, Depends(get_call_list)]
ScoringDep = Annotated[ScoringService, Depends(get_scoring)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]
SessionDep = Annotated[Session | None, Depends(get_session)]
CallerDep = Annotated[Principal, Depends(requires("caller"))]
OpsDep = Annotated[Principal, Depends(requires("ops"))]
