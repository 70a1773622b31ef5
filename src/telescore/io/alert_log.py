"""The alert log: one JSON line per alert notified, appended by the local receiver.

`<state_dir>/alerts/alerts.jsonl`. `telescore alerts` and the app's `GET /alerts` read its
newest lines; it only grows, a line per alert per notification (Alertmanager notifies a group
again every `repeat_interval` while it fires), so a year of a few alerts a day is megabytes.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

ALERTS_DIR: Final = "alerts"
ALERTS_FILE: Final = "alerts.jsonl"
TAIL_BYTES: Final = 1 << 20
"""The newest alerts are read from the file's last MiB at most: a long log costs no more."""


def alert_log_path(state_dir: Path) -> Path:
    """Return where the local receiver appends the alerts under `state_dir`."""
    return state_dir / ALERTS_DIR / ALERTS_FILE


class AlertLog:
    """Append alert records to a JSON-lines file, and read the newest back."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, records: Iterable[dict[str, Any]]) -> int:
        """Append `records`, one line each, flushed to disk; return how many."""
        lines = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
        if not lines:
            return 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, self.path.open("a", encoding="utf-8") as file:
            file.write(lines)
            file.flush()
            os.fsync(file.fileno())
        return lines.count("\n")

    def latest(self, limit: int = 20) -> list[dict[str, Any]]:
        """Return the newest `limit` records, newest first (none if nothing was logged)."""
        try:
            with self.path.open("rb") as file:
                size = file.seek(0, os.SEEK_END)
                file.seek(max(0, size - TAIL_BYTES))
                tail = file.read()
        except FileNotFoundError:
            return []
        lines = tail.splitlines()
        if size > TAIL_BYTES:
            lines = lines[1:]  # the first line read may be the end of a longer one
        records: list[dict[str, Any]] = []
        for line in reversed(lines):
            if len(records) == limit:
                break
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-write
        return records
