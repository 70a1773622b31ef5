"""`telescore status`: the loop at a glance, gathered from MongoDB, MLServer, Alertmanager, the UIs.

MongoDB holds the loop's records: without it there is nothing to show, and `gather_status`
raises. Every other service that does not answer is reported as such, and the rest is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from telescore.core.loop_status import LoopStatus
from telescore.io.context import Context
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prometheus import (
    AlertmanagerClient,
    MonitoringApiError,
    PrometheusClient,
    scalar_of,
)
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingError
from telescore.jobs import platform
from telescore.jobs import serving as deployment
from telescore.jobs.loop_status import LoopStatusReader
from telescore.jobs.model_repository import CHALLENGER_MODEL, CHAMPION_MODEL

PROBE_SECONDS = 2.0
"""How long a UI or Alertmanager may take to answer before it is reported as not answering."""


@dataclass(frozen=True)
class Alert:
    """An alert Alertmanager holds as firing."""

    name: str
    severity: str
    summary: str
    since: str


@dataclass(frozen=True)
class Service:
    """A UI and whether it answered (any HTTP answer, a login asked for included)."""

    name: str
    url: str
    answering: bool


@dataclass(frozen=True)
class PredictionLog:
    """The prediction log's backlog: every replica Prometheus scrapes, or the local MLServer."""

    spooled: float
    dead_lettered: float
    mongodb_up: bool
    """False when any replica's shipper cannot reach MongoDB."""
    replicas: int | None = None
    """How many replicas Prometheus summed; None: only the local MLServer was asked."""


FLEET_LOG_QUERIES = {
    "replicas": "count(telescore_prediction_log_spooled)",
    "spooled": "sum(telescore_prediction_log_spooled)",
    "dead_lettered": "sum(telescore_prediction_log_dead_lettered_total)",
    "mongodb_up": "min(telescore_prediction_log_mongodb_up)",
}
"""The prediction log over every replica: a journal growing on any of them is ops' concern."""


@dataclass(frozen=True)
class Status:
    """Everything `telescore status` shows; None where a service did not answer."""

    loop: LoopStatus
    serving_url: str
    prediction_log: PredictionLog | None
    """None: MLServer's metrics did not answer (or it serves no model yet)."""
    alertmanager_url: str
    alerts: list[Alert] | None
    """None: Alertmanager did not answer; `alerts_problem` says how."""
    alerts_problem: str | None
    services: list[Service]


def served_versions(ctx: Context) -> tuple[Mapping[str, str | None] | None, PredictionLog | None]:
    """Return what the local MLServer serves as champion and challenger, and its log's figures.

    (None, None) when MLServer does not answer.
    """
    try:
        serving = deployment.status(ctx)
    except (httpx.HTTPError, ServingError):
        return None, None
    if not serving.answering:
        return None, None
    served = {
        "champion": serving.models.get(CHAMPION_MODEL),
        "challenger": serving.models.get(CHALLENGER_MODEL),
    }
    log = serving.prediction_log
    figures = (
        PredictionLog(
            spooled=log.get("spooled", 0.0),
            dead_lettered=log.get("dead_lettered_total", 0.0),
            mongodb_up=bool(log.get("mongodb_up", 1.0)),
        )
        if log
        else None
    )
    return served, figures


def fleet_prediction_log(ctx: Context) -> PredictionLog | None:
    """Return the prediction log summed over every replica Prometheus scrapes.

    None when Prometheus does not answer or scrapes no shipper yet: the caller falls back to
    the local MLServer's own figures.
    """
    try:
        with PrometheusClient(ctx.prometheus_url, ctx.prometheus_login, PROBE_SECONDS) as api:
            found = {name: scalar_of(api.query(query)) for name, query in FLEET_LOG_QUERIES.items()}
    except (MonitoringApiError, OSError):
        return None
    if not found["replicas"]:
        return None
    return PredictionLog(
        spooled=found["spooled"] or 0.0,
        dead_lettered=found["dead_lettered"] or 0.0,
        mongodb_up=bool(found["mongodb_up"] if found["mongodb_up"] is not None else 1.0),
        replicas=int(found["replicas"]),
    )


def firing_alerts(ctx: Context) -> tuple[list[Alert] | None, str | None]:
    """Return the alerts Alertmanager holds as firing, or None and why it could not say."""
    try:
        with AlertmanagerClient(ctx.alertmanager_url, ctx.alertmanager_login, PROBE_SECONDS) as api:
            found = api.firing()
    except (MonitoringApiError, OSError) as error:
        return None, str(error)
    return [_alert(each) for each in found], None


def _alert(found: Mapping[str, Any]) -> Alert:
    labels, annotations = found.get("labels") or {}, found.get("annotations") or {}
    return Alert(
        name=str(labels.get("alertname", "?")),
        severity=str(labels.get("severity", "")),
        summary=str(annotations.get("summary", "")),
        since=str(found.get("startsAt", "")),
    )


def probe(url: str) -> bool:
    """Tell whether `url` answers HTTP at all (a 401 or a 404 is an answer)."""
    try:
        httpx.get(url, timeout=PROBE_SECONDS)
    except httpx.HTTPError:
        return False
    return True


def gather_status(ctx: Context) -> Status:
    """Return the loop's state and the platform's, service by service.

    Raises a pymongo error when MongoDB does not answer: the loop's records are there.
    """
    ctx.store(MonitoringStore).ping()  # first: without MongoDB, nothing else is worth asking
    served, local_log = served_versions(ctx)
    prediction_log = fleet_prediction_log(ctx) or local_log
    loop = LoopStatusReader(
        ctx.store(MonitoringStore),
        ctx.store(ReleaseStore),
        ctx.store(OutcomeStore),
        served=lambda: served,
    ).read()
    alerts, problem = firing_alerts(ctx)
    urls = platform.platform_urls(ctx)
    services = [Service(name, url, probe(url)) for name, url in platform.ui_urls(urls).items()]
    return Status(
        loop=loop,
        serving_url=ctx.serving_url,
        prediction_log=prediction_log,
        alertmanager_url=ctx.alertmanager_url,
        alerts=alerts,
        alerts_problem=problem,
        services=services,
    )
