"""Connection settings, read only from the environment (prefix TELESCORE_), one class per system.

Every setting has an embedded default so that a fresh clone runs with no configuration: the
services are then started locally by `telescore up` under the state folder.

Values come from the environment, then from an env file: `TELESCORE_ENV_FILE` if set, else
`.env` in the working directory. Every process telescore starts (MLServer, the Prefect worker)
is given the CLI's env file as `TELESCORE_ENV_FILE`, so that all of them read one configuration
whatever folder they run in.

The project root (flows, params, the versioned data) is found from the package: the checkout
that holds it. `TELESCORE_PROJECT_ROOT`, set in the environment, overrides it; `telescore up`
sets it for the processes it starts, and the image sets it to `/app`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "changethis", "secret", "password"})
PLACEHOLDER_PATTERN: Final = re.compile(r"change[-_]?(me|this)|^<.*>$|^x+$", re.IGNORECASE)
"""Also placeholders: anything saying `changeme`, `<password>`-style blanks, `xxxx`."""
MIN_SECRET_LENGTH: Final = 32
"""Keys that sign or encrypt (the session key): random, at least this long."""
MIN_PASSWORD_LENGTH: Final = 16
"""Passwords of the services telescore logs in to (in URIs): at least this long."""
ENV_FILE_VARIABLE: Final = "TELESCORE_ENV_FILE"
DEFAULT_ENV_FILE: Final = ".env"
PROJECT_ROOT_VARIABLE: Final = "TELESCORE_PROJECT_ROOT"
PROJECT_MARKER: Final = "params.yaml"
"""The file that marks the project root: every run reads its params from there."""
MLFLOW_WRITER: Final = "telescore-writer"
"""The embedded MLflow's user for the flows that write (training, monitor, promotion, the CLI)."""
MLFLOW_READER: Final = "telescore-reader"
"""The embedded MLflow's user for what only reads (MLServer, its reconciler, the app)."""
MLFLOW_ADMIN: Final = "admin"
"""The embedded MLflow's administrator: a person at the MLflow UI, never a service."""
MLFLOW_USERNAME_VARIABLES: Final = "TELESCORE_MLFLOW_USERNAME (or MLFLOW_TRACKING_USERNAME)"
MLFLOW_PASSWORD_VARIABLES: Final = "TELESCORE_MLFLOW_PASSWORD (or MLFLOW_TRACKING_PASSWORD)"  # noqa: S105 - names, not a value
"""How a refusal names MLflow's credentials: compose and k8s set MLflow's own variables."""
PrometheusDuration = Annotated[str, Field(pattern=r"^([0-9]+(ms|s|m|h|d|w|y))+$")]
"""A duration as Prometheus and Alertmanager write it: `15s`, `1m30s`, `4h`."""


def _config(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(
        env_prefix=prefix, env_file=".env", extra="ignore", frozen=True, validate_default=True
    )


class ProjectSettings(BaseSettings):
    """Where telescore keeps its local state and which environment it runs in."""

    model_config = _config("TELESCORE_")

    environment: Literal["development", "production"] = "development"
    """`production` refuses placeholder secrets and embedded defaults for MongoDB."""
    state_dir: Path = Path(".telescore")
    """Folder for the embedded services' data, logs, pid files and spools."""
    host: str = "127.0.0.1"
    """Address the embedded services bind to and are reached on."""


class MlflowSettings(BaseSettings):
    """MLflow tracking server and model registry."""

    # By name too: `MlflowSettings(tracking_uri=...)` in code, the aliases in the environment.
    model_config = _config("TELESCORE_MLFLOW_") | SettingsConfigDict(populate_by_name=True)

    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TELESCORE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    """Tracking server URI (MLflow's own variable works too); unset means the embedded server."""
    port: int = 5000
    """Port of the embedded MLflow server."""
    experiment: str = "telemarketing"
    """Experiment that training runs are logged to."""
    model_name: str = "telemarketing"
    """Registered model name."""
    username: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TELESCORE_MLFLOW_USERNAME", "MLFLOW_TRACKING_USERNAME"),
    )
    """MLflow user this process signs in as (MLflow's own variable works too). In production,
    whatever talks to MLflow needs it; a process that never does (the Evidently UI) is given
    none. Unset with the embedded server: the user `telescore up` created for this process
    (the writer for the CLI and the flows, the reader for MLServer and the app)."""
    password: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("TELESCORE_MLFLOW_PASSWORD", "MLFLOW_TRACKING_PASSWORD"),
    )
    """That user's password; checked in production when set (16+ random characters). Unset
    with the embedded server: read from `<state_dir>/mlflow/credentials/<user>`."""

    def resolved_tracking_uri(self, host: str = "127.0.0.1") -> str:
        """Return the configured URI, or the embedded server's."""
        return self.tracking_uri or f"http://{host}:{self.port}"

    def credentials(
        self, state_dir: Path, embedded_user: str = MLFLOW_WRITER
    ) -> tuple[str, SecretStr] | None:
        """Return the user and password to sign in with, or None when there are none.

        The configured ones; else, with the embedded server, `embedded_user`'s (the writer
        by default), kept under the state folder once `telescore up` created it.
        """
        if self.username and self.password:
            return self.username, self.password
        if self.tracking_uri is None:
            path = mlflow_password_file(state_dir, embedded_user)
            if path.is_file():
                return embedded_user, SecretStr(path.read_text().strip())
        return None

    def checked_credentials(
        self, environment: str, state_dir: Path, embedded_user: str = MLFLOW_WRITER
    ) -> tuple[str, SecretStr] | None:
        """Return `credentials`; in production, refuse to talk to MLflow without any."""
        credentials = self.credentials(state_dir, embedded_user)
        if credentials is None and environment == "production":
            raise ValueError(
                f"{MLFLOW_USERNAME_VARIABLES} and {MLFLOW_PASSWORD_VARIABLES} must be set in "
                f"production to talk to MLflow: the password {MIN_PASSWORD_LENGTH}+ random "
                "characters"
            )
        return credentials


