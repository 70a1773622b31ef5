"""Calls recorded from the call list, and their outcomes for the predictions shown.

A call's result is stored with the prospect (`calls` collection, read by every replica's list);
"subscribed" and "declined" are also the outcome (label) of the prediction the caller was shown.
A prediction scored moments ago may not be in MongoDB yet (MLServer's log ships within
`ship_max_defer`): its outcome is stored pending, and joins the prediction once it lands.
An outcome may cite only a prediction made for the prospect called: a logged prediction whose
inputs are another profile is refused (`NotThisProspectsPredictionError`), so a caller cannot
label predictions shown to other prospects. A pending one cannot be compared yet (see
docs/security.md); a prediction log carrying the prospect id would close that.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from telescore.core.outcomes import PENDING_EXPIRY, Outcome
from telescore.core.prospects import CallResult, outcome_label, scored_this_profile
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prospect_store import ProspectStore
from telescore.jobs.outcomes import REJECTED, RecordResult, Status, record_outcome
from telescore.jobs.prospect_scoring import UnknownProspectsError


class NotThisProspectsPredictionError(ValueError):
    """The call cites a prediction made for another prospect: nothing is stored."""

    def __init__(self, prospect_id: str, prediction_id: str) -> None:
        super().__init__(
            f"prediction_id {prediction_id} was not made for prospect {prospect_id}: "
            "a call's outcome may cite only a prediction shown for that prospect"
        )


@dataclass(frozen=True)
class CallRecorded:
    """A call as stored, and what became of its outcome."""

    prospect_id: str
    prediction_id: str
    result: CallResult
    outcome: RecordResult | None
    """None for "no answer": it gives no label."""
    pending: bool
    """The prediction is not in MongoDB yet: its outcome is stored pending, joined once it is."""


class CallRecorder:
    """Stores calls and their outcomes; thread-safe (the stores are)."""

    def __init__(
        self,
        prospects: ProspectStore,
        outcomes: OutcomeStore,
        *,
        outcome_expiry: timedelta = PENDING_EXPIRY,
        on_recorded: Callable[[str, CallResult], None] | None = None,
    ) -> None:
        self._prospects = prospects
        self._outcomes = outcomes
        self._outcome_expiry = outcome_expiry
        self._on_recorded = on_recorded
        """Told of each call stored: the call list shows it at once."""

    def record_call(
        self, prospect_id: str, prediction_id: str, result: CallResult, caller: str
    ) -> CallRecorded:
        """Store a call, and its outcome (subscribed or declined) for the prediction shown.

        Raises UnknownProspectsError for an unknown prospect, NotThisProspectsPredictionError
        for a prediction made for another one. The outcome's status says if the prediction
        expired or has another outcome already: then the call is not stored.
        """
        profile = self._prospects.get_many([prospect_id]).get(prospect_id)
        if profile is None:
            raise UnknownProspectsError([prospect_id])
        label = outcome_label(result)
        if label is not None:
            features = self._outcomes.prediction_features(prediction_id)
            if features is not None and not scored_this_profile(profile, features):
                raise NotThisProspectsPredictionError(prospect_id, prediction_id)
        call: dict[str, Any] = {
            "_id": str(uuid.uuid4()),
            "prospect_id": prospect_id,
            "prediction_id": prediction_id,
            "result": result,
            "caller": caller,
            "at": datetime.now(UTC),
        }
        outcome = None
        if label is not None:
            outcome = record_outcome(
                self._outcomes, _outcome(call, label), expiry=self._outcome_expiry
            )
            if outcome.status in REJECTED:
                return CallRecorded(prospect_id, prediction_id, result, outcome, pending=False)
        self._prospects.record_call(call)
        if self._on_recorded is not None:
            self._on_recorded(prospect_id, result)
        pending = outcome is not None and outcome.status is Status.PENDING
        return CallRecorded(prospect_id, prediction_id, result, outcome, pending=pending)


def _outcome(call: Mapping[str, Any], label: bool) -> Outcome:
    return Outcome(
        prediction_id=call["prediction_id"],
        subscribed=label,
        reported_at=call["at"],
        source=f"app:{call['caller']}",
    )
