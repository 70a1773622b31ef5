"""The loop at a glance: the last judged window, retrains, releases, what is served and pending.

One reader (`jobs.loop_status`) fills a `LoopStatus` from MongoDB's records of the loop; the
app's `/metrics` exports it as gauges and counters and `telescore status` prints it. What is
worked out of the stored documents (which window counts as judged, its figures, how many
degraded windows in a row) is here, as pure functions of those documents.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, get_args

from telescore.core.release import Action
from telescore.core.retraining import SILENT_VERDICTS, WindowVerdict

WINDOW_VERDICTS: Final[tuple[str, ...]] = get_args(WindowVerdict)
"""The verdicts a judged window gets; a window monitored with no champion gets none of them."""
RELEASE_ACTIONS: Final[tuple[str, ...]] = (*get_args(Action), "superseded")
"""What a release decision does: the promotion's three, and a challenger replaced undecided."""
RARE_RELEASE_ACTIONS: Final[tuple[str, ...]] = ("promote", "rollback", "superseded")
"""Actions taken once per release; `wait` is taken at every promotion run in between."""
FAILED_RUN_STATES: Final[tuple[str, ...]] = ("Failed", "Crashed", "TimedOut")
"""Prefect's names of a final state that is a failure (a cancelled run was stopped by a person)."""
QUALITY_SILENT: Final = frozenset({*SILENT_VERDICTS, "drifted, unlabelled"})
"""Verdicts that say nothing about quality: they neither extend nor end a degraded streak."""


@dataclass(frozen=True)
class JudgedWindow:
    """The figures of one judged window, as the monitor recorded them."""

    window_start: datetime
    window_end: datetime
    verdict: str
    verdict_reason: str
    predictions: int
    """Predictions logged in the window (every route)."""
    labelled_rows: int
    """Of the champion's rows read, those with an outcome."""
    label_coverage: float | None
    """Share (0-1) of the champion's rows read that have an outcome; None with no row."""
    drift_share: float | None
    """Share of the features found drifted; None when too few rows were reported on."""
    roc_auc: float | None
    """On the labelled rows; None without labels of both classes."""
    calibration_gap: float | None
    """|mean score - positive rate| on the labelled rows; None without labels."""
    model_version: str | None
    """The version that scored the window's rows (the champion then)."""
    evaluated_at: datetime | None = None
    """When the monitor read the window's rows."""

    @property
    def seconds(self) -> float:
        """Return the window's length in seconds."""
        return (self.window_end - self.window_start).total_seconds()


@dataclass(frozen=True)
class RetrainSummary:
    """The last decision that triggered a training run, and what became of the run."""

    decided_at: datetime
    reason: str
    state: str | None
    """The run's final state in Prefect (Completed, Failed, ...); None while not known."""
    outcome: str | None
    """What the run did, in a sentence, once it ended."""


@dataclass(frozen=True)
class ReleaseSummary:
    """The last release decision."""

    decided_at: datetime
    action: str
    reason: str
    champion_version: str | None
    challenger_version: str | None


@dataclass(frozen=True)
class LoopStatus:
    """The loop's state, read from its records when asked."""

    last_window: JudgedWindow | None
    """The latest judged window (None before the first)."""
    window_seconds: float | None
    """A monitoring window's length, as the latest monitored window had it."""
    last_run_at: datetime | None
    """When the last monitor run finished (its decision was recorded)."""
    degraded_windows_since_retrain: int
    """Degraded windows in a row (the latest included) of a version a retrain produced."""
    retrains_started: int
    retrains_failed: int
    retrains_promoted: int
    release_decisions: Mapping[str, int]
    """Decisions recorded per action, every one of `RELEASE_ACTIONS` (0 included)."""
    last_retrain: RetrainSummary | None
    last_release: ReleaseSummary | None
    routing_mode: str
    canary_weight: float
    pending_outcomes: int
    """Outcomes waiting for their prediction to be logged."""
    served: Mapping[str, str | None] | None = field(default=None)
    """The version served as `champion` and `challenger` (None: the slot is empty); None when
    MLServer was not asked or did not answer."""


