"""The socio-economic indicators in force: the latest record ops entered, read and stored."""

from __future__ import annotations

from datetime import UTC, date, datetime

from telescore.core.prospects import Indicators, IndicatorsRecord
from telescore.io.prospect_store import ProspectStore


class NoIndicatorsError(LookupError):
    """No indicators were ever entered: prospects cannot be scored."""


def read_indicators(prospects: ProspectStore) -> IndicatorsRecord | None:
    """Return the indicators record in force, if any was entered."""
    document = prospects.latest_indicators()
    if document is None:
        return None
    return IndicatorsRecord(
        revision=document["_id"],
        indicators=Indicators.model_validate(document["indicators"]),
        effective_from=date.fromisoformat(document["effective_from"]),
        recorded_at=document["recorded_at"],
        recorded_by=document["recorded_by"],
    )


def set_indicators(
    prospects: ProspectStore, indicators: Indicators, effective_from: date, recorded_by: str
) -> int:
    """Store indicators as the ones in force from now; return their revision."""
    return prospects.add_indicators(
        {
            "indicators": indicators.model_dump(),
            "effective_from": effective_from.isoformat(),
            "recorded_at": datetime.now(UTC),
            "recorded_by": recorded_by,
        }
    )
