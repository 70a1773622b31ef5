"""Request and failure counts of every MLServer process, and what a release counts of them.

Each MLServer process counts the requests its models answer, those they fail and those they
refuse, per model and version, from its start (`ProcessCounts`). Its prediction log shipper
stores them in MongoDB (`serving_counters`, one document per process, replaced every second
or so), so that the promotion sees every replica's failures, not one process's share.

A release counts from its routing change: when the routing changes, the counts of every
process are stored as the release's baseline, and the release's counts are, per process, the
counts now minus those of the baseline (a process started since then counts from zero).

What a model is answerable for is what the release judges, so that whoever can send a request
cannot push it. A failure is a server-side fault: the model or the server raised (5xx). A
request refused because the caller sent invalid input (4xx) is the caller's fault: it is
counted apart (`refused`), neither as a request nor as a failure, or a flood of bad requests
would roll an arm back (as failures) or hide its real faults (as requests). MLServer's own
`model_infer_request_failure_total` counts both. Requests that never reach a loaded model (an
unknown model name, a model not ready) have no version and are not counted here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field


class ModelCounts(BaseModel):
    """One served model version's requests and failures, in one process, since it started."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    """The name MLServer serves it under (telemarketing, telemarketing-challenger)."""
    version: str
    requests: int = Field(ge=0)
    """Requests the model accepted: answered, or failed by the server."""
    failures: int = Field(ge=0)
    """Of those, the requests that failed on the server's side (5xx)."""
    refused: int = Field(default=0, ge=0)
    """Requests refused for the caller's invalid input (4xx); not among `requests`."""


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


class ReleaseCounts(NamedTuple):
    """One served model's counts over every process since a release began."""

    requests: int = 0
    """Requests the model accepted (answered or failed)."""
    failures: int = 0
    """Of those, the ones the server failed: what the release's error rate counts."""
    refused: int = 0
    """Requests refused for invalid input: recorded, never judged."""


def counts_since(
    processes: Iterable[Mapping[str, Any]], baseline: Iterable[Mapping[str, Any]]
) -> dict[str, ReleaseCounts]:
    """Return the counts per served model name, over every process, since `baseline`.

    Both are `ProcessCounts` documents; a process missing from the baseline counts from zero.
    A count below its baseline (never expected: counts only grow) counts as zero.
    """
    before: dict[tuple[str, str, str], ReleaseCounts] = {}
    for document in baseline:
        for each in document.get("counts", ()):
            before[(document["process"], each["model"], each["version"])] = _counts(each)
    totals: dict[str, list[int]] = {}
    for document in processes:
        for each in document.get("counts", ()):
            now = _counts(each)
            then = before.get((document["process"], each["model"], each["version"]))
            total = totals.setdefault(each["model"], [0, 0, 0])
            for index, value in enumerate(now):
                total[index] += max(0, value - (then[index] if then else 0))
    return {model: ReleaseCounts(*total) for model, total in totals.items()}


def _counts(stored: Mapping[str, Any]) -> ReleaseCounts:
    # `refused` is missing from the documents of processes that did not count it apart.
    return ReleaseCounts(
        int(stored["requests"]), int(stored["failures"]), int(stored.get("refused", 0))
    )
