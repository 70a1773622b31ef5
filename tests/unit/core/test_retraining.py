"""The retraining policy on hand-made window histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from telescore.core.retraining import (
    ColdStartState,
    RetrainingPolicy,
    RunState,
    WindowHealth,
    decide_cold_start,
    decide_retraining,
    judge_window,
)

POLICY = RetrainingPolicy(
    min_window_rows=100,
    min_labelled_rows=50,
    max_calibration_gap=0.05,
    min_roc_auc=0.55,
    windows_considered=3,
    windows_required=2,
    cooldown_windows=2,
    min_training_labels=500,
)
IDLE = RunState(training_in_flight=False, windows_since_retrain=None, labelled_rows_available=5000)
START = datetime(2026, 1, 1, tzinfo=UTC)


def window(index: int, **figures: float | int | None) -> WindowHealth:
    base: dict[str, float | int | None] = {
        "rows": 1000,
        "labelled_rows": 800,
        "share_drifted_features": 0.3,
        "mean_score": 0.10,
        "positive_rate": 0.11,
        "roc_auc": 0.70,
        "precision_top_decile": 0.30,
    }
    return WindowHealth(window_start=START + timedelta(hours=index), **(base | figures))  # type: ignore[arg-type]


def miscalibrated(index: int) -> WindowHealth:
    return window(index, mean_score=0.10, positive_rate=0.40)


def test_persistent_degradation_retrains_once_k_of_n_windows_say_so() -> None:
    history = [window(0), miscalibrated(1), miscalibrated(2)]

    decision = decide_retraining(history, IDLE, POLICY)

    assert decision.retrain, f"2 of 3 degraded windows must retrain: {decision.reason}"
    assert decision.episode_start == history[1].window_start, "episode starts at the first one"
    assert "calibration gap 0.300" in decision.reason, decision.reason


def test_a_single_spike_does_not_retrain() -> None:
    history = [window(0), miscalibrated(1), window(2)]

    decision = decide_retraining(history, IDLE, POLICY)

    assert not decision.retrain, "one degraded window of three is a spike, not a trend"
    assert "1 of the last 3 windows degraded, 2 required" in decision.reason, decision.reason


def test_low_auc_alone_degrades_a_window() -> None:
    verdict, why = judge_window(window(0, roc_auc=0.45), POLICY)

    assert verdict == "degraded", why
    assert "ROC AUC 0.450" in why, why


def test_cooldown_holds_a_retrain_back() -> None:
    history = [miscalibrated(0), miscalibrated(1), miscalibrated(2)]
    cooling = RunState(
        training_in_flight=False, windows_since_retrain=1, labelled_rows_available=5000
    )

    held = decide_retraining(history, cooling, POLICY)
    released = decide_retraining(
        history, RunState(False, windows_since_retrain=2, labelled_rows_available=5000), POLICY
    )

    assert not held.retrain and "cooldown: 1 of 2 windows" in held.reason, held.reason
    assert released.retrain, f"the cooldown is over after 2 windows: {released.reason}"


def test_too_few_labels_in_a_window_gives_no_quality_verdict() -> None:
    # Badly calibrated, but on 10 labelled rows: not evidence.
    history = [window(i, labelled_rows=10, mean_score=0.1, positive_rate=0.5) for i in range(3)]

    decision = decide_retraining(history, IDLE, POLICY)

    assert not decision.retrain, decision.reason
    assert decision.reason.startswith("insufficient data (awaiting labels: 10 labelled"), (
        decision.reason
    )


def test_too_few_labelled_rows_to_train_on_holds_a_retrain_back() -> None:
    history = [miscalibrated(0), miscalibrated(1)]
    scarce = RunState(
        training_in_flight=False, windows_since_retrain=None, labelled_rows_available=80
    )

    decision = decide_retraining(history, scarce, POLICY)

    assert not decision.retrain
    assert "only 80 labelled rows to train on, 500 required" in decision.reason, decision.reason


def test_a_run_in_flight_prevents_a_second_one() -> None:
    history = [miscalibrated(0), miscalibrated(1)]
    busy = RunState(
        training_in_flight=True, windows_since_retrain=None, labelled_rows_available=5000
    )

    decision = decide_retraining(history, busy, POLICY)

    assert not decision.retrain
    assert "already in flight" in decision.reason, decision.reason


def test_small_windows_record_insufficient_data_not_a_verdict() -> None:
    history = [window(0, rows=20, labelled_rows=20, mean_score=0.1, positive_rate=0.9)]

    decision = decide_retraining(history, IDLE, POLICY)

    assert not decision.retrain
    assert decision.reason.startswith("insufficient data (insufficient data: 20 rows < 100"), (
        decision.reason
    )


def test_drift_without_labels_counts_only_when_the_policy_says_so() -> None:
    drifted = [
        window(i, labelled_rows=0, positive_rate=None, roc_auc=None, share_drifted_features=0.8)
        for i in range(3)
    ]

    default = decide_retraining(drifted, IDLE, POLICY)
    drift_driven = decide_retraining(
        drifted, IDLE, POLICY.model_copy(update={"drift_counts_without_labels": True})
    )

    assert not default.retrain, "the macro indicators drift all the time: drift alone waits"
    assert "drifted, unlabelled: 80% of features drifted" in default.reason, default.reason
    assert drift_driven.retrain, drift_driven.reason


def test_one_class_window_is_judged_on_calibration_only() -> None:
    # No positives: AUC undefined (None), but the mean score still says something.
    verdict, why = judge_window(
        window(0, positive_rate=0.0, roc_auc=None, precision_top_decile=0.0, mean_score=0.2), POLICY
    )

    assert verdict == "degraded", why
    assert "ROC AUC" not in why, why


def test_policy_refuses_k_above_n() -> None:
    with pytest.raises(ValidationError, match="windows_required"):
        RetrainingPolicy(windows_considered=2, windows_required=3)


def test_windows_awaiting_labels_do_not_dilute_k_of_n() -> None:
    # Outcomes come late: the newest windows have none yet and must not vote "healthy".
    waiting = {"labelled_rows": 0, "positive_rate": None, "roc_auc": None}
    history = [miscalibrated(0), miscalibrated(1), window(2, **waiting), window(3, **waiting)]

    decision = decide_retraining(history, IDLE, POLICY)

    assert decision.retrain, decision.reason
    assert decision.verdicts == ("degraded", "degraded"), decision.verdicts


SCHEDULED = POLICY.model_copy(
    update={"retrain_on_degraded": False, "retrain_every_windows": 2, "cooldown_windows": 1}
)


def test_the_schedule_retrains_every_n_windows_whatever_their_verdicts() -> None:
    # given a healthy champion monitored for one window, then two, never retrained
    one, two = [window(0)], [window(0), window(1)]

    early = decide_retraining(one, IDLE, SCHEDULED)
    due = decide_retraining(two, IDLE, SCHEDULED)

    assert not early.retrain, early.reason
    assert "scheduled retrain every 2 windows: 1 of this champion so far" in early.reason
    assert due.retrain, f"two windows of a healthy champion: the schedule says retrain: {due}"
    assert due.reason.startswith("scheduled: 2 windows of this champion"), due.reason
    assert due.episode_start == two[0].window_start, "the episode is the first window counted"


def test_the_schedule_counts_from_the_last_retrain() -> None:
    # given a champion kept after a retrain: its history is longer than the schedule
    history = [window(i) for i in range(5)]
    after_one = RunState(False, windows_since_retrain=1, labelled_rows_available=5000)
    after_two = RunState(False, windows_since_retrain=2, labelled_rows_available=5000)

    held = decide_retraining(history, after_one, SCHEDULED)
    due = decide_retraining(history, after_two, SCHEDULED)

    assert not held.retrain and "1 since the last retrain so far" in held.reason, held.reason
    assert due.retrain, due.reason
    assert due.episode_start == history[3].window_start, "a new episode per cadence"


def test_the_schedule_keeps_the_guards() -> None:
    history = [window(0), window(1)]
    busy = RunState(True, windows_since_retrain=None, labelled_rows_available=5000)
    scarce = RunState(False, windows_since_retrain=None, labelled_rows_available=80)

    assert "already in flight" in decide_retraining(history, busy, SCHEDULED).reason
    assert "only 80 labelled rows" in decide_retraining(history, scarce, SCHEDULED).reason


def test_degraded_windows_retrain_only_when_the_policy_says_so() -> None:
    history = [miscalibrated(0)]
    off = SCHEDULED.model_copy(update={"retrain_every_windows": None})
    both = SCHEDULED.model_copy(update={"retrain_on_degraded": True, "windows_required": 1})

    assert not decide_retraining(history, IDLE, off).retrain, "degraded windows do not count"
    assert "retraining on degraded windows is off" in decide_retraining(history, IDLE, off).reason
    # with both triggers, a degraded window retrains before the schedule is due
    either = decide_retraining(history, IDLE, both)
    assert either.retrain and "calibration gap" in either.reason, either.reason


COLD = RetrainingPolicy(cold_start_min_new_labels=1000, cold_start_cooldown_windows=2)


def test_with_no_champion_training_is_retried_only_on_enough_new_labels() -> None:
    # given a failed attempt on 1,500 labelled rows, three windows ago
    def after(labelled: int) -> ColdStartState:
        return ColdStartState(False, labelled, 1500, 3, "its run Failed, on 1500 labelled rows")

    # when 900 more are recorded / then not yet: the same rows would fail the same gates
    short = decide_cold_start(after(2400), COLD)
    assert not short.retrain, short.reason
    assert "900 new labelled rows since the last training attempt" in short.reason, short.reason
    assert "1000 required" in short.reason, short.reason
    # when 1,000 more are / then training is tried again
    due = decide_cold_start(after(2500), COLD)
    assert due.retrain and "no champion serving" in due.reason, due.reason


def test_with_no_champion_and_no_attempt_yet_every_label_is_new() -> None:
    # given no training the monitor ever triggered / when 1,000 outcomes are recorded
    first = decide_cold_start(ColdStartState(False, 1000, None, None), COLD)
    # then the first attempt is triggered
    assert first.retrain, first.reason


def test_the_cold_start_keeps_the_cooldown_and_the_in_flight_guard() -> None:
    # given plenty of new labels, but the last attempt one window ago, or a run under way
    cooling = decide_cold_start(ColdStartState(False, 9000, 1000, 1), COLD)
    busy = decide_cold_start(ColdStartState(True, 9000, 1000, 5), COLD)
    # then neither retrains, and each says why
    assert not cooling.retrain and "cooldown: 1 of 2 windows" in cooling.reason, cooling.reason
    assert not busy.retrain and "already in flight" in busy.reason, busy.reason


def test_the_cold_start_parameters_are_validated() -> None:
    # when a policy asks for no new labels, or a negative cooldown / then it is refused, named
    with pytest.raises(ValidationError, match="cold_start_min_new_labels"):
        RetrainingPolicy(cold_start_min_new_labels=0)
    with pytest.raises(ValidationError, match="cold_start_cooldown_windows"):
        RetrainingPolicy(cold_start_cooldown_windows=-1)


def test_a_failed_attempt_started_by_hand_holds_the_retry_back_like_the_monitors() -> None:
    # given no monitor attempt ever, but a run started by hand that failed on 4,000 rows,
    # two windows ago (as `jobs.monitoring.cold_start_state` reads it from the decision log)
    def after(labelled: int) -> ColdStartState:
        last = "started by hand, its run Failed, on 4000 labelled rows"
        return ColdStartState(False, labelled, 4000, 2, last)

    # when 4,500 labelled rows are recorded / then no retry: only 500 are new to it
    short = decide_cold_start(after(4500), COLD)
    assert not short.retrain, "the monitor would retry on the rows that already failed"
    assert "500 new labelled rows since the last training attempt" in short.reason, short.reason
    assert "started by hand" in short.reason, "the reason should name the manual attempt"
    # when 5,000 are / then training is tried again
    due = decide_cold_start(after(5000), COLD)
    assert due.retrain, due.reason


RELEASING = RunState(
    False, windows_since_retrain=3, labelled_rows_available=5000, release_under_way="7"
)


def test_a_release_under_way_holds_a_scheduled_retrain() -> None:
    # given a schedule that is due, while challenger 7 is released and undecided
    history = [window(i) for i in range(4)]

    held = decide_retraining(history, RELEASING, SCHEDULED)
    free = decide_retraining(history, RunState(False, 3, 5000), SCHEDULED)

    # then the retrain waits for the release, and runs once none is under way
    assert not held.retrain, f"a release under way holds the retrain: {held.reason}"
    assert "release under way: challenger 7 not yet decided" in held.reason, held.reason
    assert held.reason.startswith("scheduled: 3 windows"), "why it was asked is kept"
    assert free.retrain, f"with no release under way the schedule retrains: {free.reason}"


def test_supersede_lets_a_retrain_run_during_a_release() -> None:
    # given a due schedule during a release, with a policy that supersedes
    history = [window(i) for i in range(4)]
    supersede = SCHEDULED.model_copy(update={"retrain_during_release": "supersede"})
    # when the monitor decides
    decision = decide_retraining(history, RELEASING, supersede)
    # then it retrains
    assert decision.retrain, f"supersede retrains whatever the release: {decision.reason}"


def test_a_release_holds_a_retrain_asked_by_degraded_windows_too() -> None:
    # given degraded windows during a release, with a policy that holds
    both = POLICY.model_copy(update={"retrain_during_release": "hold"})
    history = [window(0), miscalibrated(1), miscalibrated(2)]
    # when the monitor decides
    decision = decide_retraining(history, RELEASING, both)
    # then the retrain waits for the release
    assert not decision.retrain and "release under way" in decision.reason, decision.reason


def test_hold_is_the_default_and_the_policy_is_validated() -> None:
    # given the policy's defaults / then hold; and an unknown value is refused by name
    assert RetrainingPolicy().retrain_during_release == "hold", "hold is the default"
    with pytest.raises(ValidationError, match="retrain_during_release"):
        RetrainingPolicy(retrain_during_release="queue")  # type: ignore[arg-type]
