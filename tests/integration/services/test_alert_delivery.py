"""Faults reach a person: real Prometheus and Alertmanager, started as `telescore up` starts them.

Prometheus scrapes a real MLServer, evaluates the shipped rules (prometheus/telescore.rules.yml;
each alert's `for:` shortened in its copy, the file untouched), Alertmanager notifies the local
receiver, which appends the alert to the alert log. A stopped MLServer and a stopped MongoDB
each arrive there as their alert.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.integration.serving_fixtures import ServedMLServer, mlserver_on_free_ports

from telescore.io.alert_log import AlertLog, alert_log_path
from telescore.io.context import Context
from telescore.io.prometheus import PrometheusClient
from telescore.io.serving_client import ServingClient
from telescore.jobs.platform import monitoring_servers
from telescore.services.embedded import mongodb_server
from telescore.services.processes import ServiceProcess, free_port, wait_until
from telescore.settings import (
    AlertmanagerSettings,
    ProjectSettings,
    PrometheusSettings,
    Settings,
)

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from tests.integration.serving_fixtures import RegisteredVersions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
WAIT = 120.0  # a bound on a state, not a timing: a busy machine is slow, not wrong
RULE_FOR = "2s"
"""Every alert's `for:` in the test's copy of the rules: seconds, not minutes."""


@dataclass(frozen=True)
class Alerting:
    """The embedded Prometheus, Alertmanager and receiver, and where to read them."""

    prometheus: PrometheusClient
    alert_log: AlertLog
    prometheus_url: str
    alertmanager_url: str
    login: tuple[str, str]


@contextmanager
def alerting(folder: Path, mlserver_metrics: str, web: str) -> Iterator[Alerting]:
    """Start Prometheus (scraping `mlserver_metrics` and `web`), Alertmanager and the receiver.

    Built by `jobs.platform.monitoring_servers`, as `telescore up` builds them, on free ports
    with intervals of a second.
    """
    settings = Settings(
        project=ProjectSettings(state_dir=folder),
        prometheus=PrometheusSettings(
            port=free_port(), scrape_interval="1s", evaluation_interval="1s"
        ),
        alertmanager=AlertmanagerSettings(
            port=free_port(), receiver_port=free_port(), group_wait="1s", group_interval="1s"
        ),
    )
    with Context(settings) as ctx:
        servers = monitoring_servers(
            ctx, REPO, mlserver_targets=[mlserver_metrics], web_targets=[web], rule_for=RULE_FOR
        )
        assert [s.name for s in servers] == ["alert-receiver", "alertmanager", "prometheus"]
        for server in servers:
            server.launch()
        try:
            for server in servers:
                server.wait_healthy()
            login = ctx.prometheus_login
            assert login is not None, "the embedded Prometheus has a login"
            with PrometheusClient(ctx.prometheus_url, login) as client:
                yield Alerting(
                    client,
                    AlertLog(alert_log_path(ctx.state_dir)),
                    ctx.prometheus_url,
                    ctx.alertmanager_url,
                    (login.user, login.password),
                )
        finally:
            for server in reversed(servers):
                server.stop()


def _host_port(url: str) -> str:
    return httpx.URL(url).netloc.decode()


def _firing(stack: Alerting, name: str) -> list[dict[str, Any]]:
    """The alerts named `name` that Prometheus says fire now."""
    return [
        each
        for each in stack.prometheus.alerts()
        if each["labels"]["alertname"] == name and each["state"] == "firing"
    ]


def _received(stack: Alerting, name: str, **labels: str) -> Callable[[], dict[str, Any] | None]:
    """A check: the receiver's log holds a firing `name` alert with these labels."""

    def check() -> dict[str, Any] | None:
        for each in stack.alert_log.latest(200):
            if (
                each["alertname"] == name
                and each["status"] == "firing"
                and labels.items() <= each["labels"].items()
            ):
                return each
        return None

    return check


