"""Calls made while no model serves: logged unscored, so that their outcomes teach the first one.

With no champion nothing ranks the prospects, but calls are still made. Each one logged here is
a prediction document with the call's inputs, a prediction id (UUIDv7, as MLServer gives) and
no score (route `unserved`): its outcome is recorded like any other, and it becomes a labelled
row that the next training attempt learns from (`data.production`), while the monitor and the
release judge only what a model answered.

A training run started by hand while no champion serves is a cold-start attempt like one the
monitor triggers: `counted_attempt` records it in the monitor's decision log, with the labelled
rows it had and how it ended, so that the monitor retries only on rows it did not have.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import unserved_records
from telescore.core.retraining import manual_attempt_record, started_by_monitor
from telescore.core.schema import FEATURES
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore

if TYPE_CHECKING:  # MLflow is imported by the registry: only a training run needs it here
    from telescore.io.context import Context
    from telescore.io.registry import Registry

logger = logging.getLogger(__name__)


def log_unserved(
    store: PredictionStore,
    rows: Sequence[Mapping[Any, Any]],
    request_id: str,
    model_name: str,
    at: datetime | None = None,
) -> list[str]:
    """Log calls made with no model serving; return their prediction ids, in row order.

    Raises RuntimeError when MongoDB refuses a record (nothing is then cited by an outcome).
    """
    ids = PredictionIds().new(len(rows))
    records = unserved_records(
        ids,
        request_id,
        model_name,
        [{name: row[name] for name in FEATURES} for row in rows],
        at or datetime.now(UTC),
    )
    outcome = store.insert(records)
    if outcome.refused:
        raise RuntimeError(
            f"{len(outcome.refused)} of {len(records)} unserved calls refused by MongoDB, "
            f"the first: {outcome.refused[0]}"
        )
    return ids


@dataclass
class TrainingAttempt:
    """A training run started by hand while no champion serves: what it had, how it ended."""

    started_at: datetime
    labelled_rows: int
    """Labelled production rows recorded when it started (the monitor's count)."""
    after_window: datetime | None
    """Start of the latest window monitored before it; None if none was."""
    promoted: bool = False
    summary: str = ""

    def ended(self, promoted: bool, summary: str) -> None:
        """Say how the run ended, when it raised nothing: a champion made, or why not."""
        self.promoted, self.summary = promoted, summary


def begin_attempt(
    registry: Registry,
    outcomes: OutcomeStore,
    records: MonitoringStore,
    trigger: Mapping[str, Any] | None,
) -> TrainingAttempt | None:
    """Return the attempt to count if this run is one the monitor does not record; else None.

    None for a run the monitor started (its decision is the attempt) and for one started while
    a champion serves (not a cold start). Raises RegistryError or a pymongo error when the
    registry or MongoDB cannot say.
    """
    from telescore.io.registry import CHAMPION

    if started_by_monitor(trigger) or registry.alias_versions([CHAMPION]):
        return None
    latest = records.recent_runs(limit=1)
    return TrainingAttempt(
        started_at=datetime.now(UTC),
        labelled_rows=outcomes.count(),
        after_window=latest[0]["window_start"] if latest else None,
    )


def record_attempt(
    records: MonitoringStore,
    attempt: TrainingAttempt,
    state: str,
    trigger: Mapping[str, Any] | None = None,
) -> str:
    """Record an attempt that left no champion in the monitor's decision log; return its id."""
    return records.add_decision(
        manual_attempt_record(
            started_at=attempt.started_at,
            labelled_rows=attempt.labelled_rows,
            after_window=attempt.after_window,
            state=state,
            summary=attempt.summary,
            trigger=trigger,
        )
    )


@contextmanager
def counted_attempt(ctx: Context, trigger: Mapping[str, Any] | None) -> Iterator[TrainingAttempt]:
    """Count the training run inside as a cold-start attempt if it is one the monitor does not.

    On leaving, a run started by hand while no champion served, and that made none (it raised,
    e.g. a failed gate, or registered no champion), is recorded as an attempt with the labelled
    rows it had. A successful first champion is not: the cold start is over, and the monitor's
    schedule counts its windows as it does today. Counting is best effort: a registry or
    MongoDB that cannot answer is logged, never the run's failure.
    """
    records = ctx.store(MonitoringStore)
    attempt: TrainingAttempt | None = None
    try:
        attempt = begin_attempt(ctx.registry, ctx.store(OutcomeStore), records, trigger)
    except Exception as error:  # noqa: BLE001 - the run itself says whether these answer
        logger.warning("this run is not counted as a cold-start attempt: %s", error)
    shown = attempt or TrainingAttempt(datetime.now(UTC), 0, None)
    try:
        yield shown
    except BaseException as error:
        if attempt is not None:
            attempt.summary = f"training run Failed: still no champion ({str(error)[:300]})"
            _record(records, attempt, "Failed", trigger)
        raise
    if attempt is not None and not attempt.promoted:
        _record(records, attempt, "Completed", trigger)


def _record(
    records: MonitoringStore,
    attempt: TrainingAttempt,
    state: str,
    trigger: Mapping[str, Any] | None,
) -> None:
    try:
        decision_id = record_attempt(records, attempt, state, trigger)
    except PyMongoError as error:
        logger.warning("cold-start attempt not recorded (MongoDB): %s", error)
        return
    logger.info(
        "counted as a cold-start attempt on %d labelled rows (decision %s)",
        attempt.labelled_rows,
        decision_id,
    )
