"""The loop's records, seeded into MongoDB as the monitor, training and promotion write them.

One story, told by `seed_loop`: version 3 was promoted by a retrain; a later retrain failed; a
third registered version 4, released it and a canary promoted it; a person's challenger (5)
was rolled back; the routing is now a shadow release. Version 4's windows, oldest first:
healthy, degraded, awaiting labels, degraded. Three outcomes wait for their prediction.
`EXPECTED` is what a reader of the loop should make of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from telescore.core.outcomes import Outcome
from telescore.core.prediction_ids import PredictionIds
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.release_store import ReleaseStore

WINDOW: Final = timedelta(hours=1)
NOW: Final = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
"""The seeded story ends at this time (recorded times are before it)."""


@dataclass(frozen=True)
class Expected:
    """What the seeded records say."""

    last_window_start: datetime = NOW - WINDOW * 2
    last_run_at: datetime = NOW - timedelta(minutes=5)
    verdict: str = "degraded"
    predictions: int = 1200
    label_coverage: float = 0.4
    drift_share: float = 0.25
    roc_auc: float = 0.71
    calibration_gap: float = 0.08
    degraded_in_a_row: int = 2
    retrains_started: int = 3
    retrains_failed: int = 1
    retrains_promoted: int = 2
    """Version 3 directly, version 4 by the canary's promotion."""
    release_decisions: tuple[tuple[str, int], ...] = (
        ("promote", 1),
        ("rollback", 1),
        ("wait", 2),
        ("superseded", 0),
    )
    last_release_action: str = "rollback"
    routing_mode: str = "shadow"
    pending_outcomes: int = 3


EXPECTED: Final = Expected()


def window(start: datetime, verdict: str, version: str | None, **figures: Any) -> dict[str, Any]:
    """Return a `monitoring_runs` document as the monitor stores a judged window."""
    return {
        "window_start": start,
        "window_end": start + WINDOW,
        "rows": 1000,
        "labelled_rows": 0,
        "predictions": 1000,
        "sampled_every": 1,
        "model_version": version,
        "verdict": verdict,
        "verdict_reason": f"seeded: {verdict}",
        "read_at": start + WINDOW + timedelta(minutes=1),
        **figures,
    }


def seed_loop(
    monitoring: MonitoringStore,
    releases: ReleaseStore,
    outcomes: OutcomeStore,
    *,
    with_rollback: bool = True,
) -> None:
    """Store the story of the module's docstring (without its rollback: `roll_back` later)."""
    monitoring.ensure_indexes()
    releases.ensure_indexes()
    start = EXPECTED.last_window_start - WINDOW * 4
    windows = [
        window(start, "no model serving", None, rows=0, predictions=0),
        window(start + WINDOW, "healthy", "4", labelled_rows=500, label_coverage=0.5),
        window(start + WINDOW * 2, "degraded", "4", labelled_rows=500, label_coverage=0.5),
        window(start + WINDOW * 3, "awaiting labels", "4", labelled_rows=10),
        window(
            EXPECTED.last_window_start,
            "degraded",
            "4",
            rows=1000.0,  # as Evidently's figures overwrite it: a float
            labelled_rows=400.0,
            label_coverage=0.4,
            predictions=1200,
            share_drifted_features=0.25,
            roc_auc=0.71,
            mean_score=0.12,
            positive_rate=0.2,
        ),
    ]
    for each in windows:
        monitoring.save_run(each["window_start"].isoformat(), each)

    def decision(at: datetime, retrain: bool, training: dict[str, Any] | None = None) -> None:
        record: dict[str, Any] = {
            "decided_at": at,
            "window_start": at.replace(minute=0) - WINDOW,
            "retrain": retrain,
            "reason": f"seeded decision at {at:%H:%M}",
        }
        if training is not None:
            record["training"] = training
        monitoring.add_decision(record)

    completed = {"final": True, "state": "Completed"}
    decision(NOW - timedelta(hours=9), True, {**completed, "version": "3", "promoted": True})
    decision(
        NOW - timedelta(hours=8),
        True,
        {"final": True, "state": "Failed", "summary": "training run Failed: gate refused"},
    )
    decision(
        NOW - timedelta(hours=7),
        True,
        {**completed, "version": "4", "promoted": False, "released": True},
    )
    decision(NOW - timedelta(hours=1), False)
    decision(EXPECTED.last_run_at, False)

    def release(at: datetime, action: str, challenger: str) -> None:
        releases.record_decision(release_decision(at, action, challenger))

    release(NOW - timedelta(hours=6, minutes=30), "wait", "4")
    release(NOW - timedelta(hours=6, minutes=20), "wait", "4")
    release(NOW - timedelta(hours=6), "promote", "4")
    if with_rollback:
        roll_back(releases)
    releases.set_routing({"mode": "canary", "canary_weight": 20.0})
    releases.set_routing({"mode": "shadow", "canary_weight": 20.0})

    ids = PredictionIds().new(5)
    outcomes.record(
        [Outcome(prediction_id=each, subscribed=True) for each in ids],
        pending=set(ids[: EXPECTED.pending_outcomes]),
    )


def release_decision(at: datetime, action: str, challenger: str) -> dict[str, Any]:
    """Return a `release_decisions` document as the promotion records one."""
    return {
        "decided_at": at,
        "action": action,
        "reason": f"seeded {action}",
        "champion_version": "3",
        "challenger_version": challenger,
    }


def roll_back(releases: ReleaseStore) -> None:
    """Record the story's rollback of the person's challenger, version 5."""
    releases.record_decision(release_decision(NOW - timedelta(minutes=30), "rollback", "5"))
