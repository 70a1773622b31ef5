"""Releases: route traffic between champion and challenger, and promote or roll back."""

from __future__ import annotations

from datetime import UTC, datetime

from telescore.core.routing import RoutingConfig
from telescore.io.release_store import ReleaseStore


def set_routing(store: ReleaseStore, config: RoutingConfig, by: str) -> RoutingConfig:
    """Store a routing as the one in force; return it with its revision."""
    stamped = config.model_copy(update={"updated_at": datetime.now(UTC), "updated_by": by})
    document = stamped.model_dump(exclude={"revision"})
    revision = store.set_routing(document)
    return stamped.model_copy(update={"revision": revision})
