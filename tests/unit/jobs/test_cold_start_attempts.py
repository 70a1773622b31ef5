"""A training run started by hand while no champion serves counts for the cold-start policy.

On the session's nx-27017: the run is recorded in the monitor's decision log as the monitor
records its own attempts, and the monitor's policy (`cold_start_state`, `decide_cold_start`)
then retries only on labelled rows that run did not have.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

from telescore.core.outcomes import Outcome
from telescore.core.retraining import MONITOR_TRIGGER, RetrainingPolicy, decide_cold_start
from telescore.core.schema import FEATURES
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.io.registry import CHAMPION
from telescore.jobs import cold_start
from telescore.jobs.monitoring import cold_start_state
from telescore.jobs.outcomes import record_outcomes
from telescore.services.processes import ServiceProcess

DATASET = Path(__file__).resolve().parents[3] / "data" / "bank-additional-full.csv.gz"
POLICY = RetrainingPolicy(cold_start_min_new_labels=100, cold_start_cooldown_windows=1)


class Registry:
    """What the attempt asks the registry: which of the aliases exist."""

    def __init__(self, champion: str | None = None) -> None:
        self.champion = champion

    def alias_versions(self, aliases: list[str]) -> dict[str, str]:
        return {CHAMPION: self.champion} if self.champion and CHAMPION in aliases else {}


class Stores:
    """The stores of one test database, as a context hands them out (`ctx.store(kind)`)."""

    def __init__(self, uri: str) -> None:
        database = f"attempts_{uuid.uuid4().hex[:12]}"
        self.opened = {
            kind: kind(uri, database).__enter__()
            for kind in (MonitoringStore, OutcomeStore, PredictionStore)
        }

    def store(self, kind: type[Any]) -> Any:
        return self.opened[kind]

    def close(self) -> None:
        for each in self.opened.values():
            each.close()


@pytest.fixture
def stores(mongodb: ServiceProcess) -> Iterator[Stores]:
    opened = Stores(mongodb.uri)  # type: ignore[attr-defined]
    yield opened
    opened.close()


def label(stores: Stores, rows: pd.DataFrame) -> None:
    """Calls made with no model serving: logged unscored, their outcomes recorded."""
    ids = cold_start.log_unserved(
        stores.store(PredictionStore), rows.loc[:, list(FEATURES)].to_dict("records"), "t", "m"
    )
    outcomes = [
        Outcome(prediction_id=each, subscribed=y == "yes", source="test")
        for each, y in zip(ids, rows["y"], strict=True)
    ]
    results = record_outcomes(stores.store(OutcomeStore), outcomes)
    assert {each.status for each in results} == {"recorded"}, results[:2]


def monitored_window(stores: Stores, start: datetime) -> dict[str, Any]:
    """A window the monitor recorded with no champion."""
    document = {"window_start": start, "window_end": start + timedelta(hours=1), "rows": 0}
    stores.store(MonitoringStore).save_run(start.isoformat(), document)
    return document


def monitor_decides(stores: Stores) -> Any:
    """What the monitor's policy decides now, from the decision log and the labels."""
    monitor: Any = SimpleNamespace(
        prefect_api=None,
        training_deployment="train-telemarketing/default",
        outcomes=stores.store(OutcomeStore),
        records=stores.store(MonitoringStore),
    )
    history = stores.store(MonitoringStore).recent_runs(limit=50)
    return decide_cold_start(cold_start_state(monitor, history), POLICY)


def test_a_failed_run_started_by_hand_is_an_attempt_the_policy_retries_only_on_new_rows(
    stores: Stores,
) -> None:
    # given no champion, one monitored window, and 150 labelled outcomes of unserved calls
    rows = pd.read_csv(DATASET, sep=";", nrows=400).drop(columns=["duration"])
    monitored_window(stores, datetime(2026, 3, 1, 9, tzinfo=UTC))
    label(stores, rows.iloc[:150])
    ctx: Any = SimpleNamespace(registry=Registry(), store=stores.store)
    assert monitor_decides(stores).retrain, "150 new labels: the monitor would try now"

    # when a run started by hand (no trigger) fails its gate
    with (
        pytest.raises(RuntimeError, match="holdout ROC AUC"),
        cold_start.counted_attempt(ctx, None),
    ):
        raise RuntimeError("Deepchecks gate failed: holdout ROC AUC 0.49 < 0.5")

    # then it is in the decision log, with the labelled rows it had and how it ended
    last = stores.store(MonitoringStore).last_retrain()
    assert last is not None and last["manual"] is True, last
    assert last["state"]["labelled_rows_available"] == 150, last["state"]
    assert last["training"]["state"] == "Failed", last["training"]
    assert "holdout ROC AUC 0.49" in last["training"]["summary"], last["training"]

    # and once the next window is monitored, the monitor does not retry on the same rows
    monitored_window(stores, datetime(2026, 3, 1, 10, tzinfo=UTC))
    held = monitor_decides(stores)
    assert not held.retrain, f"retried on rows that already failed: {held.reason}"
    assert "0 new labelled rows since the last training attempt" in held.reason, held.reason
    assert "started by hand, its run Failed, on 150 labelled rows" in held.reason, held.reason

    # when 100 more outcomes are recorded / then it retries
    label(stores, rows.iloc[150:250])
    due = monitor_decides(stores)
    assert due.retrain and "100 new labelled rows" in due.reason, due.reason


def test_a_manual_attempt_before_any_window_counts_every_later_window_for_the_cooldown(
    stores: Stores,
) -> None:
    # given no champion and no monitored window: a run by hand that registers no champion
    rows = pd.read_csv(DATASET, sep=";", nrows=300).drop(columns=["duration"])
    ctx: Any = SimpleNamespace(registry=Registry(), store=stores.store)
    with cold_start.counted_attempt(ctx, {"by": "ops"}) as attempt:
        attempt.ended(promoted=False, summary="registered version None: no champion")
    recorded = stores.store(MonitoringStore).last_retrain()
    assert recorded is not None and recorded["window_start"] is None, recorded
    assert recorded["training"]["state"] == "Completed", recorded["training"]

    # when 200 labels arrive and one window is monitored
    label(stores, rows.iloc[:200])
    monitored_window(stores, datetime(2026, 3, 1, 9, tzinfo=UTC))

    # then the window counts as after the attempt: the cooldown of one window is over
    due = monitor_decides(stores)
    assert due.retrain, due.reason


@pytest.mark.parametrize(
    ("champion", "trigger", "promoted", "why"),
    [
        (None, {"by": MONITOR_TRIGGER}, False, "the monitor records the runs it starts"),
        ("3", None, False, "with a champion it is not a cold start"),
        (None, None, True, "a first champion ends the cold start"),
    ],
)
def test_runs_that_are_not_manual_cold_start_failures_are_not_recorded(
    stores: Stores, champion: str | None, trigger: dict[str, str] | None, promoted: bool, why: str
) -> None:
    # given a registry with or without a champion
    ctx: Any = SimpleNamespace(registry=Registry(champion), store=stores.store)
    # when a run ends (promoted or not), started by hand or by the monitor
    with cold_start.counted_attempt(ctx, trigger) as attempt:
        attempt.ended(promoted=promoted, summary="registered version 1")
    # then nothing is added to the decision log
    assert stores.store(MonitoringStore).last_retrain() is None, why
