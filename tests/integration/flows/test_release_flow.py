"""A retrain ends in a shadow release, which live outcomes promote or roll back (real services).

The Prefect training flow, MLflow, nx-27017 and an MLServer serving this module's own model
name. The first champion is trained on older rows; a retrain on the newest rows passes the
offline gate, becomes `challenger` and starts a shadow release; the app's scoring service
scores prospects under it; outcomes are seeded; the promotion job decides.

The outcomes are simulated, seeded: each prospect subscribes with a probability that rises with
the rank one of the two models gave it (5% to 65%), so that model truly ranks better.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pipelines.training import train_telemarketing
from tests.integration.app.test_web_app import _wait_for
from tests.integration.serving_fixtures import DATASET, ServedMLServer, mlserver_on_free_ports

from telescore.core.outcomes import Outcome
from telescore.core.release import ReleaseRules
from telescore.core.routing import RoutingConfig
from telescore.core.schema import FEATURES
from telescore.io.context import Context
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.io.registry import CHALLENGER, CHAMPION, PREVIOUS, Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient
from telescore.io.serving_counter_store import ServingCounterStore
from telescore.jobs import serving
from telescore.jobs.model_repository import CHALLENGER_MODEL, CHAMPION_MODEL
from telescore.jobs.outcomes import record_outcomes
from telescore.jobs.releases import fleet_serving_counts, run_promotion, set_routing
from telescore.jobs.scoring import SERVED_MODELS, ScoringService, read_routing
from telescore.services.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
NEWEST = {
    "data": {"sample_rows": 12000},
    "split": {"holdout_rows": 3000},
    "release": {"mode": "shadow"},
}
"""The retrain's rows: the newest 12,000, the last 3,000 held out; released in the shadow
(the run asks for it: params.yaml releases directly)."""
OLDER_ROWS = slice(-20000, -8000)
"""The first champion's rows: 12,000 that end 8,000 rows before the newest."""
PROSPECTS = 1000
# Small evidence: 10 requests per arm, whose p99 is the slowest one, and a shadow call shares
# two busy cores with the next shown one (13 ms against 0.7 ms seen here). The latency guard
# has unit tests of its own; here it only stops a challenger slower by a fifth of a second.
RULES = ReleaseRules(
    min_requests=5,
    min_labelled_rows=150,
    min_positives=10,
    min_negatives=10,
    max_p99_latency_ratio=10.0,
    p99_latency_slack_ms=200.0,
)


@dataclass(frozen=True)
class ReleasePlatform:
    """This module's registry, database, state folder, MLServer and first champion."""

    registry: Registry
    mongodb_uri: str
    database: str
    mlserver: ServedMLServer
    first_champion: str


@pytest.fixture(scope="module")
def release_platform(
    prefect_harness: None,
    mlflow_tracking_uri: str,
    mongodb: ServiceProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ReleasePlatform]:
    """A first champion trained by the flow on older rows, served by an MLServer of its own."""
    folder = tmp_path_factory.mktemp("release-flow")
    state = folder / "state"
    state.mkdir()
    name = f"telemarketing-{uuid.uuid4().hex[:8]}"
    database = f"release_{uuid.uuid4().hex[:10]}"
    uri = mongodb.uri  # type: ignore[attr-defined]
    older = state / "older-rows.csv.gz"
    pd.read_csv(DATASET, sep=";").iloc[OLDER_ROWS].to_csv(older, sep=";", index=False)
    with pytest.MonkeyPatch.context() as env:
        for key, value in {
            "TELESCORE_MLFLOW_TRACKING_URI": mlflow_tracking_uri,
            "TELESCORE_MLFLOW_MODEL_NAME": name,
            "TELESCORE_MLFLOW_EXPERIMENT": "telemarketing-tests",
            "TELESCORE_MONGODB_URI": uri,
            "TELESCORE_MONGODB_DATABASE": database,
            "TELESCORE_STATE_DIR": str(state),
            "TELESCORE_ENV_FILE": str(folder / "no.env"),
        }.items():
            env.setenv(key, value)
        # The first model ever: champion at once, with nothing to compare it with (its holdout
        # starts a new month: the month drifts too, a committed params change allows it).
        older_params = {
            "data": {"path": str(older)},
            "validation": {"drifting_features_allowed": 6},
        }
        first = train_telemarketing(
            params_file=_params_file(state, older_params),
            overrides={"split": {"holdout_rows": 3000}},
        )
        assert first["promoted"] and not first["released"], first
        served = mlserver_on_free_ports(
            folder,
            mlflow_tracking_uri,
            uri,
            database,
            registered_model=name,
            # Where the release and the promotion rewrite it before reloading this MLServer.
            repository=state / "mlserver",
        )
        with served.process.running():
            env.setenv("TELESCORE_SERVING_URL", served.rest_url)
            env.setenv("TELESCORE_SERVING_CONTROL_TOKEN", served.control_token)
            yield ReleasePlatform(
                Registry(mlflow_tracking_uri, name, "telemarketing-tests"),
                uri,
                database,
                served,
                first["version"],
            )