class PrefectSettings(BaseSettings):
    """Prefect server, work pool and worker."""

    model_config = _config("TELESCORE_PREFECT_")

    api_url: str | None = None
    """Prefect API URL; unset means the embedded server on `port`."""
    port: int = 4200
    """Port of the embedded Prefect server."""
    work_pool: str = "telescore-process"
    """Process work pool the training deployment runs on."""
    auth_string: SecretStr | None = None
    """The Prefect API's credentials, `user:password`: what the server is given as
    `PREFECT_SERVER_API_AUTH_STRING`, and clients send (as Prefect's `PREFECT_API_AUTH_STRING`
    to the processes they start). In production, whatever talks to Prefect needs it (a
    password of 32+ characters); the app and MLServer never do. Unset in development: the
    embedded server's is generated and kept in `<state_dir>/prefect-auth`; a configured
    `api_url` gets none."""

    def checked_auth_string(self, environment: str) -> str | None:
        """Return the auth string to send; in production, refuse a missing one."""
        if self.auth_string is None and environment == "production":
            raise ValueError(
                "TELESCORE_PREFECT_AUTH_STRING must be set in production to talk to Prefect: "
                f"`user:password`, the password {MIN_SECRET_LENGTH}+ random characters"
            )
        return self.auth_string.get_secret_value() if self.auth_string else None

    def resolved_api_url(self, host: str = "127.0.0.1") -> str:
        """Return the configured API URL, or the embedded server's."""
        return self.api_url or f"http://{host}:{self.port}/api"


class MongoSettings(BaseSettings):
    """MongoDB that holds prediction logs and outcomes."""

    model_config = _config("TELESCORE_MONGODB_")

    uri: SecretStr | None = None
    """MongoDB URI (may hold credentials); unset means the embedded nx-27017 server on `port`."""
    port: int = 27017
    """Port of the embedded MongoDB-compatible server."""
    database: str = "telescore"
    """Database name."""
    pending_outcome_hours: float = Field(default=24.0, gt=0)
    """How long an outcome reported before its prediction is logged waits for it, from the
    time the prediction id was issued; then it is kept aside in `outcomes_expired`, and an
    outcome for an older id that is not logged is refused at once as expired. Keep it longer
    than any shipping delay, MongoDB outages included (rows wait in the journal meanwhile)."""

    @property
    def pending_outcome_expiry(self) -> timedelta:
        """`pending_outcome_hours` as a duration."""
        return timedelta(hours=self.pending_outcome_hours)

    def resolved_uri(self, host: str = "127.0.0.1") -> str:
        """Return the configured URI, or the embedded server's."""
        return self.uri.get_secret_value() if self.uri else f"mongodb://{host}:{self.port}"


