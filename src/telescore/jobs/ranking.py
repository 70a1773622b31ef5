"""The call list: every prospect scored, best first, and the calls callers record on it.

Ranking 40k prospects must not rescore them on every page view. The list is scored once per
cache key: the versions MLServer serves, the routing revision, the indicators revision, the
calendar day and the number of prospects. Any of them changing rescores the whole list (each
row is then a logged prediction, with its id); otherwise a page view is a filter and a slice of
a sorted in-memory frame. With a shared store (`jobs/call_lists.py`) the list of a key is scored
by one replica and read by the others: every replica shows the same score and prediction id.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import pandas as pd

from telescore.core.call_lists import CHUNK_ROWS, CacheKey
from telescore.core.outcomes import PENDING_EXPIRY, Outcome
from telescore.core.prospects import (
    ID,
    PROSPECT_FIELDS,
    CallResult,
    Indicators,
    IndicatorsRecord,
    RankingQuery,
    model_records,
    model_rows,
    outcome_label,
    rank,
)
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prospect_store import ProspectStore
from telescore.jobs.call_lists import Columns, SharedCallLists, columns_of
from telescore.jobs.explanations import Explainer
from telescore.jobs.outcomes import REJECTED, RecordResult, Status, record_outcome
from telescore.jobs.scoring import Refreshed, Scored, ScoringService

PROSPECTS_REFRESH_SECONDS: Final = 10.0


class NoIndicatorsError(LookupError):
    """No indicators were ever entered: prospects cannot be scored."""


class UnknownProspectsError(LookupError):
    """Some prospect ids are not in the `prospects` collection."""

    def __init__(self, missing: Sequence[str]) -> None:
        super().__init__(f"unknown prospect ids: {', '.join(missing)}")
        self.missing = list(missing)


@dataclass(frozen=True)
class ScoredProspect:
    """A prospect's score, and the prediction a call outcome will cite."""

    prospect_id: str
    scored: Scored


@dataclass(frozen=True)
class RankedPage:
    """One page of the call list."""

    rows: list[dict[str, Any]]
    """Prospect fields, score, prediction_id, model_version, route, called, last_result."""
    total: int
    """Prospects matching the filters, over all pages."""
    query: RankingQuery
    key: CacheKey
    scored_at: datetime


@dataclass(frozen=True)
class CallRecorded:
    """A call as stored, and what became of its outcome."""

    prospect_id: str
    prediction_id: str
    result: CallResult
    outcome: RecordResult | None
    """None for "no answer": it gives no label."""
    pending: bool
    """The prediction is not in MongoDB yet: its outcome is stored pending, joined once it is."""


