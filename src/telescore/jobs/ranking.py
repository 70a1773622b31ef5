"""The call list's cache: every prospect scored, best first, kept per cache key.

Ranking 40k prospects must not rescore them on every page view. The list is scored once per
cache key: the versions MLServer serves, the routing revision, the indicators revision, the
calendar day and the number of prospects. Any of them changing rescores the whole list (each
row is then a logged prediction, with its id); otherwise a page view is a filter and a slice of
a sorted in-memory frame. With a shared store (`jobs/call_lists.py`) the list of a key is scored
by one replica and read by the others: every replica shows the same score and prediction id.

While no model serves, the list is given unranked (`core.cold_start.unranked_order`) under a key
of its own (no champion): each prospect logged once per key as a call with no model serving,
with a prediction id its outcome cites. It is never taken for a ranked list: once a champion
serves, the key changes and the list is scored; once none does, a ranked list is not shown.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import pandas as pd

from telescore.core.call_lists import CacheKey
from telescore.core.cold_start import unranked_order, unranked_sentence
from telescore.core.prospects import ID, PROSPECT_FIELDS, CallResult, RankingQuery, rank
from telescore.io.prospect_store import ProspectStore
from telescore.jobs.call_lists import Columns, SharedCallLists
from telescore.jobs.explanations import Explainer
from telescore.jobs.prospect_scoring import ProspectScorer
from telescore.jobs.scoring import NoModelServingError, Refreshed

PROSPECTS_REFRESH_SECONDS: Final = 10.0


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
    unranked: str | None = None
    """While no model serves: the sentence saying the list is unranked, in which order, why."""


class CallListCache:
    """The ranked call list of the current cache key, in memory; thread-safe."""

    def __init__(
        self,
        scorer: ProspectScorer,
        prospects: ProspectStore,
        *,
        shared: SharedCallLists | None = None,
        explainer: Explainer | None = None,
    ) -> None:
        self._scorer = scorer
        self._prospects = prospects
        self._shared = shared
        self._explainer = explainer
        self._count = Refreshed(prospects.count_prospects, PROSPECTS_REFRESH_SECONDS)
        self._lock = threading.Lock()
        self._frame: pd.DataFrame | None = None
        self._key: CacheKey | None = None
        self._scored_at = datetime.min.replace(tzinfo=UTC)
        self._calls_seen_at: datetime | None = None
        self._unserved_reason: str | None = None
        """Why no model serves, while the list held is the unranked one."""

    @property
    def scored_at(self) -> datetime | None:
        """When the list this cache holds was scored; None before the first one, or unranked."""
        return None if self._frame is None or self._unserved_reason else self._scored_at

    def key(self) -> CacheKey:
        """Return the cache key of the list as it should be now."""
        return self._scorer.key(self._count.get)

    def page(self, query: RankingQuery) -> RankedPage:
        """Return one page of the list, rescoring the list first if its key changed."""
        with self._lock:
            frame = self._current_frame()
            self._apply_new_calls(frame)
            reason, filtered, unranked = self._unserved_reason, query, None
            if reason is not None:
                # Nothing is scored: a minimum score would hide every prospect.
                filtered = query.model_copy(update={"min_score": None})
                unranked = unranked_sentence(reason, min_score_ignored=query.min_score is not None)
            page, total = rank(frame, filtered)
            rows = [
                {"prospect_id": prospect_id, **{str(key): value for key, value in row.items()}}
                for prospect_id, row in zip(page.index, page.to_dict(orient="records"), strict=True)
            ]
            if unranked is not None:
                for row in rows:
                    row["score"] = None  # not NaN: JSON has no NaN
            assert self._key is not None  # noqa: S101 - set with the frame
            return RankedPage(rows, total, query, self._key, self._scored_at, unranked)

    def mark_called(self, prospect_id: str, result: CallResult) -> None:
        """Show a call this replica just stored on its list at once, before the next look."""
        with self._lock:
            if self._frame is not None and prospect_id in self._frame.index:
                self._frame.loc[prospect_id, ["called", "last_result"]] = [True, result]

    def _current_frame(self) -> pd.DataFrame:
        reason: str | None = None
        try:
            key = self.key()
        except NoModelServingError as error:
            if not self._scorer.lists_unserved:
                raise
            key, reason = self._scorer.unserved_key(self._count.get), str(error)
        if self._frame is not None and key == self._key:
            self._unserved_reason = reason  # the same list; why nothing serves may have changed
            return self._frame
        read: list[pd.DataFrame] = []

        def prospects() -> pd.DataFrame:  # read once, and only if the list is built here
            if not read:
                read.append(self._read_prospects())
            return read[0]

        def make() -> Iterator[Columns]:
            if reason is None:
                return self._scorer.score_in_chunks(prospects())
            return self._scorer.log_unserved_in_chunks(prospects())

        if self._shared is None:
            columns = _concatenated(make())
            scored_at = datetime.now(UTC)
        else:
            # With a list already shown, another replica's scoring is not waited for; but once
            # no model serves, the ranked list shown is not kept: its model no longer answers.
            stored = self._shared.obtain(key, make, wait=self._frame is None or reason is not None)
            if stored is None:
                assert self._frame is not None  # noqa: S101 - only without waiting
                return self._frame  # the previous key's list, until the new one is ready
            columns, scored_at = stored.columns, stored.scored_at
        self._frame = self._listed(prospects(), columns, unranked=reason is not None)
        self._key = key
        self._scored_at = scored_at
        self._unserved_reason = reason
        return self._frame

    def _read_prospects(self) -> pd.DataFrame:
        prospects = pd.DataFrame(list(self._prospects.all_prospects()))
        if prospects.empty:
            return pd.DataFrame(columns=list(PROSPECT_FIELDS)).rename_axis(ID)
        return prospects.set_index(ID).loc[:, list(PROSPECT_FIELDS)]

    def _listed(self, prospects: pd.DataFrame, columns: Columns, *, unranked: bool) -> pd.DataFrame:
        """Join the scores to the profiles, mark the calls, sort best first (ties by id).

        `unranked`: no scores (no model serves); in `unranked_order` instead.
        """
        if prospects.empty:
            return _empty_list()
        scores = pd.DataFrame(columns).set_index("prospect_id").rename_axis(ID)
        # A prospect stored after the list was scored (same count: one replaced) waits for the
        # next key; one deleted since drops out.
        frame = prospects.join(scores, how="inner")
        if self._explainer is not None:
            self._explainer.set_population(prospects)
        frame["called"] = False
        frame["last_result"] = None
        self._calls_seen_at = None  # the new frame gets every call applied
        self._apply_new_calls(frame)
        if unranked:
            frame["score"] = float("nan")
            return frame.loc[unranked_order(frame.index.astype(str))]
        return frame.sort_index().sort_values("score", ascending=False, kind="stable")

    def _apply_new_calls(self, frame: pd.DataFrame) -> None:
        """Mark the prospects called since the last look (by any caller, on any replica)."""
        calls = self._prospects.calls_since(self._calls_seen_at)
        for call in calls:
            if call["prospect_id"] in frame.index:
                frame.loc[call["prospect_id"], ["called", "last_result"]] = [True, call["result"]]
        if calls:
            self._calls_seen_at = calls[-1]["at"]


def _concatenated(chunks: Iterator[Columns]) -> Columns:
    columns: Columns = {}
    for chunk in chunks:
        for name, values in chunk.items():
            columns.setdefault(name, []).extend(values)
    return columns


def _empty_list() -> pd.DataFrame:
    columns = [*PROSPECT_FIELDS, "score", "prediction_id", "model_version", "route", "called"]
    return pd.DataFrame(columns=[*columns, "last_result"])
