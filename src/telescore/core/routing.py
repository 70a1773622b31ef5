"""Release routing: which served model's answer a prospect is shown, and who scores in the shadow.

Three modes (`RoutingConfig.mode`):

- `champion`: the champion answers everyone; the challenger is not asked.
- `canary`: a fixed `canary_weight` percent of prospects are shown the challenger's answer, the
  others the champion's. The split is sticky per prospect: a prospect's bucket is a stable hash
  of its id (sha256, `bucket`), so the same prospect sees the same model on every request, in
  every process and after every restart, and a caller does not see one prospect's score jump
  between two models from one page to the next.
- `shadow`: the champion answers everyone; the challenger scores the same rows too, and its
  answers are logged with route `shadow` and never shown. Both models' scores then exist for
  every row, which makes the comparison paired (see `core.release`).

Raising the canary weight only moves prospects from the champion to the challenger, never back:
a prospect is on the challenger when its bucket is below the weight's share of the buckets.

The assignment depends on the prospect id only, so the same prospects (the lowest buckets) are in
every release's canary; giving each release a fresh draw would need a per-release salt in the
hash, which this module deliberately does not have (a salt change would flip prospects mid-way).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

RoutingMode = Literal["champion", "canary", "shadow"]
Arm = Literal["champion", "challenger"]
"""Whose answer a prospect is shown."""

BUCKETS: Final = 10_000
"""Buckets a prospect id hashes into: a canary weight has a resolution of 0.01 point."""


class RoutingConfig(BaseModel):
    """The routing in force, as ops set it in the app (one stored revision).

    Validation: in `canary` mode the weight must be strictly between 0 and 100, and more exactly
    between 0.01 and 99.99 once rounded to the buckets' resolution of 0.01 point (a weight is
    applied as the nearest whole number of buckets). A weight of 0 is `champion` mode, and 100 is
    a promotion, which moves the registry's `champion` alias so that the registry keeps saying
    which model answers. In the other modes the weight is kept (so that going canary → shadow →
    canary restores it) but ignored; it must still lie in [0, 100].
    """

    # Lax rather than strict: the app's form sends "12.5"; the literal mode and the bounds still
    # refuse anything that is not a routing.
    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: RoutingMode = "champion"
    canary_weight: float = Field(default=0.0, ge=0.0, le=100.0, allow_inf_nan=False)
    """Percent of prospects shown the challenger in `canary` mode (fractions allowed: 12.5)."""
    revision: int | None = Field(default=None, ge=1)
    """The stored revision this routing is (1, 2, ...); None until it is stored."""
    updated_at: AwareDatetime | None = None
    """When ops set it."""
    updated_by: str | None = None
    """Who set it."""

    @model_validator(mode="after")
    def _canary_weight_strictly_inside(self) -> RoutingConfig:
        if self.mode == "canary" and not 1 <= _challenger_buckets(self) <= BUCKETS - 1:
            raise ValueError(
                "canary_weight must be between 0.01 and 99.99 in canary mode "
                f"(got {self.canary_weight:g}; 0 is champion mode, 100 is a promotion)"
            )
        return self


@dataclass(frozen=True)
class BatchRoutes:
    """How one batch of prospects is scored: row indices (into the batch, ascending) per model."""

    champion: tuple[int, ...]
    """Rows shown the champion's answer."""
    challenger: tuple[int, ...]
    """Rows shown the challenger's answer."""
    shadow: tuple[int, ...]
    """Rows the challenger also scores without being shown (every row in shadow mode)."""


def bucket(prospect_id: str) -> int:
    """Return the prospect's routing bucket in 0..9999, the same in every process.

    The first 8 bytes of sha256(id as UTF-8) modulo 10,000. Python's `hash()` would not do: it is
    salted per process, so a prospect would change model at every restart.
    """
    digest = hashlib.sha256(prospect_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def route_for(prospect_id: str, config: RoutingConfig) -> Arm:
    """Return whose answer the prospect is shown under `config`."""
    if config.mode != "canary":
        return "champion"
    # The lowest buckets go to the challenger: raising the weight only adds buckets, so it never
    # moves a prospect back to the champion.
    return "challenger" if bucket(prospect_id) < _challenger_buckets(config) else "champion"


def shadowed(config: RoutingConfig) -> bool:
    """Return whether the challenger also scores every request without being shown."""
    return config.mode == "shadow"


def split_batch(prospect_ids: Sequence[str], config: RoutingConfig) -> BatchRoutes:
    """Split a batch into the rows each model answers, and the rows scored in the shadow."""
    routes = [route_for(prospect_id, config) for prospect_id in prospect_ids]
    return BatchRoutes(
        champion=tuple(index for index, arm in enumerate(routes) if arm == "champion"),
        challenger=tuple(index for index, arm in enumerate(routes) if arm == "challenger"),
        shadow=tuple(range(len(routes))) if shadowed(config) else (),
    )


def effective(config: RoutingConfig, challenger_available: bool) -> RoutingConfig:
    """Return the routing to apply now: champion only when no challenger is served.

    The stored config is kept as it is (weight, revision, who set it): the canary or shadow
    resumes by itself once a challenger is served again.
    """
    if challenger_available or config.mode == "champion":
        return config
    return config.model_copy(update={"mode": "champion"})


def _challenger_buckets(config: RoutingConfig) -> int:
    # Rounded to whole buckets: 0.07 * 100 is 7.000000000000001 in floating point, which a plain
    # comparison would turn into 8 buckets. Rounding is monotone, so stickiness holds.
    return round(config.canary_weight * (BUCKETS / 100))
