"""Retraining policy: from the monitored windows, decide whether to train a new model, and why.

In this data the five macro indicators drift in almost every window: they are what tells one
period from the next. Feature drift alone would retrain all the time, so the policy weighs what
callers feel first: labelled quality (ROC AUC, top-decile precision over the base rate) and
calibration (mean score against the observed positive rate). Drift counts only for windows
with too few labels to judge, and only when `drift_counts_without_labels` says so.

A schedule (`retrain_every_windows`) is the other trigger: a retrain once every N monitored
windows, whatever their verdicts. With a log-odds offset following the base rate between
retrains (`CalibrationParams`), what a retrain adds is the newest rows' ranking, which no
window's figures announce; a fixed cadence spends a known budget of training runs on it.

A release under way (a challenger in the shadow or a canary, not yet promoted or rolled
back) is not superseded by the next retrain when `retrain_during_release` is "hold": the retrain
is postponed until the release is decided, with the reason recorded. Outcomes come windows late,
so a release is decided windows after it starts; a retrain every few windows that replaced an
undecided challenger would leave every release undecided and the first champion serving for
ever. `ReleaseRules.decide_after_rows` bounds the wait.

Cold start: while no champion serves (no model has passed the gates yet, or the champion is
gone), there are no windows to judge. Training is then retried as labelled outcomes accumulate:
once `cold_start_min_new_labels` more are recorded than the last training attempt had, and
`cold_start_cooldown_windows` windows after it (`decide_cold_start`). A run started by hand
while no champion serves is an attempt too (`manual_attempt_record`): the policy retries only
on rows it did not have either.

A pure function of the window history and the run state, so that every guard is unit-tested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import Field, model_validator

from telescore.core.models import FrozenModel

WindowVerdict = Literal[
    "insufficient data", "awaiting labels", "drifted, unlabelled", "degraded", "healthy"
]
MONITOR_TRIGGER: Final = "monitor-telemarketing"
"""`trigger.by` of a training run the monitor started: the monitor's own decision records it."""
SILENT_VERDICTS: frozenset[WindowVerdict] = frozenset({"insufficient data", "awaiting labels"})
"""Verdicts that say nothing about the model: they count neither for nor against a retrain."""


class RetrainingPolicy(FrozenModel):
    """When a monitored model is retrained (the `monitoring.policy` section of params.yaml)."""

    min_window_rows: int = Field(default=200, gt=0)
    """A window with fewer logged predictions gets "insufficient data", not a verdict."""
    min_labelled_rows: int = Field(default=300, gt=0)
    """Labelled rows a window needs before its quality counts."""
    max_calibration_gap: float = Field(default=0.05, gt=0, le=1)
    """Largest tolerated |mean score - positive rate| in a labelled window."""
    min_roc_auc: float = Field(default=0.55, ge=0, le=1)
    """Lowest tolerated ROC AUC in a labelled window (0 turns the check off)."""
    min_top_decile_lift: float = Field(default=0.0, ge=0)
    """Lowest tolerated top-decile precision over the window's positive rate (0: off)."""
    max_drift_share: float = Field(default=0.5, gt=0, le=1)
    """Share of drifted features that marks an unlabelled window as drifted."""
    drift_counts_without_labels: bool = False
    """Let "drifted, unlabelled" windows count towards a retrain (off: the macro indicators
    drift in nearly every window of this data)."""
    windows_considered: int = Field(default=2, gt=0)
    """n: how many of the most recent judged windows are looked at."""
    windows_required: int = Field(default=1, gt=0)
    """k: how many of those n must be degraded to retrain."""
    cooldown_windows: int = Field(default=2, ge=0)
    """Windows that must pass after a retrain was triggered before another one may be."""
    min_training_labels: int = Field(default=1000, ge=0)
    """Labelled production rows needed in all, so that a new model has fresh rows to learn."""
    retrain_on_degraded: bool = True
    """Retrain when k of the last n judged windows are degraded (off: only the schedule
    retrains; every window is still judged and its verdict recorded)."""
    retrain_every_windows: int | None = Field(default=None, gt=0)
    """A schedule: retrain once this many windows were monitored since a retrain was last
    triggered (or, before any, since the champion started serving), whatever their verdicts;
    None: no schedule. The cooldown, in-flight and labelled-rows guards still apply."""
    retrain_during_release: Literal["hold", "supersede"] = "hold"
    """What a retrain asked for while a release is under way does. hold: it waits until the
    release is decided (promoted or rolled back; `ReleaseRules.decide_after_rows` bounds the
    wait), recorded with the reason "release under way"; supersede: it runs, and a candidate
    that passes replaces the undecided challenger, whose evidence is lost (with outcomes
    windows late and a retrain every few windows, a release then rarely ends)."""
    cold_start_min_new_labels: int = Field(default=1000, gt=0)
    """With no champion serving: labelled rows that must be recorded since the last training
    attempt (or, before any, at all) before training is tried again. A failed attempt is
    retried only on rows it did not have."""
    cold_start_cooldown_windows: int = Field(default=1, ge=0)
    """With no champion serving: windows monitored since the last training attempt before
    another may be triggered."""

    @model_validator(mode="after")
    def _k_within_n(self) -> RetrainingPolicy:
        if self.windows_required > self.windows_considered:
            raise ValueError("windows_required (k) cannot exceed windows_considered (n)")
        return self


