"""Dependencies of the routes, as `Annotated` aliases; tests swap them via dependency_overrides."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Final, TypeVar

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

T = TypeVar("T")

_api_key = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="An API key from `telescore apikey create` (role caller or ops).",
)


def from_state(name: str, kind: type[T]) -> Callable[[Request], Awaitable[T]]:
    """Return a dependency giving what the lifespan put in `app.state.<name>` (no thread hop)."""

    async def get(request: Request) -> T:
        value: T = getattr(request.app.state, name)
        return value

    get.__name__ = f"get_{name}"
    return get


get_settings = from_state("settings", Settings)
get_outcome_store = from_state("outcome_store", OutcomeStore)
get_prospect_store = from_state("prospect_store", ProspectStore)
get_access_store = from_state("access_store", AccessStore)
get_release_store = from_state("release_store", ReleaseStore)
get_call_list = from_state("call_list", CallList)
get_scoring = from_state("scoring", ScoringService)
get_sessions = from_state("sessions", Sessions)


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
