"""When the shipper ships: fuller batches, idle CPU, and never later than max_defer."""

from __future__ import annotations

import pytest

from telescore.core.shipping import ShippingPolicy, ship_now

POLICY = ShippingPolicy(batch_rows=100, max_delay=0.25, min_idle_cores=0.5, max_defer=30.0)


def _ship(
    backlog: int = 10, waited: float = 0.0, idle: float | None = 1.5, stopping: bool = False
) -> bool:
    return ship_now(POLICY, backlog=backlog, waited=waited, idle_cores=idle, stopping=stopping)


def test_nothing_to_ship_never_ships() -> None:
    assert not _ship(backlog=0, waited=100.0, stopping=True), "an empty journal has nothing"


@pytest.mark.parametrize(
    ("backlog", "waited", "expected"),
    [(10, 0.0, False), (10, 0.25, True), (100, 0.0, True), (99, 0.24, False)],
    ids=["small and fresh", "waited max_delay", "a full batch", "just under both"],
)
def test_an_idle_machine_ships_full_batches_or_rows_that_waited_max_delay(
    backlog: int, waited: float, expected: bool
) -> None:
    assert _ship(backlog=backlog, waited=waited) is expected


def test_a_busy_machine_keeps_rows_waiting_even_a_full_batch() -> None:
    assert not _ship(backlog=5000, waited=5.0, idle=0.2), "serving wins the CPU"


def test_rows_never_wait_longer_than_max_defer() -> None:
    assert _ship(backlog=1, waited=30.0, idle=0.0), "max_defer bounds the wait"


def test_a_draining_shipper_ships_whatever_the_machine_does() -> None:
    assert _ship(backlog=1, waited=0.0, idle=0.0, stopping=True), "draining ships at once"


def test_an_unknown_load_does_not_hold_rows_back() -> None:
    assert _ship(backlog=1, waited=0.3, idle=None), "no /proc/stat: ship as on an idle machine"


def test_max_defer_of_zero_never_waits_for_the_machine() -> None:
    policy = ShippingPolicy(max_defer=0.0)

    assert ship_now(policy, backlog=1, waited=0.0, idle_cores=0.0, stopping=False)
