"""Prometheus and Alertmanager: the login they ask for, and the parts of their APIs telescore reads.

Both ask every request for a login (basic auth). A configured server's comes from the settings
(`TELESCORE_PROMETHEUS_AUTH_STRING`, `TELESCORE_ALERTMANAGER_AUTH_STRING`); the embedded ones
share one, generated on first use and kept, readable by its owner only, in
`<state_dir>/monitoring-auth`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

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


class PrometheusClient:
    """Prometheus's HTTP API (v1): instant queries and the alerts of its rules."""

    def __init__(self, url: str, login: Login | None, timeout: float = 10.0) -> None:
        auth = (login.user, login.password) if login else None
        self._http = httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

    def query(self, expression: str) -> list[dict[str, Any]]:
        """Return the instant vector `expression` evaluates to now: `{metric, value}` items."""
        data = self._get("/api/v1/query", {"query": expression})
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
        body = response.json()
        return body["data"]


class AlertmanagerClient:
    """Alertmanager's HTTP API (v2): the alerts it holds."""

    def __init__(self, url: str, login: Login | None, timeout: float = 5.0) -> None:
        auth = (login.user, login.password) if login else None
        self._http = httpx.Client(base_url=url.rstrip("/"), auth=auth, timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()

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