@dataclass(frozen=True)
class WindowHealth:
    """The key numbers of one monitored window, as the monitor recorded them."""

    window_start: datetime
    rows: int
    labelled_rows: int
    share_drifted_features: float
    mean_score: float
    positive_rate: float | None = None
    """Observed rate among the labelled rows; None when none is labelled."""
    roc_auc: float | None = None
    """None when undefined: no labels, or one class only."""
    precision_top_decile: float | None = None

    @property
    def calibration_gap(self) -> float | None:
        """Return |mean score - positive rate| over the labelled rows, if any."""
        if self.positive_rate is None:
            return None
        return abs(self.mean_score - self.positive_rate)

    @property
    def top_decile_lift(self) -> float | None:
        """Return top-decile precision over the positive rate, if both are defined."""
        if self.precision_top_decile is None or not self.positive_rate:
            return None
        return self.precision_top_decile / self.positive_rate


@dataclass(frozen=True)
class RunState:
    """What the orchestrator and the decision log say about training right now."""

    training_in_flight: bool
    """A training run is scheduled, pending or running."""
    windows_since_retrain: int | None
    """Windows monitored since a retrain was last triggered; None if never."""
    labelled_rows_available: int
    """Labelled production rows the next training run could use."""
    release_under_way: str | None = None
    """The challenger of a release not yet decided (shadow or canary), None when none is."""


@dataclass(frozen=True)
class RetrainingDecision:
    """Whether to train now, why, and the figures the decision was taken on."""

    retrain: bool
    reason: str
    verdicts: tuple[WindowVerdict, ...]
    """The verdict of each window looked at, oldest first."""
    episode_start: datetime | None = None
    """First degraded window of the current episode: one training run per episode."""

    def as_record(self) -> dict[str, Any]:
        """Return the decision as a plain mapping, for the decision log."""
        return asdict(self)


def judge_window(window: WindowHealth, policy: RetrainingPolicy) -> tuple[WindowVerdict, str]:
    """Return a window's verdict and the figure that decided it."""
    if window.rows < policy.min_window_rows:
        return "insufficient data", f"{window.rows} rows < {policy.min_window_rows}"
    if window.labelled_rows >= policy.min_labelled_rows:
        problems = _quality_problems(window, policy)
        if problems:
            return "degraded", "; ".join(problems)
        return "healthy", f"quality within bounds on {window.labelled_rows} labelled rows"
    if window.share_drifted_features >= policy.max_drift_share:
        return "drifted, unlabelled", (
            f"{window.share_drifted_features:.0%} of features drifted, "
            f"{window.labelled_rows} labelled rows"
        )
    return "awaiting labels", (
        f"{window.labelled_rows} labelled rows < {policy.min_labelled_rows}, "
        f"{window.share_drifted_features:.0%} of features drifted"
    )


