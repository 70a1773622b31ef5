"""The callers' page: log in, see prospects ranked, record what each call gave, log out.

Server-rendered (Jinja2), plain forms and no script: a form posts, the server answers a
redirect back to the list (post/redirect/get), so a reload never records a call twice.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import parse_qsl, urlencode

import httpx
from fastapi import APIRouter, Form, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from telescore.app.deps import (
    CallListDep,
    CallsDep,
    ExplainerDep,
    LoginsDep,
    MetricsDep,
    ReleaseStoreDep,
    ScorerDep,
    ScoringDep,
    SessionChecksDep,
    SessionDep,
    SessionsDep,
)
from telescore.app.errors import MLSERVER_UNREACHABLE
from telescore.app.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    Sessions,
    tokens_match,
)
from telescore.core.outcomes import PredictionId
from telescore.core.prospects import AGE_BANDS, CallResult, RankingQuery
from telescore.core.schema import CATEGORICAL_VALUES
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingError
from telescore.jobs.calls import NotThisProspectsPredictionError
from telescore.jobs.indicators import NoIndicatorsError
from telescore.jobs.outcomes import Status
from telescore.jobs.prospect_scoring import UnknownProspectsError
from telescore.jobs.scoring import NoModelServingError, ScoringService

TEMPLATES: Final = Jinja2Templates(directory=Path(__file__).parents[1] / "templates")
QUERY_FIELDS: Final = ("job", "age_band", "min_score", "not_called", "page")
LOGIN_ERRORS: Final = {
    "expired": "The form expired: please try again.",
    "wrong": "Wrong user name or password.",
}
"""What `/login?error=<code>` may say: a code picks a fixed sentence; anything else says nothing."""

router = APIRouter(include_in_schema=False)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, sessions: SessionsDep, error: str | None = None) -> Response:
    """Show the login form, with a fresh CSRF token (and the sentence of an error code)."""
    # The URL is anyone's to write: it names a code, never the text shown.
    return _login_form(request, sessions, LOGIN_ERRORS.get(error or ""))


@router.post("/login")
async def login(
    request: Request,
    sessions: SessionsDep,
    logins: LoginsDep,
    metrics: MetricsDep,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    csrf_token: Annotated[str, Form(max_length=128)],
) -> Response:
    """Log a caller in: check the form's token, then the password (throttled); start a session."""
    if not sessions.login_token_matches(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
        return _redirect("/login?error=expired")
    address = request.client.host if request.client else "unknown"
    attempt = await logins.log_in(username, password, address)
    if attempt.retry_after is not None:
        # Refused unchecked: said on the form, with the status and the wait a program reads.
        if attempt.busy:
            message = "Too many logins at once: please try again in a moment."
            code = status.HTTP_503_SERVICE_UNAVAILABLE
        else:
            minutes = math.ceil(attempt.retry_after / 60)
            message = f"Too many failed logins: try again in {minutes} minute(s)."
            code = status.HTTP_429_TOO_MANY_REQUESTS
        response = _login_form(request, sessions, message, code)
        response.headers["Retry-After"] = str(attempt.retry_after)
        return response
    if attempt.user is None:
        metrics.failed_logins.inc()  # a password checked and wrong (throttled tries are not)
        return _redirect("/login?error=wrong")
    cookie = sessions.new(attempt.user)
    response = _redirect("/")
    _set_cookie(request, response, SESSION_COOKIE, cookie, sessions.max_age_seconds)
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


def _login_form(
    request: Request, sessions: Sessions, error: str | None, code: int = status.HTTP_200_OK
) -> Response:
    cookie, token = sessions.new_login_token()
    response = TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {"csrf_token": token, "error": error, "session": None},
        status_code=code,
    )
    _set_cookie(request, response, LOGIN_CSRF_COOKIE, cookie, 3600)
    return response


