"""Read the loop's state from MongoDB: the one reader behind the app's loop metrics and `status`.

A few small queries, each on an indexed field or a count, each bounded: the app runs them on
every Prometheus scrape (docs/metrics.md has their time on 10,000 monitored windows).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import httpx

from telescore.core.loop_status import (
    RARE_RELEASE_ACTIONS,
    LoopStatus,
    ReleaseSummary,
    RetrainSummary,
    count_release_decisions,
    count_retrains,
    degraded_in_a_row,
    judged_window,
)
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingError
from telescore.jobs.scoring import ScoringService, read_routing

RECENT_WINDOWS: Final = 50
"""Monitored windows read per look: the latest judged one and its model's streak are in them
(a streak longer than this is reported as this long)."""

ServedReader = Callable[[], Mapping[str, str | None] | None]
"""Returns the versions served as champion and challenger; None when MLServer does not say."""


def served_by(scoring: ScoringService) -> ServedReader:
    """Return a reader of the versions the scoring service sees served (read once a second)."""

    def read() -> Mapping[str, str | None] | None:
        try:
            versions = scoring.versions.get()
        except (httpx.HTTPError, ServingError):
            return None  # MLServer does not answer: the versions are not known
        return {"champion": versions.champion, "challenger": versions.challenger}

    return read


def read_loop_status(
    monitoring: MonitoringStore,
    releases: ReleaseStore,
    outcomes: OutcomeStore,
    served: Mapping[str, str | None] | None = None,
) -> LoopStatus:
    """Return the loop's state from its stores; `served` is what MLServer serves, if known.

    Raises a pymongo error when MongoDB does not answer.
    """
    recent = list(reversed(monitoring.recent_runs(RECENT_WINDOWS)))  # newest first
    judged = [window for each in recent if (window := judged_window(each)) is not None]
    last_window = judged[0] if judged else None
    promotions = releases.decisions_taking(RARE_RELEASE_ACTIONS)
    retrains = count_retrains(
        monitoring.retrains(), (each for each in promotions if each.get("action") == "promote")
    )
    streak = 0
    if last_window is not None and last_window.model_version in retrains.versions:
        version = last_window.model_version
        streak = degraded_in_a_row(
            window.verdict for window in judged if window.model_version == version
        )
    last_decision = monitoring.last_decision()
    window_seconds = _schedule_seconds(last_decision, recent)
    routing = read_routing(releases)
    latest_release = releases.latest_decisions(limit=1)
    return LoopStatus(
        last_window=last_window,
        window_seconds=window_seconds,
        last_run_at=last_decision["decided_at"] if last_decision else None,
        degraded_windows_since_retrain=streak,
        retrains_started=retrains.started,
        retrains_failed=retrains.failed,
        retrains_promoted=retrains.promoted,
        release_decisions=count_release_decisions(promotions, releases.count_all_decisions()),
        last_retrain=_retrain_summary(monitoring.last_retrain()),
        last_release=_release_summary(latest_release[0]) if latest_release else None,
        routing_mode=routing.mode,
        canary_weight=routing.canary_weight,
        pending_outcomes=outcomes.count_pending(),
        served=served,
    )


def _schedule_seconds(
    last_decision: Mapping[str, Any] | None, recent: Sequence[Mapping[str, Any]]
) -> float | None:
    """The monitor's scheduled window, as its last run recorded it; else the newest window's.

    The newest window is no measure of the schedule after a replay or a simulation, whose
    windows last seconds: the stopped-monitor alert would fire minutes after one.
    """
    if last_decision is not None and last_decision.get("schedule_seconds"):
        return float(last_decision["schedule_seconds"])
    if recent:
        return float((recent[0]["window_end"] - recent[0]["window_start"]).total_seconds())
    return None


def _retrain_summary(decision: Mapping[str, Any] | None) -> RetrainSummary | None:
    if decision is None:
        return None
    training = decision.get("training") or {}
    final = bool(training.get("final"))
    return RetrainSummary(
        decided_at=decision["decided_at"],
        reason=str(decision.get("reason") or ""),
        state=str(training["state"]) if final and training.get("state") else None,
        outcome=str(training["summary"]) if final and training.get("summary") else None,
    )


def _release_summary(decision: Mapping[str, Any]) -> ReleaseSummary:
    def version(key: str) -> str | None:
        value = decision.get(key)
        return None if value is None else str(value)

    return ReleaseSummary(
        decided_at=decision["decided_at"],
        action=str(decision.get("action")),
        reason=str(decision.get("reason") or ""),
        champion_version=version("champion_version"),
        challenger_version=version("challenger_version"),
    )


class LoopStatusReader:
    """Reads the loop's state on the stores it was given (the app reads it at every scrape)."""

    def __init__(
        self,
        monitoring: MonitoringStore,
        releases: ReleaseStore,
        outcomes: OutcomeStore,
        served: ServedReader | None = None,
    ) -> None:
        self.monitoring = monitoring
        self.releases = releases
        self.outcomes = outcomes
        self.served = served
        self._indexed = False

    def read(self) -> LoopStatus:
        """Return the loop's state now; a pymongo error when MongoDB does not answer."""
        if not self._indexed:
            # Once, at the first read that reaches MongoDB: the queries need them, and the
            # monitor (which creates its own too) may not have run since an upgrade.
            self.monitoring.ensure_indexes()
            self.releases.ensure_indexes()
            self._indexed = True
        served = self.served() if self.served is not None else None
        return read_loop_status(self.monitoring, self.releases, self.outcomes, served)
