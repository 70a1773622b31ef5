"""Calls made while no model serves: logged unscored, so that their outcomes teach the first one.

With no champion nothing ranks the prospects, but calls are still made. Each one logged here is
a prediction document with the call's inputs, a prediction id (UUIDv7, as MLServer gives) and
no score (route `unserved`): its outcome is recorded like any other, and it becomes a labelled
row that the next training attempt learns from (`data.production`), while the monitor and the
release judge only what a model answered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import unserved_records
from telescore.core.schema import FEATURES
from telescore.io.prediction_store import PredictionStore


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
