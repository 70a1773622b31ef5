"""Record call outcomes: one, a batch, or a file; first outcome wins, nothing is overwritten.

An outcome is recorded only for a prediction in the prediction log. Reporting the same outcome
again is harmless (already recorded); a different outcome for a prediction that has one is a
conflict, and the stored one stays. These functions know nothing about HTTP: the API and the
CLI turn their results into status codes and exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Final

from telescore.core.outcomes import (
    MAX_SOURCE_LENGTH,
    MalformedBatchError,
    Outcome,
    RecordedOutcome,
    RejectedRow,
    parse_csv,
    parse_json,
    utc_now,
)
from telescore.io.outcome_store import DEFAULT_CHUNK_SIZE, OutcomeStore

CSV_SUFFIXES: Final = frozenset({".csv"})
JSON_SUFFIXES: Final = frozenset({".json", ".jsonl", ".ndjson"})


class Status(StrEnum):
    """What became of one reported outcome."""

    RECORDED = "recorded"
    ALREADY_RECORDED = "already recorded"
    """The same outcome was recorded before: nothing to do."""
    UNKNOWN_PREDICTION = "unknown prediction id"
    """No prediction with this id is logged: nothing recorded."""
    CONFLICT = "conflict"
    """A different outcome was recorded before: it stays, this one is not recorded."""


@dataclass(frozen=True)
class RecordResult:
    """One reported outcome and what became of it."""

    outcome: Outcome
    """The outcome as reported."""
    status: Status
    stored: RecordedOutcome | None
    """The outcome stored for the prediction now (None for an unknown prediction)."""

    @property
    def message(self) -> str:
        """Say what happened, for a person."""
        prediction_id = self.outcome.prediction_id
        if self.stored is None:
            return f"unknown prediction id {prediction_id}: no such prediction is logged"
        stored = f"subscribed {_yes_no(self.stored.subscribed)}, " + (
            f"reported at {self.stored.reported_at.isoformat()}"
        )
        if self.status is Status.CONFLICT:
            return (
                f"conflict: prediction {prediction_id} already has a different outcome "
                f"({stored}); it was not changed"
            )
        if self.status is Status.ALREADY_RECORDED:
            return f"already recorded ({stored})"
        return f"recorded ({stored})"


class UnknownPredictionError(LookupError):
    """No prediction with this id is logged."""


@dataclass(frozen=True)
class ImportReport:
    """What importing a batch file did."""

    path: Path
    rows: int
    """Rows read from the file (blank lines aside)."""
    accepted: int
    """Outcomes recorded by this import."""
    already_recorded: int
    """Rows whose outcome was recorded before, the same: nothing to do."""
    rejected: tuple[RejectedRow, ...]
    """Rows not recorded (malformed, unknown prediction id, conflict), in line order."""


def record_outcome(store: OutcomeStore, outcome: Outcome) -> RecordResult:
    """Record one outcome unless its prediction is unknown or has an outcome already."""
    return record_outcomes(store, [outcome])[0]


def record_outcomes(store: OutcomeStore, reported: Sequence[Outcome]) -> list[RecordResult]:
    """Record outcomes, each unless its prediction is unknown or has one; say what became of each.

    Two outcomes for one prediction in `reported` count as two reports, in order.
    """
    known = store.known_predictions([outcome.prediction_id for outcome in reported])
    recorded = iter(store.record([each for each in reported if each.prediction_id in known]))
    results = []
    for outcome in reported:
        if outcome.prediction_id not in known:
            results.append(RecordResult(outcome, Status.UNKNOWN_PREDICTION, None))
            continue
        done = next(recorded)
        if done.new:
            status = Status.RECORDED
        elif done.stored.subscribed == outcome.subscribed:
            status = Status.ALREADY_RECORDED
        else:
            status = Status.CONFLICT
        results.append(RecordResult(outcome, status, done.stored))
    return results


def find_outcome(store: OutcomeStore, prediction_id: str) -> RecordedOutcome | None:
    """Return the outcome recorded for a prediction (None: none yet); raise if it is unknown."""
    outcome = store.get(prediction_id)
    if outcome is None and not store.known_predictions([prediction_id]):
        raise UnknownPredictionError(f"unknown prediction id {prediction_id}")
    return outcome


def import_outcomes(
    store: OutcomeStore,
    path: Path,
    *,
    source: str | None = None,
    now: datetime | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> ImportReport:
    """Record the outcomes of a CSV or JSON file; report what was recorded and what not, why.

    Rows without `reported_at` are taken as reported `now`, rows without `source` as from
    `source` (the file's name by default). Raise MalformedBatchError if the file cannot be read
    at all (wrong type, not UTF-8, no header, broken JSON array): then nothing is recorded.
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
    batch = parse(
        text, reported_at=now or utc_now(), source=(source or path.name)[:MAX_SOURCE_LENGTH]
    )
    accepted = already_recorded = 0
    rejected = list(batch.rejected)
    for offset in range(0, len(batch.valid), chunk_size):
        rows = batch.valid[offset : offset + chunk_size]
        results = record_outcomes(store, [row.outcome for row in rows])
        for row, result in zip(rows, results, strict=True):
            if result.status is Status.RECORDED:
                accepted += 1
            elif result.status is Status.ALREADY_RECORDED:
                already_recorded += 1
            else:
                rejected.append(RejectedRow(row.line, result.message, result.outcome.prediction_id))
    return ImportReport(
        path=path,
        rows=len(batch.valid) + len(batch.rejected),
        accepted=accepted,
        already_recorded=already_recorded,
        rejected=tuple(sorted(rejected, key=lambda row: row.line)),
    )


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"
