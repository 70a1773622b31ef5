"""A shadow release judged on real logs: the better challenger is promoted, then rolled back.

The outcomes are simulated, seeded: each prospect subscribes with the probability the
challenger gave it, so the challenger ranks them truly better than the champion does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from pydantic import SecretStr
from tests.integration.app.conftest import Keys
from tests.integration.app.test_web_app import _key, _logged, _wait_for
from tests.integration.serving_fixtures import RegisteredVersions, ServedMLServer

from telescore.core.outcomes import Outcome
from telescore.core.release import ReleaseRules
from telescore.io.context import Context
from telescore.io.outcome_store import OutcomeStore
from telescore.io.registry import PREVIOUS
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient
from telescore.io.serving_counter_store import ServingCounterStore
from telescore.jobs.outcomes import record_outcomes
from telescore.jobs.releases import fleet_serving_counts, rollback_to_previous, run_promotion
from telescore.jobs.scoring import SERVED_MODELS, read_routing
from telescore.settings import ServingSettings, Settings
from telescore.validation.evidently_dashboards import MonitoringWorkspace

pytestmark = pytest.mark.integration

# Small evidence: a handful of requests, whose p99 is the slowest one (a shadow call shares the
# two cores with the next shown one). The latency guard has unit tests of its own; here it only
# stops a challenger that is ten times slower.
RULES = ReleaseRules(
    min_requests=5,
    min_labelled_rows=150,
    min_positives=10,
    min_negatives=10,
    max_p99_latency_ratio=10.0,
)


@pytest.fixture
def release_context(settings: Settings, mlserver: ServedMLServer) -> Iterator[Context]:
    """The promotion's context: the app's settings, with the session's MLServer to reload."""
    metrics_port = int(mlserver.metrics_url.rsplit(":", 1)[1].split("/")[0])
    serving = ServingSettings(
        url=mlserver.rest_url,
        metrics_port=metrics_port,
        control_token=SecretStr(mlserver.control_token),
    )
    with Context(settings.model_copy(update={"serving": serving})) as ctx:
        yield ctx


@pytest.fixture
def restore_aliases(
    registered_versions: RegisteredVersions, mlflow_tracking_uri: str, mlserver: ServedMLServer
) -> Iterator[None]:
    """Put the session's champion and challenger back, served, whatever the test did."""
    yield
    client = MlflowClient(mlflow_tracking_uri)
    name = registered_versions.name
    client.set_registered_model_alias(name, "champion", registered_versions.champion)
    client.set_registered_model_alias(name, "challenger", registered_versions.challenger)
    with ServingClient(
        mlserver.rest_url, timeout=120, control_token=mlserver.control_token
    ) as serving:
        for model in ("telemarketing", "telemarketing-challenger"):
            serving.load_model(model)


