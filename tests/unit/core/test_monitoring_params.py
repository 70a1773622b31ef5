"""Monitoring windows and parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from telescore.core.monitoring import MonitoringParams, Window, load_monitoring_params

ROOT = Path(__file__).resolve().parents[3]


def test_the_last_complete_window_is_aligned_on_its_length() -> None:
    window = Window.last_complete(datetime(2026, 3, 1, 10, 47, 12, tzinfo=UTC), minutes=30)

    assert window.start == datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    assert window.end == datetime(2026, 3, 1, 10, 30, tzinfo=UTC), "10:30-11:00 is not over yet"


def test_a_window_keys_on_its_start_in_utc_whatever_the_zone() -> None:
    plus_two = datetime(2026, 3, 1, 12, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    window = Window(plus_two, plus_two + timedelta(hours=1))

    assert window.key == "2026-03-01T12:00:00+00:00"


def test_a_naive_or_empty_window_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Window(datetime(2026, 3, 1), datetime(2026, 3, 1, 1))
    start = datetime(2026, 3, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="not after its start"):
        Window(start, start)


def test_the_shipped_params_files_validate() -> None:
    for name in ("params.yaml", "params.replay.yaml"):
        params = load_monitoring_params(ROOT / name)
        assert params.retrain_overrides["data"]["production"]["enabled"], name
    assert MonitoringParams().drift.numerical_method == "wasserstein", "pinned, not Evidently's"
