"""Prospects over JSON: the ranked list, scoring (by id or by profile), and recording a call."""

from __future__ import annotations

from typing import Annotated, Final, Literal

from fastapi import APIRouter, Body, Depends, Path, Query, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from telescore.app.deps import (
    CallerDep,
    CallListDep,
    CallsDep,
    MetricsDep,
    ScorerDep,
    requires,
)
from telescore.app.errors import API_ERRORS, responses
from telescore.app.routes.outcomes import raise_for_outcome
from telescore.core.outcomes import PredictionId
from telescore.core.prospects import CallResult, Prospect, RankingQuery
from telescore.jobs.outcomes import Status
from telescore.jobs.scoring import Scored

MAX_SCORED: Final = 1000
"""Most prospects one scoring request may carry (MLServer's batch limit)."""
ProspectId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]

router = APIRouter(
    prefix="/prospects",
    tags=["prospects"],
    dependencies=[Depends(requires("caller"))],
    responses=API_ERRORS,
)


class Score(BaseModel):
    """A prospect's score as shown, and the prediction an outcome cites."""

    prospect_id: str | None
    score: float
    """Probability that the prospect subscribes."""
    prediction_id: str
    model_version: str
    route: str
    """champion or challenger: whose answer this is."""


class ScoreByIds(BaseModel):
    """Prospects to score, by id."""

    model_config = ConfigDict(extra="forbid")

    prospect_ids: list[ProspectId] = Field(min_length=1, max_length=MAX_SCORED)


class ProfileToScore(Prospect):
    """A profile to score; `prospect_id`, if given, keeps the prospect on one model in a canary."""

    prospect_id: ProspectId | None = None


class ScoreProfiles(BaseModel):
    """Profiles to score, scored with today's calendar and the indicators in force."""

    model_config = ConfigDict(extra="forbid")

    profiles: list[ProfileToScore] = Field(min_length=1, max_length=MAX_SCORED)


class RankedProspect(BaseModel):
    """One row of the call list."""

    prospect_id: str
    age: int
    job: str
    marital: str
    education: str
    score: float | None
    """None while no model serves (the list is unranked)."""
    prediction_id: str
    """The prediction a call's outcome cites (logged unscored while no model serves)."""
    model_version: str
    """Empty while no model serves."""
    route: str
    """champion or challenger; `unserved` while no model serves."""
    called: bool
    last_result: str | None


class RankedList(BaseModel):
    """One page of the call list: best first, or unranked while no model serves."""

    total: int
    page: int
    page_size: int
    ranked: bool
    """False while no model serves: the prospects are in the order `notice` states."""
    notice: str | None
    """While no model serves: that the list is unranked, in which order, and why."""
    prospects: list[RankedProspect]


class CallReport(BaseModel):
    """What a call gave, for the prediction that was shown."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: PredictionId
    result: CallResult


class CallStored(BaseModel):
    """A call as stored, and its outcome's status (none for "no_answer")."""

    prospect_id: str
    prediction_id: str
    result: CallResult
    outcome_status: Status | Literal["pending"] | None
    """What became of the outcome: none for "no_answer"; pending while the prediction ships."""


@router.get("")
def list_prospects(call_list: CallListDep, query: Annotated[RankingQuery, Query()]) -> RankedList:
    """List prospects ranked by score, best first (unranked while no model serves), by page."""
    page = call_list.page(query)
    return RankedList(
        total=page.total,
        page=query.page,
        page_size=query.page_size,
        ranked=page.unranked is None,
        notice=page.unranked,
        prospects=[RankedProspect.model_validate(row) for row in page.rows],
    )


@router.post("/score", responses=responses(404))
async def score_prospects(request: ScoreByIds, scorer: ScorerDep) -> list[Score]:
    """Score prospects by id, now, with today's calendar and the indicators in force."""
    # One thread hop for the blocking work (MongoDB, MLServer), not one per dependency.
    scored = await run_in_threadpool(scorer.score_prospects, request.prospect_ids)
    return [_score(each.prospect_id, each.scored) for each in scored]


@router.post("/score-profiles")
async def score_profiles(request: ScoreProfiles, scorer: ScorerDep) -> list[Score]:
    """Score posted profiles (prospects not in the campaign, or edited ones)."""
    profiles = [profile.model_dump(exclude={"prospect_id"}) for profile in request.profiles]
    # A profile without an id is routed by a fresh key: per request, not sticky.
    keys = [
        profile.prospect_id or f"anonymous-{index}-{id(request)}"
        for index, profile in enumerate(request.profiles)
    ]
    scored = await run_in_threadpool(scorer.score_profiles, profiles, keys)
    return [
        _score(profile.prospect_id, each)
        for profile, each in zip(request.profiles, scored, strict=True)
    ]


@router.post(
    "/{prospect_id}/calls",
    status_code=status.HTTP_201_CREATED,
    responses=responses(404, 409, 422),
)
def record_call(
    prospect_id: Annotated[ProspectId, Path()],
    report: Annotated[CallReport, Body()],
    calls: CallsDep,
    principal: CallerDep,
    metrics: MetricsDep,
) -> CallStored:
    """Record a call: its result, and (subscribed / declined) the prediction's outcome."""
    stored = calls.record_call(prospect_id, report.prediction_id, report.result, principal.name)
    if stored.outcome is not None and not stored.pending:
        raise_for_outcome(stored.outcome)
    if stored.outcome is not None and stored.outcome.status is Status.RECORDED:
        metrics.outcomes_recorded.labels(source="call").inc()
    return CallStored(
        prospect_id=prospect_id,
        prediction_id=report.prediction_id,
        result=report.result,
        outcome_status="pending" if stored.pending else stored.outcome and stored.outcome.status,
    )


def _score(prospect_id: str | None, scored: Scored) -> Score:
    return Score(
        prospect_id=prospect_id,
        score=scored.score,
        prediction_id=scored.prediction_id,
        model_version=scored.model_version,
        route=scored.route,
    )
