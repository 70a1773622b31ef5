"""The runtime's request counter: a refused request is the caller's, a failure the server's."""

from __future__ import annotations

from telescore.serving.shipping import RequestCounter


def test_refused_requests_are_neither_requests_nor_failures() -> None:
    # given a counter that saw an answer, a server failure and two refused requests
    counter = RequestCounter()
    counter.count("telemarketing-challenger", "4", "answered")
    counter.count("telemarketing-challenger", "4", "failed")
    counter.count("telemarketing-challenger", "4", "refused")
    counter.count("telemarketing-challenger", "4", "refused")
    # when its counts are taken
    (counts,) = counter.snapshot().counts
    # then only the accepted requests are requests, and only the server's fault a failure
    assert (counts.requests, counts.failures) == (2, 1), f"accepted and failed: {counts}"
    assert counts.refused == 2, f"the refused requests are counted apart: {counts}"