def _wait_for(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _scraped(stack: Alerting, expression: str) -> Callable[[], bool]:
    return lambda: bool(stack.prometheus.query(expression))


def _mlserver(folder: Path, tracking_uri: str, mongodb_uri: str) -> ServedMLServer:
    """An MLServer of the test's own (tests stop it), on free ports."""
    folder.mkdir(parents=True)
    return mlserver_on_free_ports(folder, tracking_uri, mongodb_uri, "alerting_tests")


def test_a_stopped_mlserver_reaches_the_local_receiver_as_mlserver_down(
    tmp_path: Path,
    mlflow_tracking_uri: str,
    registered_versions: RegisteredVersions,
    mongodb: ServiceProcess,
) -> None:
    own_mlserver = _mlserver(
        tmp_path / "mlserver",
        mlflow_tracking_uri,
        mongodb.uri,  # type: ignore[attr-defined]
    )
    target = _host_port(own_mlserver.metrics_url)
    with (
        own_mlserver.process.running(),
        alerting(tmp_path / "state", target, f"127.0.0.1:{free_port()}") as stack,
    ):
        # given Prometheus scraping a serving MLServer, and a request it answered
        with ServingClient(own_mlserver.rest_url) as client:
            client.infer(registered_versions.features.head(2))
        wait_until(_scraped(stack, 'up{job="mlserver"} == 1'), WAIT, what="MLServer scraped")
        # (the runtime's own figures are scraped too: the latency alert reads them)
        wait_until(
            _scraped(stack, "telescore_serving_request_duration_seconds_count > 0"),
            WAIT,
            what="the request's duration in Prometheus",
        )
        # (before the first scrape, no MLServer at all is an alert of its own: it resolves)
        wait_until(
            lambda: not _firing(stack, "MLServerDown"), WAIT, what="no MLServerDown while it serves"
        )

        # when MLServer stops
        own_mlserver.process.stop()

        # then Alertmanager tells the local receiver, naming the target that went down
        alert = _wait_for(
            _received(stack, "MLServerDown", instance=target), "MLServerDown at the receiver"
        )
    assert alert["severity"] == "critical", f"MLServerDown should be critical: {alert}"
    assert alert["summary"] == f"MLServer is down at {target}", f"its summary: {alert}"
    assert alert["receiver"] == "telescore-local", f"delivered to {alert['receiver']}"


def test_a_stopped_mongodb_reaches_the_receiver_as_the_prediction_log_unreachable(
    tmp_path: Path,
    mlflow_tracking_uri: str,
    registered_versions: RegisteredVersions,
) -> None:
    # given an MLServer shipping its predictions to a MongoDB of this test's own
    port = free_port()
    mongodb = mongodb_server(tmp_path / "mongodb", port)
    served = _mlserver(tmp_path / "mlserver", mlflow_tracking_uri, f"mongodb://127.0.0.1:{port}")
    target = _host_port(served.metrics_url)
    rows = registered_versions.features.head(2)
    with (
        mongodb.running(),
        served.process.running(),
        alerting(tmp_path / "state", target, f"127.0.0.1:{free_port()}") as stack,
        ServingClient(served.rest_url) as client,
    ):
        client.infer(rows)
        wait_until(
            _scraped(stack, "telescore_prediction_log_mongodb_up == 1"),
            WAIT,
            what="the shipper writing to MongoDB",
        )
        assert not _firing(stack, "PredictionLogMongoDBUnreachable"), "it fires with MongoDB up"

        # when MongoDB stops, and predictions keep coming (they wait in the journal)
        mongodb.stop()
        client.infer(rows)

        # then the receiver is told the prediction log cannot reach MongoDB
        alert = _wait_for(
            _received(stack, "PredictionLogMongoDBUnreachable", instance=target),
            "PredictionLogMongoDBUnreachable at the receiver",
        )
    assert alert["severity"] == "critical", f"it should be critical: {alert}"
    assert alert["labels"]["component"] == "prediction-log", f"its labels: {alert['labels']}"


def test_prometheus_and_alertmanager_answer_only_with_the_login(tmp_path: Path) -> None:
    # given the embedded pair, as `telescore up` starts it
    with alerting(
        tmp_path / "state", f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    ) as stack:
        for url in (
            f"{stack.prometheus_url}/api/v1/query?query=up",
            f"{stack.alertmanager_url}/api/v2/status",
        ):
            # when asked without the login / then they refuse
            assert httpx.get(url, timeout=5).status_code == 401, f"{url} answered without login"
            # and with it they answer
            assert httpx.get(url, auth=stack.login, timeout=5).status_code == 200, url
        # and the login's password is not in the configuration they read (a bcrypt hash is)
        web = (tmp_path / "state" / "prometheus" / "web.yml").read_text()
        assert stack.login[1] not in web and "$2b$" in web, "the web config holds the password"