def optional_float(value: Any) -> float | None:
    """Return a stored figure as a float; None when absent or NaN (undefined)."""
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def judged_window(document: Mapping[str, Any]) -> JudgedWindow | None:
    """Return a `monitoring_runs` document's figures; None unless it was judged (a verdict)."""
    verdict = document.get("verdict")
    if verdict not in WINDOW_VERDICTS:
        return None
    rows = int(document.get("rows") or 0)
    labelled = int(document.get("labelled_rows") or 0)
    coverage = optional_float(document.get("label_coverage"))
    if coverage is None and rows:
        coverage = labelled / rows
    positive_rate = optional_float(document.get("positive_rate"))
    mean_score = optional_float(document.get("mean_score"))
    gap = (
        abs(mean_score - positive_rate)
        if positive_rate is not None and mean_score is not None
        else None
    )
    version = document.get("model_version")
    return JudgedWindow(
        window_start=document["window_start"],
        window_end=document["window_end"],
        verdict=str(verdict),
        verdict_reason=str(document.get("verdict_reason") or ""),
        predictions=int(document.get("predictions", rows) or 0),
        labelled_rows=labelled,
        label_coverage=coverage,
        drift_share=optional_float(document.get("share_drifted_features")),
        roc_auc=optional_float(document.get("roc_auc")),
        calibration_gap=gap,
        model_version=None if version is None else str(version),
        evaluated_at=document.get("read_at"),
    )


@dataclass(frozen=True)
class RetrainCounts:
    """Training runs the policy triggered, and what became of them."""

    started: int
    failed: int
    """Ended in a failed state (`FAILED_RUN_STATES`)."""
    promoted: int
    """Made their version champion: at once, or as a released challenger later promoted."""
    versions: frozenset[str]
    """The versions they registered."""


def count_retrains(
    retrains: Iterable[Mapping[str, Any]], promotions: Iterable[Mapping[str, Any]]
) -> RetrainCounts:
    """Count the retraining decisions that triggered a run, from their recorded `training`.

    `promotions` are the release decisions that promoted a challenger: a retrained version
    released as challenger counts as promoted when one of them names it.
    """
    started = failed = promoted = 0
    versions: set[str] = set()
    released: set[str] = set()
    for decision in retrains:
        started += 1
        training = decision.get("training") or {}
        if training.get("final") and training.get("state") in FAILED_RUN_STATES:
            failed += 1
        version = training.get("version")
        if version is not None:
            versions.add(str(version))
        if training.get("promoted"):
            promoted += 1
        elif training.get("released") and version is not None:
            released.add(str(version))
    promoted += sum(1 for each in promotions if str(each.get("challenger_version")) in released)
    return RetrainCounts(started, failed, promoted, frozenset(versions))


def count_release_decisions(rare: Iterable[Mapping[str, Any]], total: int) -> dict[str, int]:
    """Return the release decisions per action, every action included.

    `rare` are the decisions taking one of `RARE_RELEASE_ACTIONS`, `total` how many there are
    in all: the others are `wait`.
    """
    counts = dict.fromkeys(RELEASE_ACTIONS, 0)
    for decision in rare:
        action = decision.get("action")
        if action in counts:
            counts[str(action)] += 1
    counts["wait"] = max(0, total - sum(counts.values()))
    return counts


def degraded_in_a_row(verdicts: Iterable[str]) -> int:
    """Return how many windows in a row were degraded, counting from the newest verdict.

    `verdicts` are one model's windows, newest first. A verdict that says nothing about
    quality (too few rows, no labels) neither extends the streak nor ends it; a healthy one
    ends it.
    """
    streak = 0
    for verdict in verdicts:
        if verdict in QUALITY_SILENT:
            continue
        if verdict != "degraded":
            break
        streak += 1
    return streak


def verdict_flags(verdict: str | None) -> dict[str, float]:
    """Return 1.0 for `verdict` and 0.0 for every other window verdict."""
    return {each: float(each == verdict) for each in WINDOW_VERDICTS}
