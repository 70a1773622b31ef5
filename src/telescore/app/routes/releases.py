"""Release routing (champion only, canary, shadow) and the release decisions taken."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from telescore.app.deps import OpsDep, ReleaseStoreDep, ScoringDep, requires
from telescore.app.errors import API_ERRORS
from telescore.core.routing import RoutingConfig, RoutingMode
from telescore.jobs.releases import set_routing

router = APIRouter(tags=["releases"], responses=API_ERRORS)


class NewRouting(BaseModel):
    """How requests are split between champion and challenger from now on."""

    model_config = ConfigDict(extra="forbid")

    mode: RoutingMode
    canary_weight: float = Field(default=0.0, ge=0.0, le=100.0, strict=True)
    """Percent of prospects shown the challenger (canary mode only)."""


class Routing(BaseModel):
    """The routing in force, and which versions MLServer serves."""

    routing: RoutingConfig
    champion_version: str | None
    challenger_version: str | None


@router.get("/routing", dependencies=[Depends(requires("caller"))])
def read_routing(scoring: ScoringDep) -> Routing:
    """Return the routing in force and the served versions."""
    scoring.routing.forget()
    versions = scoring.versions.get()
    return Routing(
        routing=scoring.routing.get(),
        champion_version=versions.champion,
        challenger_version=versions.challenger,
    )


@router.put("/routing", status_code=status.HTTP_201_CREATED)
def update_routing(
    new: NewRouting, store: ReleaseStoreDep, scoring: ScoringDep, principal: OpsDep
) -> RoutingConfig:
    """Change the routing (ops); it takes effect within a second, with no restart."""
    try:
        routing = RoutingConfig(mode=new.mode, canary_weight=new.canary_weight)
    except ValidationError as error:
        # The weight is checked against the mode here: answered as any body error, 422.
        raise RequestValidationError(
            [{**each, "loc": ("body", *each["loc"])} for each in error.errors()]
        ) from None
    config = set_routing(store, routing, principal.name)
    scoring.routing.forget()
    return config


@router.get("/releases/decisions", dependencies=[Depends(requires("caller"))])
def release_decisions(store: ReleaseStoreDep, limit: int = 20) -> list[dict[str, Any]]:
    """Return the latest release decisions (promote, roll back, wait), newest first."""
    return [_jsonable(each) for each in store.latest_decisions(min(max(limit, 1), 100))]


def _jsonable(document: dict[str, Any]) -> dict[str, Any]:
    return {
        key: value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value
        for key, value in document.items()
    }
