"""The monitor's window reader: an even, bounded sample, read once, whatever the traffic."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.testdata.prospects import PROSPECT

from telescore.core.monitoring import Window
from telescore.jobs.monitoring import read_window

WINDOW = Window(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 1, tzinfo=UTC))


class LoggedWindow:
    """Stands in for the outcome store's chunked read of one window (it is a MongoDB query)."""

    def __init__(self, rows: int, shadow_every: int = 0) -> None:
        self.rows = rows
        self.shadow_every = shadow_every

    def labelled_predictions(
        self, start: datetime, end: datetime, chunk_size: int
    ) -> Iterator[list[dict[str, Any]]]:
        for first in range(0, self.rows, chunk_size):
            yield [self._row(n) for n in range(first, min(first + chunk_size, self.rows))]

    def _row(self, n: int) -> dict[str, Any]:
        shadow = self.shadow_every and n % self.shadow_every == 0
        return {
            "route": "shadow" if shadow else "champion",
            "features": PROSPECT,
            "score": n / self.rows,
            "subscribed": None if n % 3 else n % 2 == 0,
            "model_version": "7",
        }


@pytest.mark.parametrize(("rows", "max_rows"), [(50, 100), (1000, 100), (1001, 100), (4097, 64)])
def test_a_window_is_sampled_evenly_and_never_above_the_bound(rows: int, max_rows: int) -> None:
    # given a window of `rows` champion predictions, scored n / rows in call order
    logged = LoggedWindow(rows)

    # when the monitor reads it with a bound of `max_rows`
    frame, info = read_window(logged, WINDOW, max_rows)  # type: ignore[arg-type]

    # then it keeps every k-th row, in order, as few as the bound needs gone, counting them all
    step = info["sampled_every"]
    assert len(frame) <= max_rows, f"{len(frame)} rows kept, over the bound {max_rows}"
    assert info["predictions"] == rows, "every row of the window should be counted"
    expected = [n / rows for n in range(0, rows, step)]
    assert frame["score"].tolist() == expected, "the sample should be every k-th row, in order"
    assert step == 1 or len(frame) > max_rows // 2, "the stride should not thin more than needed"
    assert info["model_version"] == "7", f"the window's model version is lost: {info}"


def test_other_routes_are_left_out_of_the_champions_window() -> None:
    # given 100 predictions, every fourth one by the shadow model
    logged = LoggedWindow(100, shadow_every=4)

    # when the monitor reads the champion's window
    frame, info = read_window(logged, WINDOW, 1000)  # type: ignore[arg-type]

    # then it keeps the champion's 75 rows, yet counts all 100 predictions
    assert len(frame) == 75, "the shadow's rows are not the champion's"
    assert info["predictions"] == 100, f"every prediction should be counted: {info}"


class UnservedAmongChampion(LoggedWindow):
    """A window where every other call was made with no model serving (logged unscored)."""

    def _row(self, n: int) -> dict[str, Any]:
        if n % 2:
            return super()._row(n)
        return {
            "route": "unserved",
            "features": PROSPECT,
            "score": None,
            "subscribed": n % 4 == 0,
            "model_version": "",
        }


def test_calls_made_with_no_model_serving_are_no_evidence_of_the_champion() -> None:
    # given 100 labelled predictions, half of them logged unscored (no model served them)
    logged = UnservedAmongChampion(100)

    # when the monitor reads the champion's window
    frame, info = read_window(logged, WINDOW, 1000)  # type: ignore[arg-type]

    # then only the champion's 50 scored rows are judged, every score a number
    assert len(frame) == 50, "unserved rows must not enter the champion's AUC or calibration"
    assert frame["score"].notna().all(), "no unscored row should reach the figures"
    assert info["model_version"] == "7", f"the unserved rows have no version: {info}"
