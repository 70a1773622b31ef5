"""The socio-economic indicators in force: read (callers) and update (ops)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, ConfigDict

from telescore.app.deps import OpsDep, ProspectStoreDep, ScorerDep, requires
from telescore.app.errors import API_ERRORS, responses
from telescore.core.prospects import Indicators, IndicatorsRecord
from telescore.jobs.indicators import set_indicators

router = APIRouter(prefix="/indicators", tags=["indicators"], responses=API_ERRORS)


class NewIndicators(BaseModel):
    """Indicators to put in force now; `effective_from` defaults to today."""

    model_config = ConfigDict(extra="forbid")

    indicators: Indicators
    effective_from: date | None = None


@router.get("", dependencies=[Depends(requires("caller"))], responses=responses(404))
def read_indicators(scorer: ScorerDep) -> IndicatorsRecord:
    """Return the indicators every prospect is scored with now."""
    scorer.indicators.forget()
    record = scorer.indicators.get()
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no indicators entered yet")
    return record


@router.put("", status_code=status.HTTP_201_CREATED)
def update_indicators(
    new: NewIndicators, store: ProspectStoreDep, scorer: ScorerDep, principal: OpsDep
) -> IndicatorsRecord:
    """Put new indicators in force (ops): the call list is rescored on its next view."""
    set_indicators(
        store, new.indicators, new.effective_from or datetime.now(UTC).date(), principal.name
    )
    scorer.indicators.forget()
    record = scorer.indicators.get()
    assert record is not None  # noqa: S101 - just stored
    return record
