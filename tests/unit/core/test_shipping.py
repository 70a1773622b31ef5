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
    # given an empty journal, even one waited on long, while the shipper drains
    # when the shipper asks / then it does not ship
    assert not _ship(backlog=0, waited=100.0, stopping=True), "an empty journal has nothing"


@pytest.mark.parametrize(
    ("backlog", "waited", "expected"),
    [(10, 0.0, False), (10, 0.25, True), (100, 0.0, True), (99, 0.24, False)],
    ids=["small and fresh", "waited max_delay", "a full batch", "just under both"],
)
def test_an_idle_machine_ships_full_batches_or_rows_that_waited_max_delay(
    backlog: int, waited: float, expected: bool
) -> None:
    # given an idle machine, `backlog` rows that waited `waited` seconds
    # when the shipper asks
    shipped = _ship(backlog=backlog, waited=waited)

    # then it ships a batch of 100 rows or rows that waited 0.25 s, and holds anything less
    assert shipped is expected, f"{backlog} rows after {waited} s: ship should be {expected}"


def test_a_busy_machine_keeps_rows_waiting_even_a_full_batch() -> None:
    # given a machine with 0.2 idle cores, under the policy's 0.5, and a large backlog
    # when the shipper asks / then the rows wait
    assert not _ship(backlog=5000, waited=5.0, idle=0.2), "serving wins the CPU"


def test_rows_never_wait_longer_than_max_defer() -> None:
    # given a machine with no idle core, and a row that waited max_defer
    # when the shipper asks / then it ships anyway
    assert _ship(backlog=1, waited=30.0, idle=0.0), "max_defer bounds the wait"


def test_a_draining_shipper_ships_whatever_the_machine_does() -> None:
    # given a busy machine and a fresh row, while the shipper drains
    # when the shipper asks / then it ships at once
    assert _ship(backlog=1, waited=0.0, idle=0.0, stopping=True), "draining ships at once"


def test_an_unknown_load_does_not_hold_rows_back() -> None:
    # given a row that waited past max_delay, and no reading of the machine's load
    # when the shipper asks / then it ships as on an idle machine
    assert _ship(backlog=1, waited=0.3, idle=None), "no /proc/stat: ship as on an idle machine"


def test_max_defer_of_zero_never_waits_for_the_machine() -> None:
    # given a policy with max_defer 0, a busy machine and a fresh row
    policy = ShippingPolicy(max_defer=0.0)

    # when the shipper asks
    shipped = ship_now(policy, backlog=1, waited=0.0, idle_cores=0.0, stopping=False)

    # then it ships at once
    assert shipped, "max_defer 0 means rows never wait for idle CPU"