def test_a_truly_better_challenger_is_promoted_and_a_rollback_undoes_it(
    client: TestClient,
    keys: Keys,
    mlserver: ServedMLServer,
    registered_versions: RegisteredVersions,
    release_context: Context,
    mlflow_tracking_uri: str,
    restore_aliases: None,
) -> None:
    # given a shadow release, warmed up (a model's first requests are slow, and the latency guard
    # would judge them), in which every prospect is shown the champion and scored by both
    assert (
        client.put("/routing", json={"mode": "shadow"}, headers=_key(keys.ops)).status_code == 201
    )
    warm_up = {"prospect_ids": [f"P{n:05d}" for n in range(1, 60)]}
    for _ in range(3):
        client.post("/prospects/score", json=warm_up, headers=_key(keys.caller))
    client.app.state.services.scoring.wait_for_shadow()  # type: ignore[attr-defined]
    release = client.put("/routing", json={"mode": "shadow"}, headers=_key(keys.ops)).json()
    # (the evidence starts at the release's first whole second)
    began = datetime.fromisoformat(release["updated_at"])
    while datetime.now(UTC) < began.replace(microsecond=0) + timedelta(seconds=1):
        time.sleep(0.01)
    ids = [f"P{n:05d}" for n in range(100, 700)]
    shown = client.post("/prospects/score", json={"prospect_ids": ids}, headers=_key(keys.caller))
    assert shown.status_code == 200, shown.text
    prediction_ids = [row["prediction_id"] for row in shown.json()]
    champion_rows = _wait_all(mlserver, {"_id": {"$in": prediction_ids}}, len(ids))
    request_ids = sorted({row["request_id"] for row in champion_rows})
    shadows = _wait_all(mlserver, {"request_id": {"$in": request_ids}, "route": "shadow"}, len(ids))
    by_row = {(each["request_id"], each["row"]): each["score"] for each in shadows}
    # and outcomes drawn from the challenger's ranking (seeded): the higher it ranks a prospect,
    # the likelier a subscription, from 5% to 65%
    challenger_scores = np.array([by_row[(r["request_id"], r["row"])] for r in champion_rows])
    percentile = challenger_scores.argsort().argsort() / len(challenger_scores)
    rng = np.random.default_rng(7)
    subscribed = rng.random(len(percentile)) < 0.05 + 0.6 * percentile
    outcomes = [
        Outcome(prediction_id=row["_id"], subscribed=bool(label))
        for row, label in zip(champion_rows, subscribed, strict=True)
    ]
    with OutcomeStore(mlserver.mongodb_uri, mlserver.database) as store:
        record_outcomes(store, outcomes)
    # and every request of both arms counted (each MLServer process stores its counts about
    # once a second, later on a busy machine)
    _wait_counted(mlserver, requests=len(request_ids))

    # when the promotion job judges the release
    outcome = run_promotion(release_context, RULES, by="tests")

    # then the challenger is promoted: aliases flipped, champion only, the decision recorded
    assert outcome.action == "promote", outcome
    registry = MlflowClient(mlflow_tracking_uri)
    name = registered_versions.name
    champion = registry.get_model_version_by_alias(name, "champion").version
    previous = registry.get_model_version_by_alias(name, PREVIOUS).version
    assert (champion, previous) == (registered_versions.challenger, registered_versions.champion)
    with ReleaseStore(mlserver.mongodb_uri, mlserver.database) as releases:
        assert releases.current_routing()["mode"] == "champion", "a promotion ends the release"
        decision = releases.latest_decisions(1)[0]
    assert decision["action"] == "promote" and decision["decision"]["paired"] is True, decision
    workspace = MonitoringWorkspace(release_context.state_dir / "evidently")
    on_dashboard = workspace.load_release(decision["_id"])
    assert on_dashboard is not None and on_dashboard.metadata["release_action"] == "promote", (
        "the decision should be on the monitoring dashboard"
    )
    with ServingClient(mlserver.rest_url) as serving:
        assert serving.served_version("telemarketing") == registered_versions.challenger

    # and one command puts the previous champion back, served at once
    old, new = rollback_to_previous(release_context, "tests")
    assert (old, new) == (registered_versions.challenger, registered_versions.champion)
    with ServingClient(mlserver.rest_url) as serving:
        assert serving.served_version("telemarketing") == registered_versions.champion


def _wait_all(mlserver: ServedMLServer, query: dict[str, Any], count: int) -> list[dict[str, Any]]:
    """Wait until `count` predictions matching `query` have shipped; return them."""
    return _wait_for(
        lambda: (found := _logged(mlserver, query)) and len(found) == count and found,
        f"{count} predictions matching {query}",
    )


def _wait_counted(mlserver: ServedMLServer, requests: int) -> None:
    """Wait until the shared counters hold `requests` requests of each arm since the release."""

    def counted() -> bool:
        since_release = fleet_serving_counts(counters, releases, read_routing(releases))
        return all(
            since_release.get(model, (0, 0))[0] >= requests for model in SERVED_MODELS.values()
        )

    with (
        ServingCounterStore(mlserver.mongodb_uri, mlserver.database) as counters,
        ReleaseStore(mlserver.mongodb_uri, mlserver.database) as releases,
    ):
        _wait_for(counted, f"{requests} requests of each arm counted")


def test_no_release_under_way_is_idle(release_context: Context, client: TestClient) -> None:
    # given the app's routing: champion only (no release under way)
    # when the promotion job runs, then it judges nothing and changes nothing
    outcome = run_promotion(release_context, RULES, by="tests")
    assert outcome.action == "idle", outcome
