"""Monitoring parameters and windows: which logged predictions one monitor run looks at."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import Field

from telescore.core.models import FrozenModel
from telescore.core.retraining import RetrainingPolicy


class DriftParams(FrozenModel):
    """How drift is measured: methods pinned, not left to Evidently's choice by sample size.

    Distances (wasserstein, jensenshannon, psi, hellinger) grow with the shift and do not
    depend on the window's size; p-value tests (ks, chisquare) flag negligible shifts on large
    windows, and their score reads the other way: drift when it falls below the threshold.
    """

    numerical_method: Literal["wasserstein", "ks", "psi", "jensenshannon", "hellinger"] = (
        "wasserstein"
    )
    """Drift score of numeric inputs and of the score (Wasserstein distance over reference std)."""
    categorical_method: Literal["jensenshannon", "chisquare", "psi", "hellinger"] = "jensenshannon"
    """Drift score of categorical inputs."""
    numerical_threshold: float = Field(default=0.1, gt=0)
    """A numeric column drifted when its distance reaches this (a p-value: falls below it)."""
    categorical_threshold: float = Field(default=0.1, gt=0)
    """The same for categorical columns (0.1 is Evidently's default for both distances)."""
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """Dataset drift when at least this share of the 19 inputs drifted."""


class MonitoringParams(FrozenModel):
    """The `monitoring` section of params.yaml."""

    window_minutes: int = Field(default=60, gt=0)
    """Length of a monitoring window; the scheduled run looks at the last complete one."""
    lookback_windows: int = Field(default=24, ge=0)
    """Older windows whose quality is recomputed when their outcomes arrive late."""
    max_rows: int = Field(default=200_000, gt=0)
    """Predictions of one window read at most; above, an even sample (see the benchmark)."""
    reference_rows: int = Field(default=20_000, gt=0)
    """The champion's training rows compared against, at most (the most recent ones)."""
    drift: DriftParams = DriftParams()
    policy: RetrainingPolicy = RetrainingPolicy()
    retrain_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"data": {"production": {"enabled": True}}}
    )
    """Training params overrides for a retraining run (per params.yaml section)."""


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end) of logged predictions, in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        for moment in (self.start, self.end):
            # Naive and aware times do not order together: a naive one would break the series.
            if moment.tzinfo is None or moment.utcoffset() is None:
                raise ValueError("window bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"window end {self.end} is not after its start {self.start}")

    @property
    def key(self) -> str:
        """Return the window's id: its start in UTC, ISO 8601."""
        return self.start.astimezone(UTC).isoformat()

    @classmethod
    def last_complete(cls, now: datetime, minutes: int) -> Window:
        """Return the last `minutes`-long window ending by `now`, aligned on multiples of it."""
        length = timedelta(minutes=minutes)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        end = epoch + ((now.astimezone(UTC) - epoch) // length) * length
        return cls(end - length, end)
