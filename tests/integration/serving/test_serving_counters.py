"""Release evidence from every MLServer process: counted by each, summed over all.

A request refused for invalid input is the caller's doing: counted apart, never as the arm's
request or failure (`tests/integration/serving/test_release_evidence.py` attacks it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from tests.integration.serving_fixtures import mlserver_on_free_ports

from telescore.core.routing import RoutingConfig
from telescore.core.serving_counts import ReleaseCounts
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import inference_request, read_metrics
from telescore.io.serving_counter_store import ServingCounterStore
from telescore.jobs.releases import fleet_serving_counts, set_routing

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from tests.integration.serving_fixtures import RegisteredVersions, ServedMLServer

pytestmark = pytest.mark.integration

WAIT = 90.0
MODEL = "telemarketing"
LABEL = re.compile(r'(\w+)="([^"]*)"')


@pytest.fixture(scope="module")
def second(
    services_dir: Path,
    mlflow_tracking_uri: str,
    registered_versions: RegisteredVersions,
    mlserver: ServedMLServer,
) -> Iterator[tuple[str, str]]:
    """A second MLServer on free ports, with its own journal, logging to the same database.

    Yields its REST URL and its metrics URL.
    """
    state = services_dir / "second-mlserver"
    state.mkdir()
    served = mlserver_on_free_ports(
        state, mlflow_tracking_uri, mlserver.mongodb_uri, mlserver.database
    )
    with served.process.running():
        yield served.rest_url, served.metrics_url


def _wait_for(condition: Callable[[], Any], what: str, seen: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; seen: {seen()}")


COUNTED = ("requests", "failures", "refused")


def served_counts(metrics_url: str) -> dict[tuple[str, str, str], ReleaseCounts]:
    """Return a process's own counts, by (process, model, version), from its metrics."""
    metrics = read_metrics(metrics_url, "telescore_serving_")
    counts: dict[tuple[str, str, str], dict[str, int]] = {}
    for name, value in metrics.items():
        kind = name.partition("_total{")[0]
        if kind not in COUNTED:
            continue
        labels = dict(LABEL.findall(name))
        key = (labels["process"], labels["model"], labels["version"])
        counts.setdefault(key, {})[kind] = int(value)
    return {key: ReleaseCounts(**each) for key, each in counts.items()}


def all_stored(counters: ServingCounterStore, metrics_urls: list[str]) -> bool:
    """Tell whether MongoDB holds every process's counts as the process itself reports them."""
    stored = {
        (doc["_id"], each["model"], each["version"]): ReleaseCounts(
            *(each.get(kind, 0) for kind in COUNTED)
        )
        for doc in counters.processes()
        for each in doc["counts"]
    }
    served = [served_counts(url) for url in metrics_urls]
    return all(counts and all(stored.get(k) == v for k, v in counts.items()) for counts in served)


def _mlserver_failures(metrics_url: str) -> int:
    """Return MLServer's own failure count of the champion model."""
    metrics = read_metrics(metrics_url, "model_infer_request_")
    return sum(
        int(value)
        for name, value in metrics.items()
        if name.startswith("failure_total") and f'model="{MODEL}"' in name
    )


def _send(url: str, body: dict[str, Any], times: int) -> list[int]:
    with httpx.Client(base_url=url, timeout=10.0) as http:
        return [http.post(f"/v2/models/{MODEL}/infer", json=body).status_code for _ in range(times)]


def test_the_promotion_counts_the_requests_of_every_mlserver(
    mlserver: ServedMLServer,
    second: tuple[str, str],
    registered_versions: RegisteredVersions,
) -> None:
    rows = registered_versions.features.head(1)
    good = inference_request(rows)
    bad = inference_request(rows, request_id="x" * 129)  # refused: 400, the caller's fault
    metrics_urls = [mlserver.metrics_url, second[1]]

    def seen() -> Any:
        return counters.processes(), [served_counts(url) for url in metrics_urls]

    with (
        ServingCounterStore(mlserver.mongodb_uri, mlserver.database) as counters,
        ReleaseStore(mlserver.mongodb_uri, mlserver.database) as releases,
    ):
        # given two MLServer processes, each having answered a request, their counts stored
        assert _send(mlserver.rest_url, good, 1) == [200] and _send(second[0], good, 1) == [200]
        _wait_for(lambda: all_stored(counters, metrics_urls), "both processes' counts stored", seen)
        # and a release that begins now
        routing = set_routing(releases, RoutingConfig(), "tests")
        mlserver_before = [_mlserver_failures(url) for url in metrics_urls]
        try:
            # when each process refuses some requests and answers others
            assert _send(mlserver.rest_url, bad, 3) == [400] * 3, "the bad requests are refused"
            assert _send(second[0], bad, 4) == [400] * 4, "the bad requests are refused"
            assert _send(second[0], good, 2) == [200] * 2
            _wait_for(
                lambda: all_stored(counters, metrics_urls), "both processes' counts stored", seen
            )
            evidence = fleet_serving_counts(counters, releases, routing)
            processes = {doc["_id"] for doc in counters.processes()}
        finally:
            set_routing(releases, RoutingConfig(), "tests")
    # then the promotion's evidence counts what both answered and refused since the release
    # began, the refusals apart: they are neither the model's requests nor its failures
    assert evidence.get(MODEL) == ReleaseCounts(requests=2, failures=0, refused=7), (
        f"requests, failures and refusals over both processes: {evidence}"
    )
    # where MLServer's own failure counter counts a refusal as a failure
    mlserver_failed = sum(
        _mlserver_failures(url) - before
        for url, before in zip(metrics_urls, mlserver_before, strict=True)
    )
    assert mlserver_failed == 7, f"MLServer itself counts the refusals: {mlserver_failed}"
    assert len(processes) >= 2, f"each process should store its own counts: {processes}"
