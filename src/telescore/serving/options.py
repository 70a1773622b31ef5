"""Options of one served model, as `parameters.extra` in its model-settings.json.

Kept apart from the runtime so that the control plane can write them without importing
MLServer.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from telescore.core.predictions import Route
from telescore.core.requests import DEFAULT_MAX_ROWS
from telescore.core.shipping import ShippingPolicy

RUNTIME: Final = "telescore.serving.runtime.TelescoreRuntime"
"""The `implementation` MLServer loads for every telescore model."""


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

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | None) -> RuntimeOptions:
        """Validate the `parameters.extra` mapping of a model's settings."""
        return cls.model_validate(dict(extra or {}))