class ServingSettings(BaseSettings):
    """MLServer serving the champion and challenger."""

    model_config = _config("TELESCORE_SERVING_")

    http_port: int = 8080
    """V2 REST port."""
    grpc_port: int = 8081
    """V2 gRPC port."""
    metrics_port: int = 8082
    """Prometheus metrics port."""
    url: str | None = None
    """Base URL of the V2 REST endpoint; unset means the embedded MLServer on `http_port`."""
    prediction_log: bool = True
    """Log every prediction to MongoDB (spooled locally while MongoDB is down)."""
    reconcile_interval: float = Field(default=2.0, gt=0, le=10)
    """Seconds between two looks of an MLServer's reconciler at the registry's aliases and
    offsets: a release reaches every replica within this plus one model load (well within 15 s).
    Each look costs two registry reads per replica."""
    reload_on_release: bool = True
    """After a promotion, rollback or recalibration, also reload the MLServer at `url` at once
    (when no local reconciler runs to be woken instead). Turn off where replicas sit behind a
    load balancer, each with its reconciler (compose, Kubernetes): a reload through the Service
    reaches one replica only, and would race that replica's own reconciler."""

    control_token: SecretStr | None = None
    """Bearer token MLServer's model repository API (index, load, unload) requires: only the
    control plane (each reconciler, `telescore serve`, a release's reload) holds it. MLServer
    refuses to start without one. Unset in development: a random token kept in
    `<state_dir>/mlserver-control-token`, given to the embedded MLServer it starts."""
    max_body_bytes: int = Field(default=4 << 20, gt=0)
    """MLServer refuses larger request bodies (413) before reading them; a batch of the most
    rows a served model takes (1000) is well under 1 MiB."""

    def resolved_url(self, host: str = "127.0.0.1") -> str:
        """Return the configured REST base URL, or the embedded server's."""
        return self.url or f"http://{host}:{self.http_port}"


class ApiSettings(BaseSettings):
    """The telemarketing web app: its pages, its JSON API and the outcomes API."""

    model_config = _config("TELESCORE_API_")

    port: int = 8000
    """Port the app listens on."""
    secret_key: SecretStr | None = None
    """Signs session cookies and CSRF tokens; the web app requires it in production (32+
    characters), and is the only process given it.

    Unset in development: a random key kept in `<state_dir>/app-secret` (sessions survive a
    restart of the app)."""
    metrics_token: SecretStr | None = None
    """Bearer token Prometheus sends to scrape the app's `/metrics` (32+ characters); the web
    app requires it in production, and the scraper is given the same one.

    Unset in development: a random token kept in `<state_dir>/metrics-token`, which the
    embedded Prometheus reads."""
    session_hours: float = Field(default=12.0, gt=0)
    """How long a caller stays logged in."""
    batch_rows: int = Field(default=1000, gt=0)
    """Rows per MLServer request (at most the served models' `max_rows`)."""
    max_body_bytes: int = Field(default=1 << 20, gt=0)
    """Larger request bodies are refused (413) before they are read."""
    login_window_minutes: float = Field(default=15.0, gt=0)
    """Failed logins are counted over this sliding window (per user name and per address)."""
    login_failures_per_user: int = Field(default=5, gt=0)
    """Failed logins a user name may have in the window; more tries are refused (429)."""
    login_failures_per_address: int = Field(default=20, gt=0)
    """Failed logins a client address may have in the window; more tries are refused (429)."""
    max_parallel_password_checks: int = Field(default=4, gt=0)
    """Passwords checked at once by one app process (argon2id takes ~64 MiB each)."""

    def checked_secret_key(self, environment: str) -> str | None:
        """Return the session key to sign with; in production, refuse a missing one."""
        if self.secret_key is None and environment == "production":
            raise ValueError(
                "TELESCORE_API_SECRET_KEY must be set in production for the web app: "
                f"{MIN_SECRET_LENGTH}+ random characters"
            )
        return self.secret_key.get_secret_value() if self.secret_key else None

    def checked_metrics_token(self, environment: str) -> str | None:
        """Return the token `/metrics` asks for; in production, refuse a missing one."""
        if self.metrics_token is None and environment == "production":
            raise ValueError(
                "TELESCORE_API_METRICS_TOKEN must be set in production for the web app's "
                f"/metrics: {MIN_SECRET_LENGTH}+ random characters"
            )
        return self.metrics_token.get_secret_value() if self.metrics_token else None


class EvidentlySettings(BaseSettings):
    """The Evidently UI over the monitoring workspace (`<state_dir>/evidently`)."""

    model_config = _config("TELESCORE_EVIDENTLY_")

    port: int = 8001
    """Port of the embedded Evidently UI."""


