"""Forged failures cannot push a release: a caller's invalid requests are not the arm's failures.

Whoever can reach MLServer (on one machine, any local process) can send requests that the
runtime refuses (400). Those are the caller's fault: a flood of them to the challenger must not
roll it back, nor dilute the failures it really has. A fault of the server's own still counts.

The challenger here really fails on some valid input: it was fitted without students, and its
encoder refuses a category it does not know, so a valid request about a student fails with a
500, as a model with a bug would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from pydantic import SecretStr
from tests.integration.serving.test_serving_counters import all_stored, served_counts
from tests.integration.serving_fixtures import (
    ServedMLServer,
    mlserver_on_free_ports,
    register_version,
)

from telescore.core.features import build_pipeline, feature_ranges, split_features_label
from telescore.core.params import ModelParams
from telescore.core.release import ReleaseRules
from telescore.core.routing import RoutingConfig
from telescore.core.schema import CATEGORICAL_FEATURES, CATEGORICAL_VALUES
from telescore.io.context import Context
from telescore.io.registry import CHALLENGER, CHAMPION, Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import inference_request
from telescore.io.serving_counter_store import ServingCounterStore
from telescore.jobs.releases import run_promotion, set_routing
from telescore.services.processes import ServiceProcess
from telescore.settings import (
    MlflowSettings,
    MongoSettings,
    ProjectSettings,
    ServingSettings,
    Settings,
)

pytestmark = pytest.mark.integration

WAIT = 90.0
CHAMPION_MODEL = "telemarketing"
CHALLENGER_MODEL = "telemarketing-challenger"
UNKNOWN_TO_THE_CHALLENGER = "student"
REQUESTS_PER_ARM = 10
FLOOD = 200
# Only the error rate is under test. The faulty challenger scores through predict_proba (its
# encoder is not the fast path's shape), slower than the champion: the latency guard is opened
# wide, so that only the error rate can roll it back.
RULES = ReleaseRules(
    min_requests=REQUESTS_PER_ARM,
    max_p99_latency_ratio=100.0,
    p99_latency_slack_ms=60_000.0,
    max_p50_latency_ratio=100.0,
    p50_latency_slack_ms=60_000.0,
)


@dataclass(frozen=True)
class Release:
    """An MLServer serving a champion and a challenger that fails on some valid input."""

    served: ServedMLServer
    registry: Registry
    challenger: str
    sound_rows: pd.DataFrame
    """Rows both models score."""
    failing_rows: pd.DataFrame
    """Valid rows the challenger fails on (a server fault: 500)."""


def _register_faulty(registry: Registry, features: pd.DataFrame, labels: Any) -> str:
    """Register a version whose encoder refuses the category it was fitted without."""
    pipeline = build_pipeline(ModelParams(C=0.01))
    categories = [
        [value for value in CATEGORICAL_VALUES[name] if value != UNKNOWN_TO_THE_CHALLENGER]
        for name in CATEGORICAL_FEATURES
    ]
    pipeline.set_params(
        preprocess__categorical__categories=categories,
        preprocess__categorical__handle_unknown="error",
    )
    known = (features["job"] != UNKNOWN_TO_THE_CHALLENGER).to_numpy()
    pipeline.fit(features[known], labels[known])
    run_id = registry.start_run("serving-tests")
    model_uri = registry.log_model(
        run_id, pipeline, features[known], {"feature_ranges": feature_ranges(features)}
    )
    version = registry.register(model_uri, run_id, tags={}).version
    registry.end_run(run_id, succeeded=True)
    return version


@pytest.fixture(scope="module")
def release(
    services_dir: Path,
    mlflow_tracking_uri: str,
    bank_sample: pd.DataFrame,
    mongodb: ServiceProcess,
) -> Iterator[Release]:
    """A registered model of this module's own, its two aliases served by an MLServer of its own."""
    name = f"telemarketing-evidence-{uuid.uuid4().hex[:8]}"
    registry = Registry(mlflow_tracking_uri, name, "serving-tests")
    features, labels = split_features_label(bank_sample)
    champion = register_version(registry, features, labels, ModelParams(C=1.0))
    challenger = _register_faulty(registry, features, labels)
    registry.set_alias(CHAMPION, champion)
    registry.set_alias(CHALLENGER, challenger)
    state = services_dir / "release-evidence"
    state.mkdir()
    served = mlserver_on_free_ports(
        state,
        mlflow_tracking_uri,
        mongodb.uri,  # type: ignore[attr-defined]
        "release_evidence_tests",
        registered_model=name,
    )
    student = features["job"] == UNKNOWN_TO_THE_CHALLENGER
    with served.process.running():
        yield Release(
            served, registry, challenger, features[~student].head(1), features[student].head(1)
        )


@pytest.fixture
def promotion(release: Release, tmp_path: Path) -> Iterator[Context]:
    """The promotion's context on the module's services; the challenger alias set again."""
    release.registry.set_alias(CHALLENGER, release.challenger)  # a rollback deletes it
    served = release.served
    settings = Settings(
        project=ProjectSettings(state_dir=tmp_path),
        mongodb=MongoSettings(uri=served.mongodb_uri, database=served.database),
        # The registry alone is what a rollback must change here: no reload of the server.
        serving=ServingSettings(
            url=served.rest_url,
            reload_on_release=False,
            control_token=SecretStr(served.control_token),
        ),
        mlflow=MlflowSettings(
            tracking_uri=release.registry.tracking_uri, model_name=release.registry.model_name
        ),
    )
    with Context(settings) as ctx:
        yield ctx


