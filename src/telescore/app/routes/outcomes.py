"""Call outcomes over HTTP: record one, record a batch, read one. Parse, call jobs, answer.

201 recorded, 200 already recorded (the same outcome), 202 pending (the prediction is not
logged yet: the outcome is kept and joined to it when it is), 404 expired (no prediction is
logged under an id issued further from now than `TELESCORE_MONGODB_PENDING_OUTCOME_HOURS`),
409 a different outcome is recorded already, pending or not (it stays), 422 malformed (naming
the field), 503 MongoDB down.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Response, status
from pydantic import BaseModel

from telescore.app.deps import MetricsDep, OutcomeStoreDep, SettingsDep, requires
from telescore.app.errors import API_ERRORS, Detail
from telescore.core.outcomes import Outcome, PredictionId, RecordedOutcome
from telescore.jobs import outcomes
from telescore.jobs.outcomes import REJECTED, RecordResult, Status

MAX_BATCH: Final = 1000
"""Most outcomes one batch request may carry: larger ones are refused (422), not split."""

# Reporting outcomes needs an integration key (or ops): they decide promotions, so a caller's
# key records only its own calls (`POST /prospects/{id}/calls`). Both may read one.
router = APIRouter(prefix="/outcomes", tags=["outcomes"], responses=API_ERRORS)
REPORTS: Final = [Depends(requires("integration"))]


class Recorded(BaseModel):
    """An outcome reported: recorded now, recorded before (the same), or pending."""

    status: Status
    detail: str
    """What became of it, for a person."""
    outcome: RecordedOutcome
    """The outcome stored for the prediction (`pending` until the prediction is logged)."""


class BatchItem(BaseModel):
    """What became of one outcome of a batch, in the batch's order."""

    prediction_id: str
    status: Status
    detail: str


class BatchRecorded(BaseModel):
    """What became of each outcome of a batch."""

    recorded: int
    already_recorded: int
    pending: int
    """Recorded as pending: their predictions are not logged yet; joined when they are."""
    rejected: int
    """Expired prediction ids and conflicts: not recorded."""
    results: list[BatchItem]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    dependencies=REPORTS,
    responses={
        status.HTTP_200_OK: {"model": Recorded, "description": "Already recorded, the same"},
        status.HTTP_202_ACCEPTED: {
            "model": Recorded,
            "description": "Pending: the prediction is not logged yet; joined when it is",
        },
        status.HTTP_404_NOT_FOUND: {
            "model": Detail,
            "description": "Expired: no prediction is logged under this id, and none can be",
        },
        status.HTTP_409_CONFLICT: {
            "model": Detail,
            "description": "A different outcome is recorded",
        },
    },
)
def record_outcome(
    outcome: Outcome,
    store: OutcomeStoreDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    response: Response,
) -> Recorded:
    """Record the outcome of one call (pending if its prediction is not logged yet)."""
    result = outcomes.record_outcome(store, outcome, expiry=settings.mongodb.pending_outcome_expiry)
    raise_for_outcome(result)
    if result.status is Status.RECORDED:
        metrics.outcomes_recorded.labels(source="api").inc()
    if result.status is Status.ALREADY_RECORDED:
        response.status_code = status.HTTP_200_OK
    elif result.status is Status.PENDING:
        response.status_code = status.HTTP_202_ACCEPTED
    return Recorded(status=result.status, detail=result.message, outcome=_stored(result))


@router.post("/batch", dependencies=REPORTS)
def record_outcomes(
    reported: Annotated[list[Outcome], Body(min_length=1, max_length=MAX_BATCH)],
    store: OutcomeStoreDep,
    settings: SettingsDep,
    metrics: MetricsDep,
) -> BatchRecorded:
    """Record the outcomes of many calls; say what became of each (rejected ones say why)."""
    results = outcomes.record_outcomes(
        store, reported, expiry=settings.mongodb.pending_outcome_expiry
    )
    counts = {each: sum(result.status is each for result in results) for each in Status}
    metrics.outcomes_recorded.labels(source="api").inc(counts[Status.RECORDED])
    return BatchRecorded(
        recorded=counts[Status.RECORDED],
        already_recorded=counts[Status.ALREADY_RECORDED],
        pending=counts[Status.PENDING],
        rejected=sum(counts[each] for each in REJECTED),
        results=[
            BatchItem(
                prediction_id=result.outcome.prediction_id,
                status=result.status,
                detail=result.message,
            )
            for result in results
        ],
    )


@router.get(
    "/{prediction_id}",
    dependencies=[Depends(requires("caller", "integration"))],
    responses={
        status.HTTP_404_NOT_FOUND: {
            "model": Detail,
            "description": "No outcome recorded for this prediction id (yet)",
        },
    },
)
def read_outcome(
    prediction_id: Annotated[PredictionId, Path(description="The prediction's id")],
    store: OutcomeStoreDep,
) -> RecordedOutcome:
    """Return the outcome recorded for a prediction; `pending` while it is not logged yet."""
    try:
        outcome = outcomes.find_outcome(store, prediction_id)
    except outcomes.UnknownPredictionError as error:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(error)) from None
    if outcome is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"no outcome recorded yet for prediction {prediction_id}"
        )
    return outcome


def raise_for_outcome(result: RecordResult) -> None:
    """Answer 404 for an expired prediction id and 409 for a different outcome already stored."""
    if result.status is Status.EXPIRED:
        raise HTTPException(status.HTTP_404_NOT_FOUND, result.message)
    if result.status is Status.CONFLICT:
        raise HTTPException(status.HTTP_409_CONFLICT, result.message)


def _stored(result: RecordResult) -> RecordedOutcome:
    if result.stored is None:  # only an expired one has none, answered above
        raise RuntimeError(f"no stored outcome for {result.outcome.prediction_id}")
    return result.stored