class PrometheusSettings(BaseSettings):
    """Prometheus: scrapes MLServer and the web app, and evaluates the alert rules."""

    model_config = _config("TELESCORE_PROMETHEUS_")

    url: str | None = None
    """Base URL of Prometheus (its UI and API); unset means the embedded server on `port`."""
    port: int = 9090
    """Port of the embedded Prometheus, on the loopback address (`project.host`)."""
    auth_string: SecretStr | None = None
    """`user:password` Prometheus's UI and API ask for (basic auth; its web config keeps only
    a bcrypt hash). Unset in development: the embedded Prometheus and Alertmanager share one
    login, generated in `<state_dir>/monitoring-auth` and printed by `telescore up`."""
    scrape_interval: PrometheusDuration = "15s"
    """How often the embedded Prometheus scrapes each target."""
    evaluation_interval: PrometheusDuration = "15s"
    """How often it evaluates the alert rules (`prometheus/telescore.rules.yml`)."""
    retention: PrometheusDuration = "15d"
    """How long it keeps samples (`<state_dir>/prometheus/data`)."""

    def resolved_url(self, host: str = "127.0.0.1") -> str:
        """Return the configured base URL, or the embedded server's."""
        return self.url or f"http://{host}:{self.port}"


class AlertmanagerSettings(BaseSettings):
    """Alertmanager: groups the alerts Prometheus fires and notifies people."""

    model_config = _config("TELESCORE_ALERTMANAGER_")

    url: str | None = None
    """Base URL of Alertmanager (its UI and API); unset means the embedded one on `port`."""
    port: int = 9093
    """Port of the embedded Alertmanager, on the loopback address (`project.host`)."""
    auth_string: SecretStr | None = None
    """`user:password` Alertmanager's UI and API ask for (basic auth). Unset in development:
    the login shared with the embedded Prometheus (`<state_dir>/monitoring-auth`)."""
    receiver_port: int = 9095
    """Port of the local alert receiver the embedded Alertmanager notifies (a webhook with a
    bearer token, `<state_dir>/alertmanager/receiver-token`): it appends each alert to
    `<state_dir>/alerts/alerts.jsonl`, which `telescore alerts` and the app's `GET /alerts`
    show."""
    group_wait: PrometheusDuration = "30s"
    """How long the embedded Alertmanager waits for more alerts of a group before notifying."""
    group_interval: PrometheusDuration = "5m"
    """How long it waits before notifying of a change in a group it already notified of."""
    repeat_interval: PrometheusDuration = "4h"
    """How often it notifies again of an alert that is still firing."""

    def resolved_url(self, host: str = "127.0.0.1") -> str:
        """Return the configured base URL, or the embedded server's."""
        return self.url or f"http://{host}:{self.port}"