def _wait_for(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _send(served: ServedMLServer, model: str, body: dict[str, Any], times: int) -> list[int]:
    with httpx.Client(base_url=served.rest_url, timeout=30.0) as http:
        return [http.post(f"/v2/models/{model}/infer", json=body).status_code for _ in range(times)]


def _invalid_requests(rows: pd.DataFrame) -> list[dict[str, Any]]:
    """Requests the runtime refuses (400), each for another reason."""
    too_old = inference_request(rows.assign(age=[1000]))
    bad_route = inference_request(rows, route="champion")  # only "shadow" may be asked
    too_long_id = inference_request(rows, request_id="x" * 129)
    return [too_old, bad_route, too_long_id]


def _begin_release(served: ServedMLServer) -> RoutingConfig:
    """Begin a canary release once every count so far is stored (they form its baseline)."""
    with (
        ServingCounterStore(served.mongodb_uri, served.database) as counters,
        ReleaseStore(served.mongodb_uri, served.database) as releases,
    ):
        if served_counts(served.metrics_url):
            _wait_for(lambda: all_stored(counters, [served.metrics_url]), "the counts stored")
        return set_routing(releases, RoutingConfig(mode="canary", canary_weight=50.0), "tests")


def _judge(ctx: Context, served: ServedMLServer) -> dict[str, Any]:
    """Run the promotion once the counts sent are stored; return its recorded decision."""
    with (
        ServingCounterStore(served.mongodb_uri, served.database) as counters,
        ReleaseStore(served.mongodb_uri, served.database) as releases,
    ):
        _wait_for(lambda: all_stored(counters, [served.metrics_url]), "the counts stored")
        try:
            outcome = run_promotion(ctx, RULES, by="tests")
        finally:
            set_routing(releases, RoutingConfig(), "tests")
        decision = releases.latest_decisions(1)[0]
    assert decision["_id"] == outcome.decision_id, f"the decision should be recorded: {outcome}"
    return decision


def test_a_flood_of_invalid_requests_does_not_roll_the_challenger_back(
    release: Release, promotion: Context
) -> None:
    served = release.served
    good = inference_request(release.sound_rows)
    # given a canary release in which both arms answered every request sent to them
    _begin_release(served)
    assert _send(served, CHAMPION_MODEL, good, REQUESTS_PER_ARM) == [200] * REQUESTS_PER_ARM
    assert _send(served, CHALLENGER_MODEL, good, REQUESTS_PER_ARM) == [200] * REQUESTS_PER_ARM
    # when anyone who can reach MLServer floods the challenger with invalid requests
    statuses = [
        status
        for body in _invalid_requests(release.sound_rows)
        for status in _send(served, CHALLENGER_MODEL, body, FLOOD // 3)
    ]
    assert set(statuses) == {400}, f"every invalid request is refused: {set(statuses)}"
    # and the promotion judges the release
    decision = _judge(promotion, served)
    # then the challenger is not rolled back: nothing it is answerable for failed
    assert decision["action"] == "wait", f"the refusals must not roll it back: {decision}"
    challenger = decision["decision"]["challenger"]
    assert (challenger["requests"], challenger["errors"]) == (REQUESTS_PER_ARM, 0), (
        f"a refused request is neither the arm's request nor its failure: {challenger}"
    )
    assert challenger["refused"] == len(statuses), f"the refusals are on record: {challenger}"
    assert promotion.registry.alias_version(CHALLENGER) is not None, "the challenger stays"


def test_a_server_fault_rolls_the_challenger_back_however_many_invalid_requests_dilute_it(
    release: Release, promotion: Context
) -> None:
    served = release.served
    good = inference_request(release.sound_rows)
    failing = inference_request(release.failing_rows)
    # given a canary release in which both arms answered requests
    _begin_release(served)
    assert _send(served, CHAMPION_MODEL, good, REQUESTS_PER_ARM) == [200] * REQUESTS_PER_ARM
    assert _send(served, CHALLENGER_MODEL, good, REQUESTS_PER_ARM) == [200] * REQUESTS_PER_ARM
    # when the challenger fails two valid requests on its own fault
    assert _send(served, CHALLENGER_MODEL, failing, 2) == [500] * 2, "the model's own fault"
    # and a flood of invalid requests would dilute its failure rate below the limit
    statuses = [
        status
        for body in _invalid_requests(release.sound_rows)
        for status in _send(served, CHALLENGER_MODEL, body, FLOOD // 3)
    ]
    assert set(statuses) == {400}, f"every invalid request is refused: {set(statuses)}"
    # and the promotion judges the release
    decision = _judge(promotion, served)
    # then the challenger is rolled back on its error rate, the refusals left out of it
    assert decision["action"] == "rollback", f"the server's faults should count: {decision}"
    assert "error rate" in decision["reason"], decision["reason"]
    challenger = decision["decision"]["challenger"]
    assert (challenger["requests"], challenger["errors"]) == (REQUESTS_PER_ARM + 2, 2), (
        f"only the requests it accepted, and its own failures: {challenger}"
    )
    assert challenger["refused"] == len(statuses), f"the refusals are on record: {challenger}"
    assert promotion.registry.alias_version(CHALLENGER) is None, "a rollback ends the release"
