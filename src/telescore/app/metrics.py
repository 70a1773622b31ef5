"""The app's Prometheus metrics, on a registry of its own, and the middleware that counts requests.

Requests are labelled by their route's template (`/outcomes/{prediction_id}`), never the path a
caller wrote, so the series stay bounded; a path no route matches is `UNMATCHED_ROUTE`. Each app
has its own registry: several apps in one process (the tests) count apart. Served at `/metrics`
(`routes/metrics.py`), behind a bearer token (`metrics_token`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from telescore.app.loop_metrics import LoopCollector
from telescore.core.loop_status import LoopStatus
from telescore.services.prometheus import metrics_token_file
from telescore.settings import Settings

UNMATCHED_ROUTE: Final = "<unmatched>"
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""From a cached page (milliseconds) to a first scoring of the call list (seconds)."""


class _CallListAge(Collector):
    """`telescore_call_list_age_seconds`, absent until this replica holds a scored list."""

    def __init__(self) -> None:
        self.scored_at: datetime | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.scored_at is None:
            return
        age = (datetime.now(UTC) - self.scored_at).total_seconds()
        yield GaugeMetricFamily(
            "telescore_call_list_age_seconds", "Age of the call list the app shows.", value=age
        )


class AppMetrics:
    """The app's counters and histograms, on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "telescore_app_requests",
            "Requests per route (its template), method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "telescore_app_request_duration_seconds",
            "Time per request, per route (its template) and method.",
            ["route", "method"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.failed_logins = Counter(
            "telescore_app_failed_logins",
            "Failed logins: wrong passwords on the page and refused API keys.",
            registry=self.registry,
        )
        self.outcomes_recorded = Counter(
            "telescore_outcomes_recorded",
            "Outcomes recorded, by where they came from.",
            ["source"],
            registry=self.registry,
        )
        # Exported from 0: a counter that appears at its first increment shows no increase.
        for source in ("call", "api"):
            self.outcomes_recorded.labels(source=source)
        self._call_list_age = _CallListAge()
        self.registry.register(self._call_list_age)
        self._loop = LoopCollector()
        self.registry.register(self._loop)

    def read_loop_with(self, read: Callable[[], LoopStatus]) -> None:
        """Export the loop's figures as `read` returns them, at each scrape."""
        self._loop.read = read

    def call_list_scored(self, scored_at: datetime | None) -> None:
        """Note when the call list this replica shows was scored (None: none yet)."""
        self._call_list_age.scored_at = scored_at

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one request answered with `status` after `seconds`."""
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.request_duration.labels(route=route, method=method).observe(seconds)


def route_template(scope: Scope, routed: Scope) -> str:
    """Return the template of the route that served a request (`routed` is its scope after)."""
    route = routed.get("route")
    if route is not None:
        return str(route.path)
    # Mounts (/static) and unmatched paths carry no route: match them as the router did.
    app: Any = scope.get("app")
    for candidate in getattr(app, "routes", ()):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(candidate.path)
    return UNMATCHED_ROUTE


class RequestMetrics:
    """ASGI middleware: counts every HTTP request and its time under its route's template."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, then count it (a 500 if the app raised before answering)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        before = dict(scope)  # the router writes the matched route into `scope`
        status = 500
        started = time.perf_counter()

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            elapsed = time.perf_counter() - started
            self.metrics.observe(route_template(before, scope), scope["method"], status, elapsed)


def metrics_token(settings: Settings) -> str:
    """Return the token `/metrics` asks for; in development, the one under the state folder.

    Raises ValueError in production when none is configured.
    """
    configured = settings.api.checked_metrics_token(settings.project.environment)
    if configured is not None:
        return configured
    return metrics_token_file(Path(settings.project.state_dir)).read_text().strip()
