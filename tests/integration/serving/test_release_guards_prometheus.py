"""The promotion's guards read PromQL over every replica: a real Prometheus, two MLServers.

Two MLServer processes serve the champion and a challenger that fails on some valid input (the
faulty model of test_release_evidence: it raises on a job it was fitted without, a 500). A
real Prometheus, started as `telescore up` starts it (a second between scrapes), scrapes both.
Faults sent to the challenger on one replica only roll it back on the fleet's figures, read
from Prometheus; a challenger that fails nothing passes its guards; and with Prometheus down
the guards fall back on the MongoDB counters, saying so in the decision. `telescore status`
reads the prediction log's backlog over both replicas from the same Prometheus.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from pydantic import SecretStr
from tests.integration.serving.test_release_evidence import (
    UNKNOWN_TO_THE_CHALLENGER,
    _register_faulty,
)
from tests.integration.serving.test_serving_counters import all_stored, served_counts
from tests.integration.serving_fixtures import (
    ServedMLServer,
    mlserver_on_free_ports,
    register_version,
)

from telescore.core.features import split_features_label
from telescore.core.params import ModelParams
from telescore.core.release import ReleaseRules
from telescore.core.routing import RoutingConfig
from telescore.io.context import Context
from telescore.io.prometheus import MLSERVER_JOB, PrometheusClient, scalar_of
from telescore.io.registry import CHALLENGER, CHAMPION, Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import inference_request
from telescore.io.serving_counter_store import ServingCounterStore
from telescore.jobs.platform import monitoring_servers
from telescore.jobs.releases import run_promotion, set_routing
from telescore.jobs.status import fleet_prediction_log
from telescore.services.processes import ServiceProcess, free_port
from telescore.settings import (
    MlflowSettings,
    MongoSettings,
    ProjectSettings,
    PrometheusSettings,
    ServingSettings,
    Settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
WAIT = 120.0  # a bound on a state, not a timing: a busy machine is slow, not wrong
CHAMPION_MODEL = "telemarketing"
CHALLENGER_MODEL = "telemarketing-challenger"
REQUESTS = 10
"""Valid requests each arm answers on each replica."""
FAULTS = 2
"""Valid requests the challenger fails, on the second replica only."""
# Only the error rate is judged here: the faulty challenger scores through predict_proba,
# slower than the champion, so the latency guard is opened wide (its figures are still read).
RULES = ReleaseRules(
    min_requests=2 * REQUESTS,
    max_p99_latency_ratio=100.0,
    p99_latency_slack_ms=60_000.0,
    max_p50_latency_ratio=100.0,
    p50_latency_slack_ms=60_000.0,
)
REQUESTS_TOTAL = "telescore_serving_requests_total"
COUNTERS = (
    REQUESTS_TOTAL,
    "telescore_serving_failures_total",
    "telescore_serving_refused_total",
)


@dataclass(frozen=True)
class Fleet:
    """Two MLServers of one registered model, the Prometheus scraping both, and how to reach it."""

    replicas: tuple[ServedMLServer, ServedMLServer]
    registry: Registry
    challenger: str
    prometheus: PrometheusClient
    settings: Settings
    """The promotion's settings: the replicas' MongoDB, this Prometheus, its login's folder."""
    sound_rows: pd.DataFrame
    failing_rows: pd.DataFrame


