"""Record call outcomes: one, a batch, or a file; first outcome wins, nothing is overwritten.

An outcome for a prediction in the prediction log is recorded. One for a prediction not logged
yet (MLServer answers before its shipper logs the prediction) is recorded as pending: it joins
the prediction once that is logged; `sweep_pending_outcomes` confirms it then, or keeps it
aside as expired when the prediction never came (see `core.outcomes.expiry_reason`). An id
issued further from now than the expiry, and not logged, is refused at once as expired.
Reporting the same outcome again is harmless (already recorded, or still pending); a different
outcome for a prediction that has one, pending or not, is a conflict, and the stored one stays.
These functions know nothing about HTTP: the API and the CLI turn their results into status
codes and exit codes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Final

from telescore.core.outcomes import (
    MAX_SOURCE_LENGTH,
    PENDING_EXPIRY,
    MalformedBatchError,
    Outcome,
    RecordedOutcome,
    RejectedRow,
    expiry_reason,
    parse_csv,
    parse_json,
    plan_sweep,
    utc_now,
)
from telescore.io.outcome_store import DEFAULT_CHUNK_SIZE, OutcomeStore

logger = logging.getLogger(__name__)

CSV_SUFFIXES: Final = frozenset({".csv"})
JSON_SUFFIXES: Final = frozenset({".json", ".jsonl", ".ndjson"})


class Status(StrEnum):
    """What became of one reported outcome."""

    RECORDED = "recorded"
    ALREADY_RECORDED = "already recorded"
    """The same outcome was recorded before: nothing to do."""
    PENDING = "pending"
    """Its prediction is not logged yet: recorded as pending (or was, the same), it joins the
    prediction once that is logged."""
    EXPIRED = "expired"
    """No prediction with this id is logged, and none can be any more (issued further from now
    than the expiry): nothing recorded."""
    CONFLICT = "conflict"
    """A different outcome was recorded before (pending or not): it stays, this one is not."""


REJECTED: Final = frozenset({Status.EXPIRED, Status.CONFLICT})
"""What is not recorded; every other status means the outcome is, or will be, joined."""


@dataclass(frozen=True)
class RecordResult:
    """One reported outcome and what became of it."""

    outcome: Outcome
    """The outcome as reported."""
    status: Status
    stored: RecordedOutcome | None
    """The outcome stored for the prediction now (None when expired)."""
    reason: str | None = None
    """Why an expired outcome was not recorded."""

    @property
    def message(self) -> str:
        """Say what happened, for a person."""
        prediction_id = self.outcome.prediction_id
        if self.stored is None:
            return self.reason or f"expired: prediction {prediction_id} is not logged"
        stored = f"subscribed {_yes_no(self.stored.subscribed)}, " + (
            f"reported at {self.stored.reported_at.isoformat()}"
        )
        if self.status is Status.CONFLICT:
            waiting = " (pending: its prediction is not logged yet)" if self.stored.pending else ""
            return (
                f"conflict: prediction {prediction_id} already has a different outcome "
                f"({stored}){waiting}; it was not changed"
            )
        if self.status is Status.PENDING:
            return (
                f"pending ({stored}): prediction {prediction_id} is not logged yet; the outcome "
                "will be joined to it when it is"
            )
        if self.status is Status.ALREADY_RECORDED:
            return f"already recorded ({stored})"
        return f"recorded ({stored})"


class UnknownPredictionError(LookupError):
    """No prediction with this id is logged, and no outcome is recorded for it."""


@dataclass(frozen=True)
class PendingRow:
    """A row of a batch file recorded as pending: its prediction is not logged yet."""

    line: int
    """Line of the file the row starts on, from 1."""
    prediction_id: str
    detail: str


@dataclass(frozen=True)
class ImportReport:
    """What importing a batch file did."""

    path: Path
    rows: int
    """Rows read from the file (blank lines aside)."""
    accepted: int
    """Outcomes recorded by this import (pending ones aside)."""
    already_recorded: int
    """Rows whose outcome was recorded before, the same: nothing to do."""
    rejected: tuple[RejectedRow, ...]
    """Rows not recorded (malformed, expired, conflict), in line order."""
    pending: tuple[PendingRow, ...] = ()
    """Rows recorded as pending (their prediction is not logged yet), in line order."""


@dataclass(frozen=True)
class SweepReport:
    """What a sweep of the pending outcomes did."""

    confirmed: int
    """Pending outcomes whose prediction is now logged: joined, no longer pending."""
    expired: tuple[tuple[str, str], ...]
    """(prediction id, reason) of the outcomes kept aside in `outcomes_expired`."""
    pending: int
    """Outcomes still waiting for their prediction."""


def record_outcome(
    store: OutcomeStore,
    outcome: Outcome,
    *,
    expiry: timedelta = PENDING_EXPIRY,
    now: datetime | None = None,
) -> RecordResult:
    """Record one outcome (pending if its prediction is not logged yet) unless it has one."""
    return record_outcomes(store, [outcome], expiry=expiry, now=now)[0]


def record_outcomes(
    store: OutcomeStore,
    reported: Sequence[Outcome],
    *,
    expiry: timedelta = PENDING_EXPIRY,
    now: datetime | None = None,
) -> list[RecordResult]:
    """Record outcomes, each unless its prediction has one or expired; say what became of each.

    An outcome whose prediction is not logged yet is recorded as pending, unless its id was
    issued further from `now` than `expiry` (then it is expired, not recorded). Two outcomes
    for one prediction in `reported` count as two reports, in order.
    """
    when = now or utc_now()
    known = store.known_predictions([outcome.prediction_id for outcome in reported])
    expired = {
        outcome.prediction_id: reason
        for outcome in reported
        if outcome.prediction_id not in known
        and (reason := expiry_reason(outcome.prediction_id, when, expiry)) is not None
    }
    kept = [each for each in reported if each.prediction_id not in expired]
    pending = {each.prediction_id for each in kept} - known
    recorded = iter(store.record(kept, recorded_at=when, pending=pending))
    results = []
    joined: list[str] = []
    for outcome in reported:
        prediction_id = outcome.prediction_id
        if prediction_id in expired:
            results.append(RecordResult(outcome, Status.EXPIRED, None, expired[prediction_id]))
            continue
        done = next(recorded)
        stored = done.stored
        if stored.pending and prediction_id in known:  # pending before, logged since
            joined.append(prediction_id)
            stored = stored.model_copy(update={"pending": False})
        if done.new:
            status = Status.PENDING if stored.pending else Status.RECORDED
        elif stored.subscribed != outcome.subscribed:
            status = Status.CONFLICT
        else:
            status = Status.PENDING if stored.pending else Status.ALREADY_RECORDED
        results.append(RecordResult(outcome, status, stored))
    store.confirm(joined, when)
    return results


def find_outcome(store: OutcomeStore, prediction_id: str) -> RecordedOutcome | None:
    """Return the outcome recorded for a prediction, pending or not (None: none yet).

    Raise UnknownPredictionError when neither the prediction nor an outcome is recorded.
    """
    outcome = store.get(prediction_id)
    if outcome is not None and outcome.pending and store.known_predictions([prediction_id]):
        store.confirm([prediction_id])  # logged since: no sweep needed to say so
        return outcome.model_copy(update={"pending": False})
    if outcome is None and not store.known_predictions([prediction_id]):
        raise UnknownPredictionError(
            f"unknown prediction id {prediction_id}: no such prediction is logged (yet), "
            "and no outcome is recorded for it"
        )
    return outcome


def sweep_pending_outcomes(
    store: OutcomeStore,
    *,
    expiry: timedelta = PENDING_EXPIRY,
    now: datetime | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> SweepReport:
    """Confirm pending outcomes whose prediction is logged; keep aside those that expired.

    Expired: the prediction id was issued more than `expiry` before `now` and is still not
    logged. Each is moved to `outcomes_expired` with its reason and logged as a warning.
    """
    when = now or utc_now()
    confirmed = waiting = 0
    expired: list[tuple[str, str]] = []
    for chunk in list(store.pending_ids(chunk_size)):  # read all first: the sweep changes them
        plan = plan_sweep(chunk, store.known_predictions(chunk), when, expiry)
        confirmed += store.confirm(plan.confirm, when)
        moved = {document["_id"] for document in store.expire(dict(plan.expire), when)}
        for prediction_id, reason in plan.expire:
            if prediction_id in moved:
                logger.warning("Outcome kept aside in outcomes_expired: %s", reason)
                expired.append((prediction_id, reason))
        waiting += len(plan.keep)
    if confirmed or expired:
        logger.info(
            "Pending outcomes: %d joined their prediction, %d expired, %d still pending",
            confirmed,
            len(expired),
            waiting,
        )
    return SweepReport(confirmed, tuple(expired), waiting)


def import_outcomes(
    store: OutcomeStore,
    path: Path,
    *,
    source: str | None = None,
    now: datetime | None = None,
    expiry: timedelta = PENDING_EXPIRY,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ImportReport:
    """Record the outcomes of a CSV or JSON file; report what was recorded, pending, and not.

    Rows without `reported_at` are taken as reported `now`, rows without `source` as from
    `source` (the file's name by default). Rows whose prediction is not logged yet are
    recorded as pending (see `record_outcomes`). Raise MalformedBatchError if the file cannot
    be read at all (wrong type, not UTF-8, no header, broken JSON array): then nothing is
    recorded.
    """
    suffix = path.suffix.lower()
    if suffix not in CSV_SUFFIXES | JSON_SUFFIXES:
        raise MalformedBatchError(
            f"{path.name}: expected a .csv, .json, .jsonl or .ndjson file, not {suffix or 'none'}"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise MalformedBatchError(f"{path.name} is not UTF-8 text: {error.reason}") from None
    parse = parse_csv if suffix in CSV_SUFFIXES else parse_json
    when = now or utc_now()
    batch = parse(text, reported_at=when, source=(source or path.name)[:MAX_SOURCE_LENGTH])
    accepted = already_recorded = 0
    rejected = list(batch.rejected)
    pending: list[PendingRow] = []
    for offset in range(0, len(batch.valid), chunk_size):
        rows = batch.valid[offset : offset + chunk_size]
        results = record_outcomes(store, [row.outcome for row in rows], expiry=expiry, now=when)
        for row, result in zip(rows, results, strict=True):
            prediction_id = result.outcome.prediction_id
            if result.status is Status.RECORDED:
                accepted += 1
            elif result.status is Status.ALREADY_RECORDED:
                already_recorded += 1
            elif result.status is Status.PENDING:
                pending.append(PendingRow(row.line, prediction_id, result.message))
            else:
                rejected.append(RejectedRow(row.line, result.message, prediction_id))
    return ImportReport(
        path=path,
        rows=len(batch.valid) + len(batch.rejected),
        accepted=accepted,
        already_recorded=already_recorded,
        rejected=tuple(sorted(rejected, key=lambda row: row.line)),
        pending=tuple(pending),
    )


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"
