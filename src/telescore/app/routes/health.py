"""Liveness (`/health`: the process answers) and readiness (`/ready`: it can do its work)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from pymongo.errors import PyMongoError

from telescore.app.deps import ProspectStoreDep, ScoringDep, ServingDep, SettingsDep
from telescore.app.errors import MLSERVER_UNREACHABLE

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The app answers."""

    status: str
    environment: str


class Readiness(BaseModel):
    """Whether the app's dependencies answer: MongoDB, and MLServer's champion."""

    ready: bool
    mongodb: bool
    mlserver: bool
    detail: str | None = None
    """Why it is not ready, when no model is serving (none has passed its gates yet, ...)."""


@router.get("/health")
def health(settings: SettingsDep) -> Health:
    """Say that the app is up (whatever its dependencies' state)."""
    return Health(status="ok", environment=settings.project.environment)


@router.get("/ready", responses={503: {"model": Readiness}})
def ready(
    store: ProspectStoreDep, serving: ServingDep, scoring: ScoringDep, response: Response
) -> Readiness:
    """Say whether MongoDB and the served champion answer; 503 if either does not, and why."""
    try:
        store.ping()
        mongodb = True
    except PyMongoError:
        mongodb = False
    mlserver = serving.model_ready()
    detail = None
    if not mlserver:
        # MLServer up with no champion loaded: say why no model serves.
        detail = scoring.unserved_reason() if serving.live() else MLSERVER_UNREACHABLE
    if not (mongodb and mlserver):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(ready=mongodb and mlserver, mongodb=mongodb, mlserver=mlserver, detail=detail)