@pytest.fixture(scope="module")
def fleet(
    services_dir: Path,
    mlflow_tracking_uri: str,
    bank_sample: pd.DataFrame,
    mongodb: ServiceProcess,
) -> Iterator[Fleet]:
    """Two MLServers serving a champion and a faulty challenger; Prometheus scraping both."""
    name = f"telemarketing-guards-{uuid.uuid4().hex[:8]}"
    registry = Registry(mlflow_tracking_uri, name, "serving-tests")
    features, labels = split_features_label(bank_sample)
    champion = register_version(registry, features, labels, ModelParams(C=1.0))
    challenger = _register_faulty(registry, features, labels)
    registry.set_alias(CHAMPION, champion)
    registry.set_alias(CHALLENGER, challenger)
    folder = services_dir / "release-guards"
    replicas = []
    for replica in ("a", "b"):
        (folder / replica).mkdir(parents=True)
        replicas.append(
            mlserver_on_free_ports(
                folder / replica,
                mlflow_tracking_uri,
                mongodb.uri,  # type: ignore[attr-defined]
                "release_guards_tests",
                registered_model=name,
            )
        )
    first, second = replicas
    settings = Settings(
        project=ProjectSettings(state_dir=folder / "state"),
        prometheus=PrometheusSettings(
            port=free_port(), scrape_interval="1s", evaluation_interval="1s"
        ),
        mongodb=MongoSettings(uri=first.mongodb_uri, database=first.database),
        # The registry alone is what a rollback must change here: no reload of the servers.
        serving=ServingSettings(
            url=first.rest_url,
            reload_on_release=False,
            control_token=SecretStr(first.control_token),
        ),
        mlflow=MlflowSettings(tracking_uri=registry.tracking_uri, model_name=name),
    )
    student = features["job"] == UNKNOWN_TO_THE_CHALLENGER
    with Context(settings) as ctx, first.process.running(), second.process.running():
        # Prometheus as `telescore up` starts it, scraping both replicas' metrics ports.
        (prometheus,) = [
            server
            for server in monitoring_servers(
                ctx,
                REPO,
                mlserver_targets=[_host_port(each.metrics_url) for each in replicas],
                web_targets=[f"127.0.0.1:{free_port()}"],
            )
            if server.name == "prometheus"
        ]
        with prometheus.running():
            yield Fleet(
                (first, second),
                registry,
                challenger,
                ctx.prometheus,
                settings,
                features[~student].head(1),
                features[student].head(1),
            )


@pytest.fixture
def promotion(fleet: Fleet) -> Iterator[Context]:
    """The promotion's context on the fleet; the challenger alias set again (a rollback ends it)."""
    fleet.registry.set_alias(CHALLENGER, fleet.challenger)
    with Context(fleet.settings) as ctx:
        yield ctx


def _host_port(url: str) -> str:
    return httpx.URL(url).netloc.decode()


def _wait_for(condition: Callable[[], Any], what: str, seen: Callable[[], Any]) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; seen: {seen()}")


def _served_totals(fleet: Fleet) -> tuple[int, ...]:
    """The requests, failures and refusals the replicas themselves report, over both."""
    counts = [c for each in fleet.replicas for c in served_counts(each.metrics_url).values()]
    return tuple(sum(c[index] for c in counts) for index in range(3))


def _scraped_totals(fleet: Fleet) -> tuple[int, ...]:
    """The same totals as Prometheus last scraped them."""
    return tuple(
        round(scalar_of(fleet.prometheus.query(f"sum({metric})")) or 0) for metric in COUNTERS
    )


def _wait_scraped(fleet: Fleet) -> None:
    """Wait until Prometheus's latest scrape of both replicas holds every request sent so far."""
    _wait_for(
        lambda: _scraped_totals(fleet) == _served_totals(fleet),
        "Prometheus to scrape both replicas' counts",
        lambda: (_scraped_totals(fleet), _served_totals(fleet)),
    )


def _samples(fleet: Fleet, model: str) -> dict[str, list[float | None]]:
    """Each replica's request counter of `model` in Prometheus: fewest, most, samples (10 min)."""
    series = f'{REQUESTS_TOTAL}{{model="{model}"}}[10m]'
    found: dict[str, list[float | None]] = {}
    for function in ("min_over_time", "max_over_time", "count_over_time"):
        for each in fleet.prometheus.query(f"{function}({series})"):
            found.setdefault(each["metric"]["instance"], []).append(scalar_of([each]))
    return found


def _scraped_since(fleet: Fleet, moment: datetime) -> bool:
    """Tell whether Prometheus has scraped every replica since `moment`."""
    latest = fleet.prometheus.query(f'timestamp(up{{job="{MLSERVER_JOB}"}})')
    return len(latest) == len(fleet.replicas) and all(
        (scalar_of([each]) or 0.0) > moment.timestamp() for each in latest
    )


