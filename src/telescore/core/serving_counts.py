"""Request and failure counts of every MLServer process, and what a release counts of them.

Each MLServer process counts the requests its models answer and those they fail, per model and
version, from its start (`ProcessCounts`). Its prediction log shipper stores them in MongoDB
(`serving_counters`, one document per process, replaced every second or so), so that the
promotion sees every replica's failures, not one process's share.

A release counts from its routing change: when the routing changes, the counts of every
process are stored as the release's baseline, and the release's counts are, per process, the
counts now minus those of the baseline (a process started since then counts from zero). A
failure means what MLServer's own `model_infer_request_failure_total` means: the request raised,
refused inputs (4xx) included. Requests that never reach a loaded model (an unknown model name,
a model not ready) have no version and are not counted here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ModelCounts(BaseModel):
    """One served model version's requests and failures, in one process, since it started."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    """The name MLServer serves it under (telemarketing, telemarketing-challenger)."""
    version: str
    requests: int = Field(ge=0)
    """Requests answered or failed."""
    failures: int = Field(ge=0)
    """Requests that raised: refused (4xx) or failed (5xx)."""


class ProcessCounts(BaseModel):
    """What one MLServer process counted since it started (its `serving_counters` document)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    process: str
    """The process's id: host, pid and a random part (a restarted process is a new one)."""
    host: str
    pid: int
    started_at: float
    """Seconds since the epoch."""
    counts: tuple[ModelCounts, ...] = ()


def counts_since(
    processes: Iterable[Mapping[str, Any]], baseline: Iterable[Mapping[str, Any]]
) -> dict[str, tuple[int, int]]:
    """Return (requests, failures) per served model name, over every process, since `baseline`.

    Both are `ProcessCounts` documents; a process missing from the baseline counts from zero.
    A count below its baseline (never expected: counts only grow) counts as zero.
    """
    before: dict[tuple[str, str, str], tuple[int, int]] = {}
    for document in baseline:
        for each in document.get("counts", ()):
            before[(document["process"], each["model"], each["version"])] = (
                int(each["requests"]),
                int(each["failures"]),
            )
    totals: dict[str, list[int]] = {}
    for document in processes:
        for each in document.get("counts", ()):
            requests, failures = before.get(
                (document["process"], each["model"], each["version"]), (0, 0)
            )
            total = totals.setdefault(each["model"], [0, 0])
            total[0] += max(0, int(each["requests"]) - requests)
            total[1] += max(0, int(each["failures"]) - failures)
    return {model: (requests, failures) for model, (requests, failures) in totals.items()}
