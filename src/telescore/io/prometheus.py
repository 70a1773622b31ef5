"""Prometheus and Alertmanager: the login they ask for, and the parts of their APIs telescore reads.

Both ask every request for a login (basic auth). A configured server's comes from the settings
(`TELESCORE_PROMETHEUS_AUTH_STRING`, `TELESCORE_ALERTMANAGER_AUTH_STRING`); the embedded ones
share one, generated on first use and kept, readable by its owner only, in
`<state_dir>/monitoring-auth`.

The release guards' figures (`serving_figures`) are PromQL over every MLServer replica, as
Flagger's `request-success-rate` and `request-duration` checks read a canary's: its requests,
server faults and refusals, and its p50 and p99 time per request, since the release began.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Self

import httpx

AUTH_FILE = "monitoring-auth"
"""The embedded Prometheus's and Alertmanager's `user:password`, under the state folder."""
AUTH_USER = "telescore"


class MonitoringApiError(RuntimeError):
    """Prometheus or Alertmanager did not answer, or refused the request."""


@dataclass(frozen=True)
class Login:
    """A user and password for basic auth, from a `user:password` string."""

    user: str
    password: str = field(repr=False)

    @classmethod
    def parse(cls, auth_string: str) -> Login:
        """Split `user:password` (the password may hold colons)."""
        user, _, password = auth_string.partition(":")
        return cls(user, password)


def embedded_login(state_dir: Path) -> Login:
    """Return the embedded servers' login, created (owner-only) on first use."""
    path = state_dir / AUTH_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 from the start: never readable by others, not even for an instant.
        # Another process may create it first: theirs is kept.
        with contextlib.suppress(FileExistsError):
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(f"{AUTH_USER}:{secrets.token_urlsafe(32)}")
    return Login.parse(path.read_text().strip())


class _ApiClient:
    """An HTTP client of one of the two APIs, signed in with the embedded or configured login."""

    def __init__(self, url: str, login: Login | None, timeout: float) -> None:
        auth = (login.user, login.password) if login else None
        self._http = httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