def _quality_problems(window: WindowHealth, policy: RetrainingPolicy) -> list[str]:
    problems = []
    gap = window.calibration_gap
    if gap is not None and gap > policy.max_calibration_gap:
        problems.append(
            f"calibration gap {gap:.3f} > {policy.max_calibration_gap:.3f} "
            f"(mean score {window.mean_score:.3f}, positive rate {window.positive_rate:.3f})"
        )
    auc = window.roc_auc
    if auc is not None and not math.isnan(auc) and auc < policy.min_roc_auc:
        problems.append(f"ROC AUC {auc:.3f} < {policy.min_roc_auc:.3f}")
    lift = window.top_decile_lift
    if lift is not None and lift < policy.min_top_decile_lift:
        problems.append(f"top-decile lift {lift:.2f} < {policy.min_top_decile_lift:.2f}")
    return problems


def decide_retraining(
    history: Sequence[WindowHealth], state: RunState, policy: RetrainingPolicy
) -> RetrainingDecision:
    """Decide from the monitored windows (oldest first) and the run state whether to retrain.

    `history` holds the current champion's windows. A retrain is asked for by k of the last n
    judged windows degraded (`retrain_on_degraded`) or by the schedule
    (`retrain_every_windows`); then the guards decide: a run in flight, a release under way
    (with `retrain_during_release` "hold"), the cooldown, too few labelled rows to train on.
    """
    judged = [(window, *judge_window(window, policy)) for window in history]
    silent = SILENT_VERDICTS | (
        set() if policy.drift_counts_without_labels else {"drifted, unlabelled"}
    )
    considered = [entry for entry in judged if entry[1] not in silent]
    recent = considered[-policy.windows_considered :]
    verdicts = tuple(verdict for _, verdict, _ in recent)
    counting = {"degraded"} | (
        {"drifted, unlabelled"} if policy.drift_counts_without_labels else set()
    )
    flagged = [(window, verdict, why) for window, verdict, why in recent if verdict in counting]

    # What asks for a retrain: degraded windows first, else the schedule.
    asked: tuple[str, datetime] | None = None
    waiting: str
    if not policy.retrain_on_degraded:
        waiting = "retraining on degraded windows is off"
    elif not recent:
        latest = f"{judged[-1][1]}: {judged[-1][2]}" if judged else "no window monitored yet"
        waiting = f"insufficient data ({latest})"
    elif len(flagged) < policy.windows_required:
        waiting = (
            f"{len(flagged)} of the last {len(recent)} windows degraded, "
            f"{policy.windows_required} required ({recent[-1][2]})"
        )
    else:
        asked = (
            f"{len(flagged)} of the last {len(recent)} windows degraded: {flagged[-1][2]}",
            flagged[0][0].window_start,
        )
    if asked is None:
        asked, schedule = _scheduled(history, state, policy)
        if asked is None:
            return RetrainingDecision(
                False, waiting + (f"; {schedule}" if schedule else ""), verdicts
            )

    why, episode = asked
    if state.training_in_flight:
        return RetrainingDecision(False, f"{why}; a training run is already in flight", verdicts)
    held = release_hold(state.release_under_way, policy)
    if held:
        return RetrainingDecision(False, f"{why}; {held}", verdicts)
    cooling = state.windows_since_retrain
    if cooling is not None and cooling < policy.cooldown_windows:
        return RetrainingDecision(
            False,
            f"{why}; cooldown: {cooling} of {policy.cooldown_windows} windows "
            "since the last retrain",
            verdicts,
        )
    if state.labelled_rows_available < policy.min_training_labels:
        return RetrainingDecision(
            False,
            f"{why}; only {state.labelled_rows_available} labelled rows to train on, "
            f"{policy.min_training_labels} required",
            verdicts,
        )
    return RetrainingDecision(True, why, verdicts, episode)


def release_hold(challenger: str | None, policy: RetrainingPolicy) -> str | None:
    """Return why a retrain waits for the release of `challenger`, None when it may run."""
    if challenger is None or policy.retrain_during_release != "hold":
        return None
    return f"release under way: challenger {challenger} not yet decided, retrain held"


