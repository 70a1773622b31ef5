"""A release's request and failure counts, summed over every MLServer process."""

from __future__ import annotations

from typing import Any

from telescore.core.serving_counts import counts_since


def _process(name: str, *counts: tuple[str, str, int, int]) -> dict[str, Any]:
    return {
        "process": name,
        "counts": [
            {"model": model, "version": version, "requests": requests, "failures": failures}
            for model, version, requests, failures in counts
        ],
    }


def test_counts_are_summed_over_processes_from_their_baseline() -> None:
    # given two processes counted when the release began, and one started since
    baseline = [
        _process("a", ("telemarketing", "3", 100, 2)),
        _process("b", ("telemarketing", "3", 50, 1), ("telemarketing-challenger", "4", 5, 0)),
    ]
    now = [
        _process("a", ("telemarketing", "3", 130, 5)),
        _process("b", ("telemarketing", "3", 60, 1), ("telemarketing-challenger", "4", 25, 4)),
        _process("c", ("telemarketing-challenger", "4", 10, 3)),
    ]
    # when the release's counts are taken
    counts = counts_since(now, baseline)
    # then each process counts from its baseline (the new one from zero), summed per model
    assert counts["telemarketing"] == (40, 3, 0), counts
    assert counts["telemarketing-challenger"] == (30, 7, 0), "the new process should count in full"


def test_without_a_baseline_everything_counts() -> None:
    counts = counts_since([_process("a", ("telemarketing", "3", 7, 2))], [])
    assert counts == {"telemarketing": (7, 2, 0)}, counts


def test_refused_requests_are_counted_apart_from_requests_and_failures() -> None:
    # given a process that refused 500 invalid requests since the release began
    baseline = [_process("a", ("telemarketing-challenger", "4", 10, 1))]
    baseline[0]["counts"][0]["refused"] = 3
    now = [_process("a", ("telemarketing-challenger", "4", 30, 1))]
    now[0]["counts"][0]["refused"] = 503
    # when the release's counts are taken
    counts = counts_since(now, baseline)["telemarketing-challenger"]
    # then the refusals are neither requests nor failures of the arm
    assert (counts.requests, counts.failures) == (20, 0), f"refusals must not count: {counts}"
    assert counts.refused == 500, f"refusals are recorded apart: {counts}"


def test_a_document_without_refusals_counts_none() -> None:
    # given a process's document from before refusals were counted apart
    counts = counts_since([_process("a", ("telemarketing", "3", 7, 2))], [])
    # then it counts no refusal
    assert counts["telemarketing"].refused == 0, counts
