"""A release's evidence starts when the routing changed: to the microsecond, not the second."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from telescore.core.predictions import ID, TIMESTAMP
from telescore.jobs.releases import release_predictions

SINCE = datetime(2026, 12, 5, 9, 32, 8, 111_000, tzinfo=UTC)


class LoggedPredictions:
    """Stands in for the outcome store's read of a time range: [start, end), as its query."""

    def __init__(self, *offsets_ms: int) -> None:
        self.rows = [
            {ID: f"p{n}", TIMESTAMP: SINCE + timedelta(milliseconds=ms), "subscribed": True}
            for n, ms in enumerate(offsets_ms)
        ]
        self.asked: tuple[datetime, datetime] | None = None

    def labelled_predictions(
        self, start: datetime, end: datetime
    ) -> Iterator[list[dict[str, Any]]]:
        self.asked = (start, end)
        yield [row for row in self.rows if start <= row[TIMESTAMP] < end]


def test_every_prediction_after_the_change_counts_also_within_its_second() -> None:
    # given predictions 300 ms before the routing changed, and 583 ms, 700 ms and 2 s after it
    # (a compressed window scored within the second the release began)
    logged = LoggedPredictions(-300, 583, 700, 2_000)

    # when the promotion reads the release's predictions
    rows = release_predictions(logged, SINCE, SINCE + timedelta(seconds=5))  # type: ignore[arg-type]

    # then the query asked whole seconds, and exactly the ones after the change are kept
    assert logged.asked is not None and logged.asked[0].microsecond == 0, logged.asked
    assert rows[ID].tolist() == ["p1", "p2", "p3"], f"kept: {rows[ID].tolist()}"
