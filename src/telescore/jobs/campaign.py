"""Seed the campaign: prospects from the dataset's profile columns, and indicators in force."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pandas as pd

from telescore.core.prospects import Indicators, prospects_from_dataset
from telescore.io.prospect_store import ProspectStore
from telescore.jobs.indicators import set_indicators

SEED_READ_TIMEOUT_MS: Final = 60_000
"""How long MongoDB may take over one write of a seed (thousands of prospects), for the store
`seed_prospects` is given: a web request's two seconds are too short on a busy machine."""


def seed_prospects(
    store: ProspectStore, dataset: Path, limit: int | None = None, *, by: str = "seed"
) -> tuple[int, int]:
    """Replace the prospects with the dataset's rows; enter its latest indicators if none are.

    Returns (prospects stored, indicators revision in force). The dataset's last row holds the
    newest indicators (the rows are in time order).
    """
    frame = pd.read_csv(dataset, sep=";", nrows=limit)
    stored = store.replace_prospects(prospects_from_dataset(frame))
    store.ensure_indexes()
    latest = store.latest_indicators()
    if latest is not None:
        return stored, int(latest["_id"])
    revision = set_indicators(
        store, Indicators.from_features(frame.iloc[-1].to_dict()), datetime.now(UTC).date(), by
    )
    return stored, revision
