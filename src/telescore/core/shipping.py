"""When the prediction log shipper sends journaled rows to MongoDB: a pure policy.

Every row is durable in the journal before it is answered, so shipping can wait. It waits for
a fuller batch (fewer, bigger inserts cost MongoDB less per row), and while the machine has no
CPU to spare it waits for serving to ease off: on one box, the embedded MongoDB spends more
CPU per row than the server does. It never waits longer than `max_defer`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShippingPolicy:
    """How long rows may wait in the journal, and for what."""

    batch_rows: int = 1000
    """Ship as soon as this many rows wait."""
    max_delay: float = 0.25
    """Seconds a row waits for a fuller batch."""
    min_idle_cores: float = 1.0
    """Below this many idle cores the machine is busy serving: rows wait for it to ease off."""
    max_defer: float = 30.0
    """Seconds rows may wait for idle CPU before they are shipped anyway; 0 never waits."""


def ship_now(
    policy: ShippingPolicy,
    *,
    backlog: int,
    waited: float,
    idle_cores: float | None,
    stopping: bool,
) -> bool:
    """Tell whether to ship now.

    Args:
        policy: The policy.
        backlog: Rows in the journal not yet in MongoDB.
        waited: Seconds since the backlog was last empty.
        idle_cores: Idle CPU of the machine lately, in cores; None when unknown.
        stopping: The shipper is draining before it exits.
    """
    if backlog == 0:
        return False
    if stopping or waited >= policy.max_defer:
        return True
    if idle_cores is not None and idle_cores < policy.min_idle_cores:
        return False
    return backlog >= policy.batch_rows or waited >= policy.max_delay