class CallList:
    """The ranked, cached call list over the prospects; thread-safe."""

    def __init__(
        self,
        scoring: ScoringService,
        prospects: ProspectStore,
        outcomes: OutcomeStore,
        *,
        explainer: Explainer | None = None,
        shared: SharedCallLists | None = None,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
        outcome_expiry: timedelta = PENDING_EXPIRY,
    ) -> None:
        self._scoring = scoring
        self._shared = shared
        self._prospects = prospects
        self._outcomes = outcomes
        self._today = today
        self._outcome_expiry = outcome_expiry
        self._explainer = explainer
        self._reasons: dict[str, str] = {}
        self.indicators = Refreshed(lambda: read_indicators(prospects))
        self._count = Refreshed(prospects.count_prospects, PROSPECTS_REFRESH_SECONDS)
        self._lock = threading.Lock()
        self._frame: pd.DataFrame | None = None
        self._key: CacheKey | None = None
        self._scored_at = datetime.min.replace(tzinfo=UTC)
        self._calls_seen_at: datetime | None = None

    def key(self) -> CacheKey:
        """Return the cache key of the list as it should be now."""
        versions = self._scoring.versions.get()
        return CacheKey(
            champion=versions.champion,
            challenger=versions.challenger,
            routing_revision=self._scoring.routing.get().revision,
            indicators_revision=self._indicators_record().revision,
            day=self._today(),
            prospects=self._count.get(),
        )

    def page(self, query: RankingQuery) -> RankedPage:
        """Return one page of the list, rescoring the list first if its key changed."""
        with self._lock:
            frame = self._current_frame()
            self._apply_new_calls(frame)
            page, total = rank(frame, query)
            rows = [
                {"prospect_id": prospect_id, **{str(key): value for key, value in row.items()}}
                for prospect_id, row in zip(page.index, page.to_dict(orient="records"), strict=True)
            ]
            assert self._key is not None  # noqa: S101 - set with the frame
            return RankedPage(rows, total, query, self._key, self._scored_at)

    def reasons(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Return why each shown row scores high (its top fields), by prospect id."""
        if self._explainer is None or not rows:
            return {}
        frame = pd.DataFrame(list(rows)).set_index("prospect_id")
        with self._lock:
            missing = [each for each in frame.index if each not in self._reasons]
        if missing:
            chosen = frame.loc[missing]
            inputs = model_rows(chosen, self._indicators_record().indicators, self._today())
            explained = self._explainer.explain(inputs, chosen["model_version"])
            with self._lock:
                self._reasons.update({each: explained.get(each, "") for each in missing})
        with self._lock:
            return {each: self._reasons.get(each, "") for each in frame.index}

    def score_prospects(self, prospect_ids: Sequence[str]) -> list[ScoredProspect]:
        """Score prospects by id now (a logged prediction each), in the order given."""
        found = self._prospects.get_many(prospect_ids)
        missing = [each for each in prospect_ids if each not in found]
        if missing:
            raise UnknownProspectsError(missing)
        profiles = [found[each] for each in prospect_ids]
        rows = model_records(profiles, self._indicators_record().indicators, self._today())
        scored = self._scoring.score(rows, list(prospect_ids))
        return [
            ScoredProspect(each, answer) for each, answer in zip(prospect_ids, scored, strict=True)
        ]

    def score_rows(
        self, prospects: Sequence[Mapping[Any, Any]], routing_keys: Sequence[str]
    ) -> list[Scored]:
        """Score posted profiles (PROSPECT_FIELDS keys) with today's calendar and indicators."""
        rows = model_records(prospects, self._indicators_record().indicators, self._today())
        return self._scoring.score(rows, routing_keys)

    def record_call(
        self, prospect_id: str, prediction_id: str, result: CallResult, caller: str
    ) -> CallRecorded:
        """Store a call, and its outcome (subscribed or declined) for the prediction shown.

        Raises UnknownProspectsError for an unknown prospect. The outcome's status says if the
        prediction expired or has another outcome already: then the call is not stored. A
        prediction scored moments ago may not be in MongoDB yet (the log ships within
        `ship_max_defer`): its outcome is stored pending and joins it once it lands.
        """
        if not self._prospects.get_many([prospect_id]):
            raise UnknownProspectsError([prospect_id])
        label = outcome_label(result)
        call: dict[str, Any] = {
            "_id": str(uuid.uuid4()),
            "prospect_id": prospect_id,
            "prediction_id": prediction_id,
            "result": result,
            "caller": caller,
            "at": datetime.now(UTC),
        }
        outcome = None
        if label is not None:
            outcome = record_outcome(
                self._outcomes, _outcome(call, label), expiry=self._outcome_expiry
            )
            if outcome.status in REJECTED:
                return CallRecorded(prospect_id, prediction_id, result, outcome, pending=False)
        self._prospects.record_call(call)
        with self._lock:
            if self._frame is not None and prospect_id in self._frame.index:
                self._frame.loc[prospect_id, ["called", "last_result"]] = [True, result]
        pending = outcome is not None and outcome.status is Status.PENDING
        return CallRecorded(prospect_id, prediction_id, result, outcome, pending=pending)

    def _indicators_record(self) -> IndicatorsRecord:
        record = self.indicators.get()
        if record is None:
            raise NoIndicatorsError(
                "no indicators in force: enter them (`telescore indicators set` or PUT /indicators)"
            )
        return record

    def _current_frame(self) -> pd.DataFrame:
        key = self.key()
        if self._frame is not None and key == self._key:
            return self._frame
        read: list[pd.DataFrame] = []

        def prospects() -> pd.DataFrame:  # read once, and only if the list is built here
            if not read:
                read.append(self._read_prospects())
            return read[0]

        if self._shared is None:
            columns = _concatenated(self._score_chunks(prospects()))
            scored_at = datetime.now(UTC)
        else:
            # With a list already shown, another replica's scoring is not waited for.
            stored = self._shared.obtain(
                key, lambda: self._score_chunks(prospects()), wait=self._frame is None
            )
            if stored is None:
                assert self._frame is not None  # noqa: S101 - only without waiting
                return self._frame  # the previous key's list, until the new one is ready
            columns, scored_at = stored.columns, stored.scored_at
        self._frame = self._ranked(prospects(), columns)
        self._key = key
        self._scored_at = scored_at
        return self._frame

    def _read_prospects(self) -> pd.DataFrame:
        prospects = pd.DataFrame(list(self._prospects.all_prospects()))
        if prospects.empty:
            return pd.DataFrame(columns=list(PROSPECT_FIELDS)).rename_axis(ID)
        return prospects.set_index(ID).loc[:, list(PROSPECT_FIELDS)]

    def _score_chunks(self, prospects: pd.DataFrame) -> Iterator[Columns]:
        """Score every prospect, a logged prediction each; yield the answers chunk by chunk."""
        if prospects.empty:
            return
        records = prospects.reset_index(drop=True).to_dict(orient="records")
        rows = model_records(records, self._indicators_record().indicators, self._today())
        for start in range(0, len(rows), CHUNK_ROWS):
            keys = [str(each) for each in prospects.index[start : start + CHUNK_ROWS]]
            scored = self._scoring.score(
                rows[start : start + CHUNK_ROWS], keys, f"call-list-{uuid.uuid4()}"
            )
            yield columns_of(keys, scored)

    def _ranked(self, prospects: pd.DataFrame, columns: Columns) -> pd.DataFrame:
        """Join the scores to the profiles, mark the calls, sort best first (ties by id)."""
        if prospects.empty:
            return _empty_list()
        scores = pd.DataFrame(columns).set_index("prospect_id").rename_axis(ID)
        # A prospect stored after the list was scored (same count: one replaced) waits for the
        # next key; one deleted since drops out.
        frame = prospects.join(scores, how="inner")
        self._reasons = {}
        if self._explainer is not None:
            self._explainer.set_population(prospects)
        frame["called"] = False
        frame["last_result"] = None
        self._calls_seen_at = None  # the new frame gets every call applied
        self._apply_new_calls(frame)
        return frame.sort_index().sort_values("score", ascending=False, kind="stable")

    def _apply_new_calls(self, frame: pd.DataFrame) -> None:
        """Mark the prospects called since the last look (by any caller, on any replica)."""
        calls = self._prospects.calls_since(self._calls_seen_at)
        for call in calls:
            if call["prospect_id"] in frame.index:
                frame.loc[call["prospect_id"], ["called", "last_result"]] = [True, call["result"]]
        if calls:
            self._calls_seen_at = calls[-1]["at"]


def read_indicators(prospects: ProspectStore) -> IndicatorsRecord | None:
    """Return the indicators record in force, if any was entered."""
    document = prospects.latest_indicators()
    if document is None:
        return None
    return IndicatorsRecord(
        revision=document["_id"],
        indicators=Indicators.model_validate(document["indicators"]),
        effective_from=date.fromisoformat(document["effective_from"]),
        recorded_at=document["recorded_at"],
        recorded_by=document["recorded_by"],
    )


def set_indicators(
    prospects: ProspectStore, indicators: Indicators, effective_from: date, recorded_by: str
) -> int:
    """Store indicators as the ones in force from now; return their revision."""
    return prospects.add_indicators(
        {
            "indicators": indicators.model_dump(),
            "effective_from": effective_from.isoformat(),
            "recorded_at": datetime.now(UTC),
            "recorded_by": recorded_by,
        }
    )


def _outcome(call: Mapping[str, Any], label: bool) -> Outcome:
    return Outcome(
        prediction_id=call["prediction_id"],
        subscribed=label,
        reported_at=call["at"],
        source=f"app:{call['caller']}",
    )


def _concatenated(chunks: Iterator[Columns]) -> Columns:
    columns: Columns = {}
    for chunk in chunks:
        for name, values in chunk.items():
            columns.setdefault(name, []).extend(values)
    return columns


def _empty_list() -> pd.DataFrame:
    columns = [*PROSPECT_FIELDS, "score", "prediction_id", "model_version", "route", "called"]
    return pd.DataFrame(columns=[*columns, "last_result"])