@pytest.fixture
def platform(release_platform: ReleasePlatform) -> ReleasePlatform:
    """The module's platform with the first champion alone again, served, champion routing."""
    registry, first = release_platform.registry, release_platform.first_champion
    registry.set_alias(CHAMPION, first)
    registry.set_alias(CHALLENGER, first)
    with ReleaseStore(release_platform.mongodb_uri, release_platform.database) as store:
        set_routing(store, RoutingConfig(), "tests")
    with Context.from_environment() as ctx:
        serving.reload_serving(ctx)
    return release_platform


def _params_file(state: Path, changes: dict[str, dict[str, Any]]) -> str:
    """Write params.yaml with `changes` to the training section, in the state folder."""
    document = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in changes.items():
        document["training"][section] = document["training"].get(section, {}) | values
    path = state / f"params-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def _retrain_into_shadow(platform: ReleasePlatform) -> dict[str, Any]:
    """Run the training flow on the newest rows; check it ended in a shadow release."""
    result = train_telemarketing(overrides=NEWEST)
    registry, version = platform.registry, result["version"]
    assert result["released"] and result["release_mode"] == "shadow", result
    assert not result["promoted"], f"a retrained model must not be champion yet: {result}"
    assert registry.alias_version(CHAMPION).version == platform.first_champion  # type: ignore[union-attr]
    assert registry.alias_version(CHALLENGER).version == version, "the candidate is challenger"  # type: ignore[union-attr]
    with ReleaseStore(platform.mongodb_uri, platform.database) as store:
        routing = read_routing(store)
    assert (routing.mode, routing.updated_by) == ("shadow", "train-telemarketing"), routing
    with ServingClient(platform.mlserver.rest_url) as client:
        assert client.served_version(CHALLENGER_MODEL) == version, "the challenger is not served"
    return result


def _score_in_shadow(platform: ReleasePlatform) -> list[tuple[str, float, float]]:
    """Score prospects through the app's scoring service; return (id shown, champion, shadow)."""
    rows = pd.read_csv(DATASET, sep=";").tail(PROSPECTS).loc[:, list(FEATURES)]
    records = [{str(k): v for k, v in row.items()} for row in rows.to_dict("records")]
    keys = [f"P{n:05d}" for n in range(len(records))]
    mlserver = platform.mlserver
    with (
        ServingClient(mlserver.rest_url, timeout=60) as client,
        ReleaseStore(platform.mongodb_uri, platform.database) as releases,
        ScoringService(client, releases, batch_rows=mlserver.max_rows) as scoring,
    ):
        # Warmed up outside the release's evidence (no shadow pairs): a model's first requests
        # are slow, and the latency guard would judge them.
        for model in SERVED_MODELS.values():
            client.infer(records[:10], model=model)
        shown = scoring.score(records, keys, request_id=f"shadow-{uuid.uuid4().hex[:8]}")
        scoring.wait_for_shadow()
    assert {each.route for each in shown} == {"champion"}, "in the shadow, callers see the champion"
    with PredictionStore(platform.mongodb_uri, platform.database) as store:
        ids = [each.prediction_id for each in shown]
        logged = _wait_for(
            lambda: (
                (found := list(store.collection.find({"_id": {"$in": ids}})))
                and len(found) == len(ids)
                and found
            ),
            f"{len(ids)} champion predictions logged",
        )
        request_ids = sorted({row["request_id"] for row in logged})
        shadows = _wait_for(
            lambda: (
                (
                    found := list(
                        store.collection.find(
                            {"request_id": {"$in": request_ids}, "route": "shadow"}
                        )
                    )
                )
                and len(found) == len(ids)
                and found
            ),
            f"{len(ids)} shadow predictions logged",
        )
    by_row = {(each["request_id"], each["row"]): each["score"] for each in shadows}
    return [(row["_id"], row["score"], by_row[(row["request_id"], row["row"])]) for row in logged]