def _scheduled(
    history: Sequence[WindowHealth], state: RunState, policy: RetrainingPolicy
) -> tuple[tuple[str, datetime] | None, str]:
    """Return (why, episode start) when the schedule asks for a retrain, and what it says.

    The episode is the first window counted, so that the idempotency key differs per cadence.
    """
    every = policy.retrain_every_windows
    if every is None:
        return None, ""
    passed = state.windows_since_retrain
    origin = "since the last retrain"
    if passed is None:
        passed, origin = len(history), "of this champion"
    if passed < every:
        return None, f"scheduled retrain every {every} windows: {passed} {origin} so far"
    if not history:
        return None, f"scheduled retrain every {every} windows: no window of the champion yet"
    first = history[-min(passed, len(history))]
    return (
        f"scheduled: {passed} windows {origin}, one retrain every {every}",
        first.window_start,
    ), ""


@dataclass(frozen=True)
class ColdStartState:
    """What the monitor knows while no champion serves: labels now, and the last attempt."""

    training_in_flight: bool
    """A training run is scheduled, pending or running."""
    labelled_rows_available: int
    """Labelled production rows recorded now."""
    last_attempt_labelled_rows: int | None
    """Labelled rows recorded when training was last triggered; None if it never was."""
    windows_since_attempt: int | None
    """Windows monitored since training was last triggered; None if it never was."""
    last_attempt: str | None = None
    """How the last attempt ended, in a few words (recorded by the monitor), if known."""


def decide_cold_start(state: ColdStartState, policy: RetrainingPolicy) -> RetrainingDecision:
    """Decide whether to try training again while no champion serves.

    Asked for by new labels, not by windows: a run on the rows that failed the gates last time
    would fail them again. Guards: a run in flight, the cooldown.
    """
    since = state.last_attempt_labelled_rows
    new = state.labelled_rows_available - (since or 0)
    after = (
        "since the last training attempt"
        + (f" ({state.last_attempt})" if state.last_attempt else "")
        if since is not None
        else "recorded, and no training attempt yet"
    )
    why = (
        f"no champion serving: {new} new labelled rows {after}, "
        f"{policy.cold_start_min_new_labels} required"
    )
    if new < policy.cold_start_min_new_labels:
        return RetrainingDecision(False, why, ())
    if state.training_in_flight:
        return RetrainingDecision(False, f"{why}; a training run is already in flight", ())
    cooling = state.windows_since_attempt
    if cooling is not None and cooling < policy.cold_start_cooldown_windows:
        return RetrainingDecision(
            False,
            f"{why}; cooldown: {cooling} of {policy.cold_start_cooldown_windows} windows "
            "since the last attempt",
            (),
        )
    return RetrainingDecision(True, why, ())


def started_by_monitor(trigger: Mapping[str, Any] | None) -> bool:
    """Tell whether a training run was started by the monitor (its decision is the attempt)."""
    return (trigger or {}).get("by") == MONITOR_TRIGGER


def manual_attempt_record(
    *,
    started_at: datetime,
    labelled_rows: int,
    after_window: datetime | None,
    state: str,
    summary: str,
    trigger: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the decision-log entry of a training run started by hand while no champion serves.

    Shaped as the monitor's cold-start decision that triggers a run, its run's end included,
    so that the policy counts it alike: the labelled rows it had (`state`), the latest window
    monitored before it (`window_start`; None: none yet, every window is after it), how it
    ended (`training`). `state` is the run's end as Prefect names it (Failed, Completed).
    """
    return {
        "decided_at": started_at,
        "window_start": after_window,
        "window": None,
        "champion_version": None,
        "cold_start": True,
        "manual": True,
        "retrain": True,
        "reason": "training started by hand (not by the monitor) while no champion serves",
        "verdicts": [],
        "episode_start": None,
        "state": {"labelled_rows_available": labelled_rows},
        "trigger": {str(key): str(value) for key, value in (trigger or {}).items()},
        "training": {"final": True, "state": state, "summary": summary},
    }
