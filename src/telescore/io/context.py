"""One context per entry point: the clients a job works with, opened once and closed once.

The CLI, each flow, the app's lifespan, a benchmark's stack and the test fixtures each open one
`Context` from the settings; jobs take it (or the clients it opened), never `Settings`. Clients
are created on first use, so an entry point that only needs the registry never dials MongoDB,
and all of them are closed when the context closes.
"""

from __future__ import annotations

import secrets
from contextlib import ExitStack
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Self, TypeVar

from pydantic import SecretStr

from telescore.io.mongodb import MongoStore
from telescore.io.orchestrator import PrefectApi, embedded_auth_string
from telescore.io.prometheus import Login, PrometheusClient, embedded_login
from telescore.io.registry import Registry
from telescore.io.serving_client import ServingClient
from telescore.settings import MLFLOW_WRITER, Settings, load_settings

StoreT = TypeVar("StoreT", bound=MongoStore)
CONTROL_TOKEN_FILE = "mlserver-control-token"  # noqa: S105 - a file name, not a secret
DEFAULT_SERVING_TIMEOUT = 10.0
"""Seconds a request to MLServer may take by default (`ServingClient`'s own default)."""


class Context:
    """The clients of one entry point (registry, MongoDB stores, MLServer), closed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        """What launches processes (ports, the state folder) reads; clients come from below."""
        self._stack = ExitStack()
        self._stores: dict[tuple[type[MongoStore], tuple[tuple[str, Any], ...]], MongoStore] = {}
        self._serving: dict[float, ServingClient] = {}

    @classmethod
    def from_environment(cls) -> Context:
        """Open a context on the settings of the environment and the env file."""
        return cls(load_settings())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every client this context opened."""
        self._stack.close()
        self._stores.clear()
        self._serving.clear()
        self.__dict__.pop("registry", None)
        self.__dict__.pop("prometheus", None)

    # Where things are: resolved once, the embedded defaults on `project.host` when unset.

    @property
    def host(self) -> str:
        """Address the embedded services bind to and are reached on."""
        return self.settings.project.host

    @property
    def state_dir(self) -> Path:
        """The state folder, absolute."""
        return self.settings.project.state_dir.resolve()

    @property
    def tracking_uri(self) -> str:
        """MLflow's tracking and registry URI."""
        return self.settings.mlflow.resolved_tracking_uri(self.host)

    def mlflow_credentials(
        self, embedded_user: str = MLFLOW_WRITER
    ) -> tuple[str, SecretStr] | None:
        """The user and password this entry point signs in to MLflow with (None: anonymous).

        As the configured user (required in production); else, with the embedded server, as
        `embedded_user` (the writer by default; MLServer, its reconciler and the app are given
        the reader).
        """
        return self.settings.mlflow.checked_credentials(
            self.settings.project.environment, self.state_dir, embedded_user
        )

    def mlflow_env(self, embedded_user: str = MLFLOW_WRITER) -> dict[str, str]:
        """Environment that signs a process started from here in to MLflow as that user."""
        credentials = self.mlflow_credentials(embedded_user)
        if credentials is None:
            return {}
        username, password = credentials
        return {
            "MLFLOW_TRACKING_USERNAME": username,
            "MLFLOW_TRACKING_PASSWORD": password.get_secret_value(),
            "TELESCORE_MLFLOW_USERNAME": username,
            "TELESCORE_MLFLOW_PASSWORD": password.get_secret_value(),
        }

    @property
    def prefect_api_url(self) -> str:
        """Prefect's API URL."""
        return self.settings.prefect.resolved_api_url(self.host)

    @cached_property
    def prefect_api(self) -> PrefectApi:
        """Prefect's API URL and the credentials its server asks for.

        Configured (`TELESCORE_PREFECT_AUTH_STRING`, required in production), or, for the
        embedded server, the one generated under the state folder; a configured server without
        one gets none.
        """
        prefect = self.settings.prefect
        auth = prefect.checked_auth_string(self.settings.project.environment)
        if auth is None and prefect.api_url is None:
            auth = embedded_auth_string(self.state_dir)
        return PrefectApi(self.prefect_api_url, auth)

    @property
    def mongodb_uri(self) -> str:
        """MongoDB's URI (it may hold credentials: never log it)."""
        return self.settings.mongodb.resolved_uri(self.host)

    @property
    def mongodb_database(self) -> str:
        """MongoDB's database."""
        return self.settings.mongodb.database

    @property
    def serving_url(self) -> str:
        """MLServer's REST base URL (behind a load balancer, any replica)."""
        return self.settings.serving.resolved_url(self.host)

    @property
    def prometheus_url(self) -> str:
        """Prometheus's base URL (its UI and API)."""
        return self.settings.prometheus.resolved_url(self.host)

    @property
    def alertmanager_url(self) -> str:
        """Alertmanager's base URL (its UI and API)."""
        return self.settings.alertmanager.resolved_url(self.host)

    @cached_property
    def prometheus_login(self) -> Login | None:
        """The login Prometheus asks for.

        Configured, else the embedded one (kept under the state folder); a configured server
        without one gets none.
        """
        prometheus = self.settings.prometheus
        if prometheus.auth_string is not None:
            return Login.parse(prometheus.auth_string.get_secret_value())
        return embedded_login(self.state_dir) if prometheus.url is None else None

    @cached_property
    def prometheus(self) -> PrometheusClient:
        """A client of Prometheus's API at `prometheus_url`, with its login."""
        return self._stack.enter_context(
            PrometheusClient(self.prometheus_url, self.prometheus_login)
        )

    @cached_property
    def alertmanager_login(self) -> Login | None:
        """The login Alertmanager asks for.

        Configured, else the embedded one (the embedded Prometheus's too); a configured server
        without one gets none.
        """
        alertmanager = self.settings.alertmanager
        if alertmanager.auth_string is not None:
            return Login.parse(alertmanager.auth_string.get_secret_value())
        return embedded_login(self.state_dir) if alertmanager.url is None else None

    @property
    def pending_outcome_expiry(self) -> timedelta:
        """How long an outcome reported before its prediction waits for it."""
        return self.settings.mongodb.pending_outcome_expiry

    # The clients, created on first use.

    @cached_property
    def registry(self) -> Registry:
        """The MLflow registry and tracking server."""
        return Registry.from_settings(self.settings.mlflow, self.host, self.mlflow_credentials())

    @property
    def serving(self) -> ServingClient:
        """A client of MLServer's V2 REST API at `serving_url` (requests time out after 10 s)."""
        return self.serving_client()

    @cached_property
    def serving_control_token(self) -> str:
        """The token of MLServer's repository API: configured, else a random one kept.

        In development it is kept in `<state_dir>/mlserver-control-token`, and the embedded
        MLServer and its reconciler are given it.
        """
        configured = self.settings.serving.control_token
        if configured is not None and configured.get_secret_value():
            return configured.get_secret_value()
        path = self.state_dir / CONTROL_TOKEN_FILE
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Created readable by its owner only, before the token is written into it.
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
        return path.read_text().strip()

    def serving_client(self, timeout: float = DEFAULT_SERVING_TIMEOUT) -> ServingClient:
        """Return the open client of MLServer at `serving_url` whose requests wait `timeout` s.

        One per timeout: a probe gives up after 2 s, a reload waits minutes for a model to load.
        """
        if timeout not in self._serving:
            client = ServingClient(
                self.serving_url, timeout=timeout, control_token=self.serving_control_token
            )
            self._serving[timeout] = self._stack.enter_context(client)
        return self._serving[timeout]

    def store(self, kind: type[StoreT], **timeouts: int) -> StoreT:
        """Return the open store of `kind` on the configured MongoDB (one per kind and timeouts).

        `timeouts` are the store's own keyword arguments (`timeout_ms`, `read_timeout_ms`): a
        monitor reading a million rows waits longer for an answer than a web request does.
        """
        key = (kind, tuple(sorted(timeouts.items())))
        if key not in self._stores:
            store = kind(self.mongodb_uri, self.mongodb_database, **timeouts)
            self._stores[key] = self._stack.enter_context(store)
        opened = self._stores[key]
        assert isinstance(opened, kind)  # noqa: S101 - the key's first element is its type
        return opened
