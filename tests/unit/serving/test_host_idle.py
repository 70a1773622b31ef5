"""The shipper's reading of the machine's idle CPU, from a /proc/stat-shaped file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from telescore.serving.shipper import HostIdle

TICKS = os.sysconf("SC_CLK_TCK")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, idle_seconds: float, iowait_seconds: float = 0.0) -> None:
    idle, iowait = round(idle_seconds * TICKS), round(iowait_seconds * TICKS)
    path.write_text(f"cpu  500 0 300 {idle} {iowait} 0 0 0 0 0\ncpu0 250 0 150 0 0 0 0 0 0 0\n")


def test_idle_cores_are_idle_seconds_per_second(tmp_path: Path) -> None:
    # given a machine whose CPUs were idle 1.5 s (1 s idle, 0.5 s waiting on I/O) in 1 s
    stat, clock = tmp_path / "stat", Clock()
    _write(stat, idle_seconds=10.0)
    host = HostIdle(stat, clock=clock)
    _write(stat, idle_seconds=11.0, iowait_seconds=0.5)
    clock.now += 1.0

    # when read / then it reports 1.5 idle cores
    assert host.idle_cores() == pytest.approx(1.5), "idle and iowait both count as idle"
    # and the next reading covers only the time since this one
    _write(stat, idle_seconds=11.2, iowait_seconds=0.5)
    clock.now += 2.0
    assert host.idle_cores() == pytest.approx(0.1), "0.2 idle seconds in 2 s"


def test_without_proc_stat_the_load_is_unknown(tmp_path: Path) -> None:
    assert HostIdle(tmp_path / "missing").idle_cores() is None, "unknown, not busy"
