"""Options of one served model, as `parameters.extra` in its model-settings.json.

Kept apart from the runtime so that the control plane can write them without importing
MLServer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from telescore.core.predictions import Route
from telescore.core.requests import DEFAULT_MAX_ROWS
from telescore.core.shipping import ShippingPolicy

RUNTIME: Final = "telescore.serving.runtime.TelescoreRuntime"
"""The `implementation` MLServer loads for every telescore model."""
CALIBRATION_OPTIONS: Final = ("logit_offset", "logit_offset_version")
"""Options that belong to one model folder and one registry version, not to the repository."""


class RuntimeOptions(BaseModel):
    """Options of one served model; connection settings come from `telescore.settings`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    route: Route | None = None
    """Deployment slot reported with each prediction; None takes the alias (champion/...)."""
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, gt=0)
    """Largest batch one request may carry."""
    prediction_log: bool = True
    """Journal every prediction before answering, and ship it to MongoDB."""
    journal_dir: Path | None = None
    """Journal root; None is `<state_dir>/journal/predictions`. Models may share one."""
    journal_segment_bytes: int = Field(default=16 << 20, ge=4096)
    """Disk space reserved per journal segment; a full disk shows as no room for the next one."""
    fsync_interval: float = Field(default=1.0, gt=0)
    """Seconds between fsyncs of the journal: what a machine crash may lose."""
    ship_max_defer: float = Field(default=ShippingPolicy.max_defer, ge=0)
    """Seconds journaled rows may wait for idle CPU before they are shipped anyway (0: never
    wait). On one box, serving wins the CPU and shipping catches up when traffic eases."""

    logit_offset: float = 0.0
    """Added to each score's log-odds: the served score is sigmoid(logit(p) + offset), so that
    the mean score follows the recent positive rate (fitted by the monitor, see
    `CalibrationParams`). 0: the model's own scores."""
    logit_offset_version: str | None = None
    """The registry version the offset was fitted for: a model that pinned another version
    (the alias moved: a promotion) serves its own scores."""

    @model_validator(mode="after")
    def _offset_names_its_version(self) -> RuntimeOptions:
        if self.logit_offset != 0.0 and not self.logit_offset_version:
            raise ValueError(
                "logit_offset needs logit_offset_version: the version it was fitted for"
            )
        return self

    def offset_for(self, version: str) -> float:
        """Return the log-odds offset to serve with `version`: 0 if it was fitted for another."""
        return self.logit_offset if self.logit_offset_version == version else 0.0

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | None) -> RuntimeOptions:
        """Validate the `parameters.extra` mapping of a model's settings."""
        return cls.model_validate(dict(extra or {}))