def _begin_release(fleet: Fleet) -> RoutingConfig:
    """Begin a canary release once Prometheus holds every count so far (its baseline).

    Requests are sent only once each replica has been scraped after the release began: a
    scrape that started before it but read the counts after the first request would put that
    request in the baseline (a scrape's samples carry the time it started).
    """
    _wait_scraped(fleet)
    first = fleet.replicas[0]
    with ReleaseStore(first.mongodb_uri, first.database) as store:
        routing = set_routing(store, RoutingConfig(mode="canary", canary_weight=50.0), "tests")
    assert routing.updated_at is not None, "a routing is stamped"
    began = routing.updated_at
    _wait_for(
        lambda: _scraped_since(fleet, began),
        "a scrape of every replica after the release began",
        lambda: fleet.prometheus.query(f'timestamp(up{{job="{MLSERVER_JOB}"}})'),
    )
    return routing


def _wait_stored(fleet: Fleet, counters: ServingCounterStore) -> None:
    """Wait until MongoDB holds the counts of every replica that counted something."""
    counting = [each.metrics_url for each in fleet.replicas if served_counts(each.metrics_url)]
    if counting:
        _wait_for(lambda: all_stored(counters, counting), "the counts stored", counters.processes)


def _send(replica: ServedMLServer, model: str, rows: pd.DataFrame, times: int) -> list[int]:
    body = inference_request(rows)
    with httpx.Client(base_url=replica.rest_url, timeout=30.0) as http:
        return [http.post(f"/v2/models/{model}/infer", json=body).status_code for _ in range(times)]


def _serve_both_arms(fleet: Fleet) -> None:
    """Each arm answers REQUESTS valid requests on each replica."""
    for replica in fleet.replicas:
        for model in (CHAMPION_MODEL, CHALLENGER_MODEL):
            statuses = _send(replica, model, fleet.sound_rows, REQUESTS)
            assert statuses == [200] * REQUESTS, f"{model} should answer: {statuses}"


def _judge(ctx: Context, fleet: Fleet) -> dict[str, Any]:
    """Run the promotion; return its recorded decision (the routing is reset after)."""
    releases = ctx.store(ReleaseStore)
    try:
        outcome = run_promotion(ctx, RULES, by="tests")
    finally:
        set_routing(releases, RoutingConfig(), "tests")
    decision = releases.latest_decisions(1)[0]
    assert decision["_id"] == outcome.decision_id, f"the decision should be recorded: {outcome}"
    assert outcome.guards_source == decision["guards_source"], "the outcome names its source"
    return decision


def test_faults_on_one_replica_roll_the_challenger_back_on_the_fleets_promql_figures(
    fleet: Fleet, promotion: Context
) -> None:
    second = fleet.replicas[1]
    # given a canary release in which both arms answered on both replicas
    _begin_release(fleet)
    _serve_both_arms(fleet)
    # when the challenger fails valid requests on the second replica only
    statuses = _send(second, CHALLENGER_MODEL, fleet.failing_rows, FAULTS)
    assert statuses == [500] * FAULTS, f"the model's own fault: {statuses}"
    # and Prometheus has scraped it all, and the promotion judges the release
    _wait_scraped(fleet)
    decision = _judge(promotion, fleet)
    # then its guards read Prometheus, and saw the whole fleet: both replicas' requests
    assert decision["guards_source"] == "prometheus", f"the guards' source: {decision}"
    assert decision["guards_fallback"] is None, f"no fallback was needed: {decision}"
    champion, challenger = decision["decision"]["champion"], decision["decision"]["challenger"]
    assert (challenger["requests"], challenger["errors"]) == (2 * REQUESTS + FAULTS, FAULTS), (
        f"the challenger's requests and faults over both replicas: {challenger}"
    )
    assert (champion["requests"], champion["errors"]) == (2 * REQUESTS, 0), champion
    assert challenger["latency_p99_ms"] > 0 and champion["latency_p99_ms"] > 0, (
        f"the latencies come from the runtime's histograms: {champion}, {challenger}"
    )
    # and the fleet's error rate rolled it back
    assert decision["action"] == "rollback", f"the faults should roll it back: {decision}"
    assert "error rate" in decision["reason"], decision["reason"]
    assert promotion.registry.alias_version(CHALLENGER) is None, "a rollback ends the release"


