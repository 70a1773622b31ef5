"""Liveness (`/health`: the process answers) and readiness (`/ready`: it can do its work)."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from pydantic import BaseModel
from pymongo.errors import PyMongoError

from telescore.app.deps import ProspectStoreDep, ServingDep, SettingsDep

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


@router.get("/health")
def health(settings: SettingsDep) -> Health:
    """Say that the app is up (whatever its dependencies' state)."""
    return Health(status="ok", environment=settings.project.environment)


@router.get("/ready", responses={503: {"model": Readiness}})
def ready(store: ProspectStoreDep, serving: ServingDep, response: Response) -> Readiness:
    """Say whether MongoDB and the served champion answer; 503 if either does not."""
    try:
        store.ping()
        mongodb = True
    except PyMongoError:
        mongodb = False
    mlserver = serving.model_ready()
    if not (mongodb and mlserver):
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Readiness(ready=mongodb and mlserver, mongodb=mongodb, mlserver=mlserver)