class PrometheusClient(_ApiClient):
    """Prometheus's HTTP API (v1): instant queries and the alerts of its rules."""

    def __init__(self, url: str, login: Login | None, timeout: float = 10.0) -> None:
        super().__init__(url, login, timeout)

    def query(self, expression: str, at: datetime | None = None) -> list[dict[str, Any]]:
        """Return the instant vector `expression` evaluates to at `at` (default: now).

        Items are `{metric, value}`, `value` being `[timestamp, "number"]`.
        """
        params = {"query": expression}
        if at is not None:
            params["time"] = f"{at.timestamp():.3f}"
        data = self._get("/api/v1/query", params)
        if data["resultType"] != "vector":
            raise MonitoringApiError(f"{expression!r} is a {data['resultType']}, not a vector")
        return list(data["result"])

    def alerts(self) -> list[dict[str, Any]]:
        """Return the alerts of every rule, pending or firing, with labels and annotations."""
        return list(self._get("/api/v1/alerts", {})["alerts"])

    def _get(self, path: str, params: dict[str, str]) -> Any:
        try:
            response = self._http.get(path, params=params)
        except httpx.HTTPError as error:
            raise MonitoringApiError(f"Prometheus did not answer {path}: {error}") from None
        if response.status_code != httpx.codes.OK:
            raise MonitoringApiError(
                f"Prometheus answered {path} with {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()["data"]
        except (ValueError, KeyError):
            raise MonitoringApiError(f"Prometheus answered {path} with no data") from None


class AlertmanagerClient(_ApiClient):
    """Alertmanager's HTTP API (v2): the alerts it holds."""

    def __init__(self, url: str, login: Login | None, timeout: float = 5.0) -> None:
        super().__init__(url, login, timeout)

    def firing(self) -> list[dict[str, Any]]:
        """Return the alerts firing now, neither silenced nor inhibited (labels, annotations)."""
        params = {"active": "true", "silenced": "false", "inhibited": "false"}
        try:
            response = self._http.get("/api/v2/alerts", params=params)
        except httpx.HTTPError as error:
            raise MonitoringApiError(f"Alertmanager did not answer: {error}") from None
        if response.status_code != httpx.codes.OK:
            raise MonitoringApiError(
                f"Alertmanager answered {response.status_code}: {response.text[:200]}"
            )
        return list(response.json())


# The release guards' figures.

MLSERVER_JOB: Final = "mlserver"
"""The scrape job of MLServer's metrics port, under every way to run (docs/metrics.md)."""
REQUESTS: Final = "telescore_serving_requests_total"
FAILURES: Final = "telescore_serving_failures_total"
REFUSED: Final = "telescore_serving_refused_total"
DURATION_BUCKETS: Final = "telescore_serving_request_duration_seconds_bucket"
START_LOOKBACK: Final = "1h"
"""How far before a release's start the counts it starts from are looked for (below)."""


@dataclass(frozen=True)
class ServingFigures:
    """One served model version's requests and time per request over a time range, fleet-wide."""

    requests: int
    """Requests the model accepted (answered, or failed by the server)."""
    failures: int
    """Of those, the ones the server failed (5xx)."""
    refused: int
    """Requests refused for invalid input (4xx); not among `requests`."""
    latency_p50_ms: float | None
    """The median time per accepted request (None: none was timed)."""
    latency_p99_ms: float | None


def _selector(metric: str, model: str, version: str) -> str:
    return f'{metric}{{model="{_quoted(model)}",version="{_quoted(version)}"}}'


def _quoted(value: str) -> str:
    """Escape a label value for a PromQL double-quoted string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def promql_range(seconds: float) -> str:
    """A PromQL duration of `seconds`, to the millisecond (at least 1 ms).

    Whole seconds would move a release's start up to a second back: a replica whose series was
    first scraped in that second would have no value at the start, and count from zero the
    requests it served before the release began.
    """
    return f"{max(1, math.ceil(seconds * 1000))}ms"


def growth_since_start(series: str, range_seconds: float) -> str:
    """PromQL: how much each series of the counter `series` grew over the last `range_seconds`.

    Every series of the runtime's counters belongs to one MLServer process (its `process`
    label: host, pid and a random part), so a series never resets: a restarted process is a new
    series. A series' growth is therefore exactly its last value in the range minus its value
    at the start (the last sample at or before it, looked for `START_LOOKBACK` back), and a
    series born in the range (a process started, or a version first served, since) grew from
    zero. Exact, where `increase()` extrapolates to the range's edges (fractional counts) and
    ignores the first sample of a series born in the range: every series of a new challenger
    is, and the requests before its first scrape would be lost. Series that ended in the range
    (a process stopped) keep their last value.
    """
    since = promql_range(range_seconds)
    return (
        f"(max_over_time({series}[{since}])"
        f" - last_over_time({series}[{START_LOOKBACK}] offset {since}))"
        f" or max_over_time({series}[{since}])"
    )


def serving_queries(model: str, version: str, range_seconds: float) -> dict[str, str]:
    """The PromQL of one served model version's figures over the last `range_seconds`.

    Counts are summed over every replica (`sum by (model)`), the time per request is a
    quantile of the runtime's histogram summed over every replica, as Flagger's
    `request-duration` is (its buckets bound the resolution: 0.5, 1, 2.5, 5 ms, ...).
    """
    counts = {
        name: "sum by (model) ("
        + growth_since_start(_selector(metric, model, version), range_seconds)
        + ")"
        for name, metric in (("requests", REQUESTS), ("failures", FAILURES), ("refused", REFUSED))
    }
    buckets = (
        "sum by (model, le) ("
        + growth_since_start(_selector(DURATION_BUCKETS, model, version), range_seconds)
        + ")"
    )
    return counts | {
        "latency_p50_seconds": f"histogram_quantile(0.5, {buckets})",
        "latency_p99_seconds": f"histogram_quantile(0.99, {buckets})",
    }


def scalar_of(result: list[dict[str, Any]]) -> float | None:
    """Return the one value of a query's result (None: no series, or not a number)."""
    if not result:
        return None
    if len(result) > 1:
        raise MonitoringApiError(f"expected one series, got {len(result)}")
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def scrapes_mlserver(client: PrometheusClient) -> bool:
    """Tell whether Prometheus has a target of job `mlserver` (up or down)."""
    return bool(client.query(f'up{{job="{MLSERVER_JOB}"}}'))


def serving_figures(
    client: PrometheusClient, model: str, version: str, start: datetime, end: datetime
) -> ServingFigures:
    """Return one served model version's figures from `start` to `end`, over every replica.

    Every query is evaluated at `end`, so that the figures are of one moment. Raises
    MonitoringApiError when Prometheus does not answer or refuses a query.
    """
    queries = serving_queries(model, version, (end - start).total_seconds())
    values = {name: scalar_of(client.query(query, at=end)) for name, query in queries.items()}

    def count(name: str) -> int:
        return round(values[name] or 0.0)

    def milliseconds(name: str) -> float | None:
        seconds = values[name]
        return None if seconds is None else seconds * 1000.0

    return ServingFigures(
        requests=count("requests"),
        failures=count("failures"),
        refused=count("refused"),
        latency_p50_ms=milliseconds("latency_p50_seconds"),
        latency_p99_ms=milliseconds("latency_p99_seconds"),
    )