def test_a_challenger_that_fails_nothing_passes_its_guards_on_promql_figures(
    fleet: Fleet, promotion: Context
) -> None:
    # given a canary release in which both arms answered every request on both replicas
    _begin_release(fleet)
    _serve_both_arms(fleet)
    # when Prometheus has scraped it and the promotion judges the release
    _wait_scraped(fleet)
    decision = _judge(promotion, fleet)
    # then the guards, read from Prometheus, pass: it waits for outcomes, nothing rolled back
    assert decision["guards_source"] == "prometheus", f"the guards' source: {decision}"
    challenger = decision["decision"]["challenger"]
    assert (challenger["requests"], challenger["errors"]) == (2 * REQUESTS, 0), (
        f"only this release's requests, none failed: {challenger}; "
        f"the counters' samples: {_samples(fleet, CHALLENGER_MODEL)}"
    )
    guards = {each["metric"]: each["verdict"] for each in decision["decision"]["comparisons"]}
    assert guards == {
        "error_rate": "acceptable",
        "latency_p50_ms": "acceptable",
        "latency_p99_ms": "acceptable",
    }, guards
    assert decision["action"] == "wait", f"healthy guards should not roll back: {decision}"
    assert decision["reason"].startswith("waiting for outcomes"), decision["reason"]
    assert promotion.registry.alias_version(CHALLENGER) is not None, "the challenger stays"


def test_with_prometheus_down_the_guards_fall_back_on_the_counters_and_say_why(
    fleet: Fleet, promotion: Context
) -> None:
    first, second = fleet.replicas
    # given a release with faults on one replica, every count stored in MongoDB
    with ServingCounterStore(first.mongodb_uri, first.database) as counters:
        _wait_stored(fleet, counters)
        _begin_release(fleet)
        _serve_both_arms(fleet)
        assert _send(second, CHALLENGER_MODEL, fleet.failing_rows, FAULTS) == [500] * FAULTS
        _wait_stored(fleet, counters)
    # when the promotion's Prometheus does not answer (nothing listens where it is configured)
    down = fleet.settings.model_copy(
        update={"prometheus": PrometheusSettings(url=f"http://127.0.0.1:{free_port()}")}
    )
    with Context(down) as ctx:
        decision = _judge(ctx, fleet)
    # then the guards are judged on the counters, and the decision says why
    assert decision["guards_source"] == "serving_counters", f"the guards' source: {decision}"
    assert "did not answer" in (decision["guards_fallback"] or ""), decision["guards_fallback"]
    challenger = decision["decision"]["challenger"]
    assert (challenger["requests"], challenger["errors"]) == (2 * REQUESTS + FAULTS, FAULTS), (
        f"the counters see the fleet too: {challenger}"
    )
    assert decision["action"] == "rollback", f"the faults still roll it back: {decision}"


def test_status_reads_the_prediction_log_of_every_replica_from_prometheus(
    fleet: Fleet, promotion: Context
) -> None:
    # given two MLServer replicas, each with its own prediction-log shipper, scraped by Prometheus
    def both_summed() -> bool:
        found = fleet_prediction_log(promotion)
        return found is not None and found.replicas == len(fleet.replicas)

    # when `telescore status` asks for the prediction log
    _wait_for(
        both_summed, "Prometheus to scrape both shippers", lambda: fleet_prediction_log(promotion)
    )
    found = fleet_prediction_log(promotion)
    # then it is the sum over both replicas, not the one MLServer the settings name
    assert found is not None and found.replicas == 2, f"both replicas counted: {found}"
    assert found.mongodb_up, f"both shippers reach MongoDB: {found}"
    assert (found.spooled, found.dead_lettered) == (0.0, 0.0), f"nothing waits: {found}"