@router.post("/logout")
def logout(
    session: SessionDep,
    checks: SessionChecksDep,
    csrf_token: Annotated[str, Form(max_length=128)],
) -> Response:
    """End the user's sessions, server-side (the form must carry the session's token)."""
    if session is None or not tokens_match(session.csrf_token, csrf_token):
        return _redirect("/login")
    # Not only this browser's cookie: a copy kept elsewhere is refused from now on.
    checks.end(session.user)
    response = _redirect("/login")
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/", response_class=HTMLResponse)
def prospects_page(
    request: Request,
    session: SessionDep,
    sessions: SessionsDep,
    call_list: CallListDep,
    scorer: ScorerDep,
    explainer: ExplainerDep,
    scoring: ScoringDep,
    releases: ReleaseStoreDep,
) -> Response:
    """Show the ranked call list (unranked while no model serves), filtered, one page at a time."""
    if session is None:
        return _redirect("/login")
    raw = {
        key: value for key, value in request.query_params.items() if key in QUERY_FIELDS and value
    }
    context: dict[str, Any] = {
        "session": session,
        "jobs": CATEGORICAL_VALUES["job"],
        "age_bands": list(AGE_BANDS),
        "reasons": {},
        "page": None,
        "notice": sessions.read_notice(request.query_params.get("notice")),
        "error": None,
        "indicators": None,
        "routing": _routing_label(scoring),
        "decision": _latest_decision(releases),
        "no_model": None,
        "unranked": None,
    }
    try:
        query = RankingQuery.model_validate(raw)
    except ValidationError as error:
        query = RankingQuery()
        context["error"] = "Filters ignored: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
        )
    context["query"] = query
    status_code, headers = status.HTTP_200_OK, {}
    try:
        page = call_list.page(query)
        context["indicators"] = scorer.indicators.get()
    except NoModelServingError as error:
        # A banner, not an error line: the state lasts until a model passes its gates.
        context["no_model"], status_code = str(error), status.HTTP_503_SERVICE_UNAVAILABLE
        headers["Retry-After"] = str(error.retry_after)
    except NoIndicatorsError as error:
        context["error"], status_code = str(error), status.HTTP_409_CONFLICT
    except (httpx.TransportError, ServingError):
        context["error"], status_code = MLSERVER_UNREACHABLE, status.HTTP_503_SERVICE_UNAVAILABLE
    except PyMongoError:
        context["error"] = "MongoDB is unreachable: try again in a moment"
        status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    else:
        back = urlencode({k: v for k, v in raw.items()})
        context |= {
            "page": page,
            "pages": max(1, math.ceil(page.total / query.page_size)),
            "back": back,
            "page_url": lambda number: "/?" + urlencode({**raw, "page": number}),
            # Unranked (no model serves): no score to explain, a banner says why.
            "reasons": explainer.reasons(page.rows) if page.unranked is None else {},
            "unranked": page.unranked,
        }
    return TEMPLATES.TemplateResponse(
        request, "prospects.html", context, status_code=status_code, headers=headers
    )


@router.post("/calls")
def record_call(
    session: SessionDep,
    sessions: SessionsDep,
    calls: CallsDep,
    metrics: MetricsDep,
    prospect_id: Annotated[str, Form(max_length=64)],
    prediction_id: Annotated[PredictionId, Form()],
    result: Annotated[CallResult, Form()],
    csrf_token: Annotated[str, Form(max_length=128)],
    back: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    """Record a call from the page, then go back to the same list view."""
    if session is None:
        return _redirect("/login")
    if not tokens_match(session.csrf_token, csrf_token):
        return Response("CSRF token missing or wrong", status_code=status.HTTP_403_FORBIDDEN)
    try:
        stored = calls.record_call(prospect_id, prediction_id, result, session.user)
    except (UnknownProspectsError, NotThisProspectsPredictionError) as error:
        return _back(sessions, back, f"Not recorded: {error}")
    if stored.outcome is not None and not stored.pending and stored.outcome.stored is None:
        return _back(sessions, back, f"Not recorded: {stored.outcome.message}")
    if stored.outcome is not None and stored.outcome.status is Status.RECORDED:
        metrics.outcomes_recorded.labels(source="call").inc()
    return _back(sessions, back, f"{prospect_id}: {result.replace('_', ' ')} recorded.")


def _back(sessions: Sessions, back: str, notice: str) -> Response:
    # Only our own filter fields go back into the URL: no open redirect, no injected keys.
    # The notice is signed: a link cannot make the page say what its author wants.
    kept = {k: v for k, v in parse_qsl(back) if k in QUERY_FIELDS}
    return _redirect("/?" + urlencode({**kept, "notice": sessions.sign_notice(notice)}))


def _routing_label(scoring: ScoringService) -> str:
    try:
        routing = scoring.routing.get()
    except PyMongoError:
        return ""
    if routing.mode == "canary":
        return f"canary, {routing.canary_weight:g}% of prospects see the challenger"
    if routing.mode == "shadow":
        return "shadow: the challenger scores too, unseen"
    return "champion only"


def _latest_decision(releases: ReleaseStore) -> str:
    try:
        latest = releases.latest_decisions(1)
    except PyMongoError:
        return ""
    if not latest:
        return ""
    decision = latest[0]
    return (
        f"last release decision ({decision['decided_at']:%Y-%m-%d %H:%M} UTC): "
        f"{decision['action']} version {decision['challenger_version']}: {decision['reason']}"
    )


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=status.HTTP_303_SEE_OTHER)


def _set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    production = request.app.state.settings.project.environment == "production"
    response.set_cookie(
        name, value, max_age=max_age, httponly=True, samesite="lax", secure=production
    )
