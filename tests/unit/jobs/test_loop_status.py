"""The loop's state, read from the records the monitor, training and promotion store (nx-27017)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from tests.loop_records import EXPECTED, NOW, WINDOW, seed_loop, window

from telescore.core.loop_status import RELEASE_ACTIONS, degraded_in_a_row, judged_window
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs.loop_status import read_loop_status
from telescore.services.processes import ServiceProcess


@dataclass(frozen=True)
class Stores:
    monitoring: MonitoringStore
    releases: ReleaseStore
    outcomes: OutcomeStore


@pytest.fixture
def stores(mongodb: ServiceProcess) -> Iterator[Stores]:
    """The loop's stores on a fresh database of the session's nx-27017."""
    uri, database = mongodb.uri, f"loop_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]
    with (
        MonitoringStore(uri, database) as monitoring,
        ReleaseStore(uri, database) as releases,
        OutcomeStore(uri, database) as outcomes,
    ):
        yield Stores(monitoring, releases, outcomes)


def test_the_loop_is_read_from_its_records(stores: Stores) -> None:
    # given the seeded story: retrains, releases, version 4's windows, pending outcomes
    seed_loop(stores.monitoring, stores.releases, stores.outcomes)
    # when the loop's state is read (MLServer said what it serves)
    status = read_loop_status(
        stores.monitoring,
        stores.releases,
        stores.outcomes,
        served={"champion": "4", "challenger": None},
    )
    # then the last judged window and its figures are the latest window's
    last = status.last_window
    assert last is not None, "a judged window was seeded"
    assert last.window_start == EXPECTED.last_window_start, f"last window: {last.window_start}"
    assert last.verdict == EXPECTED.verdict, f"verdict: {last.verdict}"
    assert last.predictions == EXPECTED.predictions, f"predictions: {last.predictions}"
    assert last.label_coverage == pytest.approx(EXPECTED.label_coverage), "label coverage"
    assert last.drift_share == pytest.approx(EXPECTED.drift_share), "drift share"
    assert last.roc_auc == pytest.approx(EXPECTED.roc_auc), "ROC AUC"
    assert last.calibration_gap == pytest.approx(EXPECTED.calibration_gap), "calibration gap"
    assert status.window_seconds == WINDOW.total_seconds(), f"window: {status.window_seconds}"
    # and the last run is the latest decision, the streak skips the window awaiting labels
    assert status.last_run_at == EXPECTED.last_run_at, f"last run: {status.last_run_at}"
    assert status.degraded_windows_since_retrain == EXPECTED.degraded_in_a_row, (
        f"degraded in a row: {status.degraded_windows_since_retrain}"
    )
    # and retrains and release decisions are counted from their records
    counted = (status.retrains_started, status.retrains_failed, status.retrains_promoted)
    wanted = (EXPECTED.retrains_started, EXPECTED.retrains_failed, EXPECTED.retrains_promoted)
    assert counted == wanted, f"retrains started, failed, promoted: {counted}"
    assert dict(status.release_decisions) == dict(EXPECTED.release_decisions), (
        f"release decisions by action: {status.release_decisions}"
    )
    assert status.last_release is not None, "release decisions were seeded"
    assert status.last_release.action == EXPECTED.last_release_action, "last release decision"
    assert status.last_retrain is not None, "retrains were seeded"
    assert status.last_retrain.state == "Completed", f"last retrain: {status.last_retrain}"
    # and the routing, the pending outcomes and the served versions are there
    assert status.routing_mode == EXPECTED.routing_mode, f"routing: {status.routing_mode}"
    assert status.pending_outcomes == EXPECTED.pending_outcomes, (
        f"pending outcomes: {status.pending_outcomes}"
    )
    assert status.served == {"champion": "4", "challenger": None}, f"served: {status.served}"


def test_an_empty_loop_reads_as_nothing_yet_with_counts_at_zero(stores: Stores) -> None:
    # given no record at all
    # when the loop's state is read
    status = read_loop_status(stores.monitoring, stores.releases, stores.outcomes)
    # then nothing is judged or run yet, and every count is 0, every action included
    assert status.last_window is None, f"no window was monitored: {status.last_window}"
    assert status.last_run_at is None and status.window_seconds is None, "no run yet"
    assert (status.retrains_started, status.retrains_failed, status.retrains_promoted) == (
        0,
        0,
        0,
    ), "no retrain yet"
    assert dict(status.release_decisions) == dict.fromkeys(RELEASE_ACTIONS, 0), (
        f"every action from 0: {status.release_decisions}"
    )
    assert status.routing_mode == "champion", "no routing set: the champion answers all"
    assert status.served is None, "MLServer was not asked"


def test_a_window_monitored_without_a_champion_is_not_the_last_judged(stores: Stores) -> None:
    # given a judged window, then a newer one monitored while no champion served
    older = NOW - WINDOW * 3
    stores.monitoring.save_run("a", window(older, "healthy", "2", labelled_rows=400))
    stores.monitoring.save_run(
        "b", window(older + WINDOW, "no model serving", None, rows=0, predictions=0)
    )
    # when the loop's state is read
    status = read_loop_status(stores.monitoring, stores.releases, stores.outcomes)
    # then the last judged window is the older one, and a champion no retrain made has no streak
    assert status.last_window is not None, "a judged window exists"
    assert status.last_window.window_start == older, f"last judged: {status.last_window}"
    assert status.degraded_windows_since_retrain == 0, "version 2 was not made by a retrain"


def test_degraded_streak_skips_windows_silent_on_quality_and_ends_at_a_healthy_one() -> None:
    # given verdicts, newest first
    verdicts = ["degraded", "insufficient data", "drifted, unlabelled", "degraded", "healthy"]
    # when the streak is counted
    streak = degraded_in_a_row(verdicts)
    # then the silent ones are skipped and the healthy one ends it
    assert streak == 2, f"streak: {streak}"
    assert degraded_in_a_row(["healthy", "degraded"]) == 0, "the newest judged is healthy"


def test_a_window_without_quality_figures_has_none_and_coverage_from_its_rows() -> None:
    # given a window judged on too few labels: no Evidently coverage, no quality figures
    document = window(NOW, "awaiting labels", "4", rows=200, labelled_rows=50, roc_auc=float("nan"))
    # when its figures are read
    judged = judged_window(document)
    # then coverage comes from its rows, and the undefined figures are None (not NaN)
    assert judged is not None, "awaiting labels is a verdict"
    assert judged.label_coverage == pytest.approx(0.25), f"coverage: {judged.label_coverage}"
    assert judged.roc_auc is None and judged.calibration_gap is None, f"figures: {judged}"
    assert judged.drift_share is None, "no drift measured on this window"
    assert judged.seconds == WINDOW.total_seconds(), f"length: {judged.seconds}"


def test_the_window_exported_is_the_schedule_a_run_recorded_not_a_compressed_one(
    stores: Stores,
) -> None:
    # given the seeded story, then a simulation's run: a window of 2 seconds, judged by a
    # monitor whose schedule is hourly
    seed_loop(stores.monitoring, stores.releases, stores.outcomes)
    start = NOW + WINDOW
    stores.monitoring.save_run(
        start.isoformat(),
        {"window_start": start, "window_end": start + timedelta(seconds=2), "rows": 400},
    )
    stores.monitoring.add_decision(
        {"decided_at": NOW + 2 * WINDOW, "window_start": start, "schedule_seconds": 3600}
    )
    # when the loop's state is read
    status = read_loop_status(stores.monitoring, stores.releases, stores.outcomes)
    # then the window is the schedule's hour: the stopped-monitor alert counts scheduled windows
    assert status.window_seconds == 3600, f"window: {status.window_seconds}"