class Settings(BaseSettings):
    """All settings together, checked as a whole."""

    model_config = _config("TELESCORE_")

    project: ProjectSettings = Field(default_factory=ProjectSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    prefect: PrefectSettings = Field(default_factory=PrefectSettings)
    mongodb: MongoSettings = Field(default_factory=MongoSettings)
    serving: ServingSettings = Field(default_factory=ServingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    evidently: EvidentlySettings = Field(default_factory=EvidentlySettings)
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    alertmanager: AlertmanagerSettings = Field(default_factory=AlertmanagerSettings)

    def production_secrets(self) -> list[ProductionSecret]:
        """Every secret these settings hold: production refuses each one weak or missing."""
        # A secret field added to any settings class belongs in this list.
        # Checked when set, each given only to the processes that use it: the session key to
        # the web app (`ApiSettings.checked_secret_key` refuses it missing there) and the metrics
        # token to it (and to the scraper, which is configured apart), the control
        # token to MLServer and what loads models into it.
        given = [
            ("TELESCORE_API_SECRET_KEY", self.api.secret_key),
            ("TELESCORE_API_METRICS_TOKEN", self.api.metrics_token),
            ("TELESCORE_SERVING_CONTROL_TOKEN", self.serving.control_token),
        ]
        secrets = [ProductionSecret("TELESCORE_MONGODB_URI", self.mongodb.uri, in_uri=True)] + [
            ProductionSecret(variable, value, min_length=MIN_SECRET_LENGTH)
            for variable, value in given
            if value is not None
        ]
        # Checked when set: only what talks to MLflow is given a user (`checked_credentials`);
        # a user without its password is refused too.
        if self.mlflow.username is not None or self.mlflow.password is not None:
            secrets.append(ProductionSecret(MLFLOW_PASSWORD_VARIABLES, self.mlflow.password))
        return secrets

    @model_validator(mode="after")
    def _refuse_placeholders_in_production(self) -> Settings:
        if self.project.environment != "production":
            return self
        if self.mongodb.uri is None:
            raise ValueError("TELESCORE_MONGODB_URI must be set in production")
        refuse_weak_secrets(self.production_secrets())
        if self.mlflow.password is not None and not self.mlflow.username:
            raise ValueError(f"{MLFLOW_PASSWORD_VARIABLES} is set, {MLFLOW_USERNAME_VARIABLES} not")
        # Checked when set: only what talks to Prefect is given it (`checked_auth_string`),
        # and only what reads Prometheus or Alertmanager is given theirs.
        for variable, auth_string in (
            ("TELESCORE_PREFECT_AUTH_STRING", self.prefect.auth_string),
            ("TELESCORE_PROMETHEUS_AUTH_STRING", self.prometheus.auth_string),
            ("TELESCORE_ALERTMANAGER_AUTH_STRING", self.alertmanager.auth_string),
        ):
            if auth_string is None:
                continue
            user, _, password = auth_string.get_secret_value().partition(":")
            if (
                not user
                or password.lower() in PLACEHOLDER_SECRETS
                or len(password) < MIN_SECRET_LENGTH
            ):
                raise ValueError(
                    f"{variable} in production: `user:password`, the password "
                    f"{MIN_SECRET_LENGTH}+ random characters, not a placeholder"
                )
        return self


@dataclass(frozen=True)
class ProductionSecret:
    """A secret production refuses when missing, short or a placeholder."""

    variable: str
    """The environment variable that sets it, named in the refusal."""
    value: SecretStr | None
    min_length: int = MIN_PASSWORD_LENGTH
    in_uri: bool = False
    """The secret is the password of a URI (`scheme://user:password@host`)."""

    def problem(self) -> str | None:
        """Say why the secret is refused, or None if it is not."""
        value = self.value.get_secret_value() if self.value is not None else ""
        what = "password" if self.in_uri else "value"
        if self.in_uri:
            credentials = value.split("://", 1)[-1].split("/", 1)[0]
            userinfo, at, _ = credentials.rpartition("@")
            value = userinfo.partition(":")[2] if at else ""
        if value.lower() in PLACEHOLDER_SECRETS or PLACEHOLDER_PATTERN.search(value):
            kind = "no" if not value else "a placeholder"
            return f"{self.variable} holds {kind} {what} in production"
        if len(value) < self.min_length:
            return (
                f"{self.variable} holds a short {what} in production: "
                f"{self.min_length}+ random characters"
            )
        return None


def refuse_weak_secrets(secrets: Iterable[ProductionSecret]) -> None:
    """Raise ValueError naming every secret that is missing, short or a placeholder."""
    problems = [problem for secret in secrets if (problem := secret.problem())]
    if problems:
        raise ValueError("; ".join(problems))


def mlflow_password_file(state_dir: Path, username: str) -> Path:
    """Return where the embedded MLflow keeps `username`'s password (the file may not exist)."""
    return state_dir.resolve() / "mlflow" / "credentials" / username


def env_file() -> Path:
    """Return the env file settings are read from, as an absolute path (it may not exist)."""
    return Path(os.environ.get(ENV_FILE_VARIABLE) or DEFAULT_ENV_FILE).resolve()


def project_root() -> Path:
    """Return the project root: `TELESCORE_PROJECT_ROOT`, else the folder holding the package.

    The package sits in the checkout (`src/telescore`, an editable install) or in a virtual
    environment inside it (`/app/.venv/...` in the image): the nearest folder above it that
    holds `params.yaml` is the root. An install outside any checkout falls back to the
    working directory, as the CLI always did.
    """
    configured = os.environ.get(PROJECT_ROOT_VARIABLE)
    if configured:
        return Path(configured).resolve()
    package = Path(__file__).resolve().parent
    for folder in package.parents:
        if (folder / PROJECT_MARKER).is_file():
            return folder
    return Path.cwd()


def load_settings() -> Settings:
    """Read all settings from the environment and the env file."""
    path = env_file()
    return Settings(
        _env_file=path,
        project=ProjectSettings(_env_file=path),
        mlflow=MlflowSettings(_env_file=path),
        prefect=PrefectSettings(_env_file=path),
        mongodb=MongoSettings(_env_file=path),
        serving=ServingSettings(_env_file=path),
        api=ApiSettings(_env_file=path),
        evidently=EvidentlySettings(_env_file=path),
        prometheus=PrometheusSettings(_env_file=path),
        alertmanager=AlertmanagerSettings(_env_file=path),
    )