def _seed_outcomes(platform: ReleasePlatform, scored: list[Any], better: str) -> None:
    """Record outcomes drawn from the ranking of `better` (champion or challenger), seeded."""
    column = 1 if better == "champion" else 2
    ranking = np.array([each[column] for each in scored])
    percentile = ranking.argsort().argsort() / len(ranking)
    subscribed = np.random.default_rng(11).random(len(ranking)) < 0.05 + 0.6 * percentile
    outcomes = [
        Outcome(prediction_id=each[0], subscribed=bool(label))
        for each, label in zip(scored, subscribed, strict=True)
    ]
    with OutcomeStore(platform.mongodb_uri, platform.database) as store:
        record_outcomes(store, outcomes)
    # Every request of both arms counted (each MLServer process stores its counts about once a
    # second, later on a busy machine).
    with (
        ServingCounterStore(platform.mongodb_uri, platform.database) as counters,
        ReleaseStore(platform.mongodb_uri, platform.database) as releases,
    ):
        requests = PROSPECTS // platform.mlserver.max_rows

        def counted() -> bool:
            since = fleet_serving_counts(counters, releases, read_routing(releases))
            return all(since.get(model, (0, 0))[0] >= requests for model in SERVED_MODELS.values())

        _wait_for(counted, f"{requests} requests of each arm counted")


def test_a_retrain_released_in_the_shadow_is_promoted_on_live_outcomes(
    platform: ReleasePlatform,
) -> None:
    # given a champion trained on older rows, and a retrain on the newest rows that passes the
    # offline gate: it is challenger in a shadow release, served, the champion untouched
    retrained = _retrain_into_shadow(platform)
    # and a second retrain before the release was decided supersedes it: the newer candidate
    # is challenger, the older one tagged and recorded as superseded, the release restarted
    with ReleaseStore(platform.mongodb_uri, platform.database) as store:
        first_revision = read_routing(store).revision
    newer = _retrain_into_shadow(platform)
    assert newer["superseded"] == retrained["version"], newer
    registry = platform.registry
    older_tags = registry.version(retrained["version"]).tags
    assert older_tags.get("release.superseded_by") == newer["version"], older_tags
    with ReleaseStore(platform.mongodb_uri, platform.database) as store:
        superseded = store.latest_decisions(1)[0]
        restarted = read_routing(store)
    assert (superseded["action"], superseded["challenger_version"]) == (
        "superseded",
        retrained["version"],
    ), superseded
    assert restarted.revision is not None and restarted.revision > (first_revision or 0), (
        "the release must start again: the older challenger's evidence is not the newer one's"
    )
    # and prospects scored under the release, whose outcomes favour the challenger's ranking
    _seed_outcomes(platform, _score_in_shadow(platform), better="challenger")

    # when the promotion job judges the release
    with Context.from_environment() as ctx:
        outcome = run_promotion(ctx, RULES, by="tests")

    # then the retrained model is promoted on the paired evidence: champion moves, the old one
    # is `previous`, the release ends, and MLServer serves the new champion
    assert outcome.action == "promote", outcome
    assert (outcome.champion, outcome.challenger) == (platform.first_champion, newer["version"])
    assert registry.alias_version(CHAMPION).version == newer["version"]  # type: ignore[union-attr]
    assert registry.alias_version(PREVIOUS).version == platform.first_champion  # type: ignore[union-attr]
    assert registry.alias_version(CHALLENGER) is None, "a promotion ends the release"
    with ReleaseStore(platform.mongodb_uri, platform.database) as store:
        assert read_routing(store).mode == "champion", "a promotion routes to the champion only"
        decision = store.latest_decisions(1)[0]
    assert decision["action"] == "promote" and decision["decision"]["paired"] is True, decision
    with ServingClient(platform.mlserver.rest_url) as client:
        assert client.served_version(CHAMPION_MODEL) == newer["version"]


def test_a_retrain_released_in_the_shadow_is_rolled_back_when_outcomes_favour_the_champion(
    platform: ReleasePlatform,
) -> None:
    # given a retrain in a shadow release, and outcomes that favour the champion's ranking
    retrained = _retrain_into_shadow(platform)
    _seed_outcomes(platform, _score_in_shadow(platform), better="champion")

    # when the promotion job judges the release
    with Context.from_environment() as ctx:
        outcome = run_promotion(ctx, RULES, by="tests")

    # then the challenger is rolled back: the champion stays, the candidate is tagged rejected
    assert outcome.action == "rollback", outcome
    assert "significantly worse" in outcome.reason, outcome.reason
    registry = platform.registry
    assert registry.alias_version(CHAMPION).version == platform.first_champion  # type: ignore[union-attr]
    assert registry.alias_version(CHALLENGER) is None, "a rollback ends the release"
    assert "release.rejected" in registry.version(retrained["version"]).tags, "not tagged"
    with ReleaseStore(platform.mongodb_uri, platform.database) as store:
        assert read_routing(store).mode == "champion", "a rollback routes to the champion only"
    with ServingClient(platform.mlserver.rest_url) as client:
        assert client.served_version(CHAMPION_MODEL) == platform.first_champion
