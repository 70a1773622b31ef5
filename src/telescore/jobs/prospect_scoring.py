"""Prospects scored through the scoring service, with today's calendar and the indicators in force.

A caller never types the call's month and weekday, nor the five macro indicators: every row
scored here gets today's calendar and the latest indicators ops entered (read again at most
once a second). Prospects are scored by id, by posted profile, or the whole campaign for the
call list, chunk by chunk; each row scored is a logged prediction, with its id.

While no model serves, the call list is made all the same, unranked (`log_unserved_in_chunks`):
each prospect is logged as a call made with no model serving (`jobs.cold_start`), so that the
outcome a caller records for it cites a prediction id, and becomes a labelled training row.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd

from telescore.core.call_lists import CHUNK_ROWS, CacheKey
from telescore.core.prospects import IndicatorsRecord, model_records, model_rows
from telescore.io.prospect_store import ProspectStore
from telescore.jobs.call_lists import Columns, columns_of, unserved_columns
from telescore.jobs.indicators import NoIndicatorsError, read_indicators
from telescore.jobs.scoring import Refreshed, Scored, ScoringService

UnservedLog = Callable[[Sequence[Mapping[str, Any]], str], list[str]]
"""Logs model rows as calls made with no model serving, under a request id; returns their ids."""


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


class ProspectScorer:
    """Scores prospects under the routing in force; thread-safe."""

    def __init__(
        self,
        scoring: ScoringService,
        prospects: ProspectStore,
        *,
        today: Callable[[], date] = lambda: datetime.now(UTC).date(),
        log_unserved: UnservedLog | None = None,
    ) -> None:
        self.scoring = scoring
        self._prospects = prospects
        self._today = today
        self._log_unserved = log_unserved
        """None: no list is given while no model serves (NoModelServingError)."""
        self.indicators = Refreshed(lambda: read_indicators(prospects))

    def key(self, prospects: Callable[[], int]) -> CacheKey:
        """Return the key of a list of `prospects()` scored now: all that its scores depend on.

        Raises NoModelServingError while MLServer serves no champion: no list, not even the
        last one scored, since its model no longer answers.
        """
        versions = self.scoring.served_versions()
        return CacheKey(
            champion=versions.champion,
            challenger=versions.challenger,
            routing_revision=self.scoring.routing.get().revision,
            indicators_revision=self.indicators_in_force().revision,
            day=self._today(),
            prospects=prospects(),
        )

    @property
    def lists_unserved(self) -> bool:
        """Whether an unranked list is given while no model serves."""
        return self._log_unserved is not None

    def unserved_key(self, prospects: Callable[[], int]) -> CacheKey:
        """Return the key of the unranked list of `prospects()` made now, with no model serving.

        No version and no routing: what its logged inputs depend on, the calendar day and the
        indicators; a ranked list's key always has a champion.
        """
        return CacheKey(
            champion=None,
            challenger=None,
            routing_revision=None,
            indicators_revision=self.indicators_in_force().revision,
            day=self._today(),
            prospects=prospects(),
        )

    def indicators_in_force(self) -> IndicatorsRecord:
        """Return the indicators record in force; NoIndicatorsError if none was entered."""
        record = self.indicators.get()
        if record is None:
            raise NoIndicatorsError(
                "no indicators in force: enter them (`telescore indicators set` or PUT /indicators)"
            )
        return record

    def score_prospects(self, prospect_ids: Sequence[str]) -> list[ScoredProspect]:
        """Score prospects by id now (a logged prediction each), in the order given."""
        found = self._prospects.get_many(prospect_ids)
        missing = [each for each in prospect_ids if each not in found]
        if missing:
            raise UnknownProspectsError(missing)
        profiles = [found[each] for each in prospect_ids]
        rows = model_records(profiles, self.indicators_in_force().indicators, self._today())
        scored = self.scoring.score(rows, list(prospect_ids))
        return [
            ScoredProspect(each, answer) for each, answer in zip(prospect_ids, scored, strict=True)
        ]

    def score_profiles(
        self, prospects: Sequence[Mapping[Any, Any]], routing_keys: Sequence[str]
    ) -> list[Scored]:
        """Score posted profiles (PROSPECT_FIELDS keys) with today's calendar and indicators."""
        rows = model_records(prospects, self.indicators_in_force().indicators, self._today())
        return self.scoring.score(rows, routing_keys)

    def score_in_chunks(self, prospects: pd.DataFrame) -> Iterator[Columns]:
        """Score every prospect (indexed by id), a logged prediction each; yield chunk by chunk."""
        if prospects.empty:
            return
        records = prospects.reset_index(drop=True).to_dict(orient="records")
        rows = model_records(records, self.indicators_in_force().indicators, self._today())
        for start in range(0, len(rows), CHUNK_ROWS):
            keys = [str(each) for each in prospects.index[start : start + CHUNK_ROWS]]
            scored = self.scoring.score(
                rows[start : start + CHUNK_ROWS], keys, f"call-list-{uuid.uuid4()}"
            )
            yield columns_of(keys, scored)

    def log_unserved_in_chunks(self, prospects: pd.DataFrame) -> Iterator[Columns]:
        """Log every prospect (indexed by id) as a call with no model serving; yield chunks.

        Each row gets a prediction id and its inputs as they would be scored today, no score.
        """
        if prospects.empty or self._log_unserved is None:
            return
        records = prospects.reset_index(drop=True).to_dict(orient="records")
        rows = model_records(records, self.indicators_in_force().indicators, self._today())
        for start in range(0, len(rows), CHUNK_ROWS):
            keys = [str(each) for each in prospects.index[start : start + CHUNK_ROWS]]
            ids = self._log_unserved(
                rows[start : start + CHUNK_ROWS], f"call-list-unserved-{uuid.uuid4()}"
            )
            yield unserved_columns(keys, ids)

    def model_inputs(self, prospects: pd.DataFrame) -> pd.DataFrame:
        """Return the model's inputs for profiles (indexed by id), as they are scored today."""
        return model_rows(prospects, self.indicators_in_force().indicators, self._today())
