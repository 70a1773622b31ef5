"""Training, a promotion, a monitor run and a shadow release on the production backends: MLflow
and Prefect on PostgreSQL. Every check reads PostgreSQL's own tables, which stay empty if a
store fell back to SQLite."""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from pipelines.monitoring import monitor_telemarketing
from pipelines.promotion import promote_telemarketing
from pipelines.training import train_telemarketing
from prefect.states import State
from tests.integration.flows.test_training_flow import committed_params
from tests.integration.jobs.test_monitoring import log_window, params_file, recent_rows
from tests.integration.postgres.conftest import PostgresPlatform
from tests.integration.serving_fixtures import MAX_ROWS, register_version

from telescore.core.features import split_features_label
from telescore.core.outcomes import Outcome
from telescore.core.params import ModelParams
from telescore.core.routing import RoutingConfig
from telescore.io import orchestrator
from telescore.io.context import Context
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.io.registry import CHALLENGER, CHAMPION, PREVIOUS, Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient
from telescore.io.serving_counter_store import ServingCounterStore
from telescore.jobs.model_repository import (
    CHALLENGER_MODEL,
    CHAMPION_MODEL,
    ServerOptions,
    write_registry_repository,
)
from telescore.jobs.outcomes import record_outcomes
from telescore.jobs.releases import fleet_serving_counts, rollback_to_previous, set_routing
from telescore.jobs.scoring import ScoringService, read_routing
from telescore.services.mlserver import mlserver_process
from telescore.services.processes import ServiceProcess, free_port
from telescore.serving.options import RuntimeOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = {"data": {"sample_rows": 6000}, "split": {"holdout_rows": 1500}}


def run_flow(flow: Any, *args: Any, **kwargs: Any) -> tuple[dict[str, Any], str]:
    """Run a flow in this process; return its result and its flow run's id."""
    state: State = flow(*args, **kwargs, return_state=True)
    assert state.is_completed(), f"{flow.name} ended {state.name}: {state.message}"
    return state.result(), str(state.state_details.flow_run_id)


def flow_run_in_postgres(platform: PostgresPlatform, flow_run_id: str) -> tuple[Any, ...] | None:
    """(flow name, state type, deployment name or None) of a flow run, from Prefect's tables."""
    rows = platform.query(
        "prefect",
        "SELECT flow.name, flow_run.state_type, deployment.name FROM flow_run"
        " JOIN flow ON flow.id = flow_run.flow_id"
        " LEFT JOIN deployment ON deployment.id = flow_run.deployment_id"
        " WHERE flow_run.id = %s::uuid",
        flow_run_id,
    )
    return rows[0] if rows else None


def test_training_runs_and_a_promotion_are_stored_in_postgres(
    postgres_platform: PostgresPlatform,
    postgres_registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a fresh model name, when the training flow runs on a sample of the real data
    first, first_flow_run = run_flow(train_telemarketing, overrides=SAMPLE)
    # and a second training run is promoted over it (any candidate that passes the gates, made
    # champion at once: `release.mode: direct`)
    always = committed_params(
        tmp_path,
        monkeypatch,
        {"promotion": {"min_improvement": -1.0}, "release": {"mode": "direct"}},
    )
    second, second_flow_run = run_flow(train_telemarketing, params_file=always, overrides=SAMPLE)

    # then both were promoted, and the champion they replaced is kept as `previous`
    assert first["promoted"] and second["promoted"], (first["reason"], second["reason"])
    champion, previous = (postgres_registry.alias_version(a) for a in (CHAMPION, PREVIOUS))
    assert champion is not None and champion.version == second["version"], "champion not moved"
    assert previous is not None and previous.version == first["version"], "previous not kept"

    # and MLflow keeps the model, its versions, aliases and runs in PostgreSQL
    name = postgres_registry.model_name
    assert postgres_platform.query(
        "mlflow", "SELECT name FROM registered_models WHERE name = %s", name
    ) == [(name,)], "the registered model is not in PostgreSQL"
    versions = postgres_platform.query(
        "mlflow",
        "SELECT version, run_id FROM model_versions WHERE name = %s ORDER BY version",
        name,
    )
    assert versions == [
        (int(first["version"]), first["run_id"]),
        (int(second["version"]), second["run_id"]),
    ], f"the model versions in PostgreSQL are not the two trained ones: {versions}"
    aliases = dict(
        postgres_platform.query(
            "mlflow", "SELECT alias, version FROM registered_model_aliases WHERE name = %s", name
        )
    )
    assert aliases.get(CHAMPION) == int(second["version"]), f"champion alias: {aliases}"
    assert aliases.get(PREVIOUS) == int(first["version"]), f"previous alias: {aliases}"
    runs = postgres_platform.query(
        "mlflow",
        "SELECT runs.run_uuid, runs.status FROM runs"
        " JOIN experiments ON experiments.experiment_id = runs.experiment_id"
        " WHERE experiments.name = 'telemarketing-postgres' AND runs.run_uuid IN (%s, %s)",
        first["run_id"],
        second["run_id"],
    )
    assert sorted(runs) == sorted(
        [(first["run_id"], "FINISHED"), (second["run_id"], "FINISHED")]
    ), f"the training runs are not finished in PostgreSQL: {runs}"
    decision = postgres_platform.query(
        "mlflow",
        "SELECT value FROM tags WHERE run_uuid = %s AND key = 'promotion.decision'",
        second["run_id"],
    )
    assert decision == [("promoted",)], f"the promotion is not recorded on the run: {decision}"

    # and Prefect keeps both flow runs, completed, in PostgreSQL
    for flow_run_id in (first_flow_run, second_flow_run):
        found = flow_run_in_postgres(postgres_platform, flow_run_id)
        assert found == ("train-telemarketing", "COMPLETED", None), (
            f"flow run {flow_run_id} in PostgreSQL: {found}"
        )


@pytest.fixture(scope="module")
def postgres_deployments(postgres_platform: PostgresPlatform) -> str:
    """The project's deployments, registered on the PostgreSQL-backed Prefect server."""
    env = {
        "PREFECT_API_URL": postgres_platform.prefect_api_url,
        "TELESCORE_PROJECT_ROOT": str(ROOT),
        "TELESCORE_MONITOR_SCHEDULE": "FREQ=MINUTELY;INTERVAL=60",
        "TELESCORE_PROMOTION_SCHEDULE": "FREQ=MINUTELY;INTERVAL=60",
    }
    # No worker polls the pool: the training run the monitor triggers stays SCHEDULED.
    orchestrator.ensure_work_pool("telescore-process", env, ROOT)
    orchestrator.deploy_all(ROOT / "pipelines" / "prefect.yaml", env, ROOT)
    return postgres_platform.prefect_api_url


def test_a_monitor_run_triggers_training_through_the_postgres_backed_prefect(
    postgres_platform: PostgresPlatform,
    postgres_registry: Registry,
    postgres_deployments: str,
    mongodb: ServiceProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given the deployments, a champion, and a window whose euribor3m moved by +2 points
    platform = {
        "database": f"monitor_{uuid.uuid4().hex[:10]}",
        "uri": mongodb.uri,  # type: ignore[attr-defined]
        "state": tmp_path / "state",
    }
    monkeypatch.setenv("TELESCORE_MONGODB_URI", platform["uri"])
    monkeypatch.setenv("TELESCORE_MONGODB_DATABASE", platform["database"])
    monkeypatch.setenv("TELESCORE_STATE_DIR", str(platform["state"]))
    trained, _ = run_flow(train_telemarketing, overrides=SAMPLE)
    assert trained["promoted"], trained["reason"]
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    shifted = recent_rows(600).assign(euribor3m=lambda frame: frame["euribor3m"] + 2.0)
    log_window(platform, postgres_registry, shifted, start)

    # when the monitor runs on the window
    result, monitor_flow_run = run_flow(
        monitor_telemarketing, params_file(tmp_path), start, start + timedelta(hours=1)
    )

    # then it decided to retrain and triggered the training deployment
    assert result["retrain"] and result["training_flow_run_id"], result

    # and Prefect keeps, in PostgreSQL, the deployments, the monitor's completed run and the
    # training run it triggered, waiting for a worker
    deployments = postgres_platform.query(
        "prefect",
        "SELECT flow.name FROM deployment JOIN flow ON flow.id = deployment.flow_id"
        " ORDER BY flow.name",
    )
    assert deployments == [
        ("monitor-telemarketing",),
        ("promote-telemarketing",),
        ("train-telemarketing",),
    ], f"the deployments in PostgreSQL: {deployments}"
    assert flow_run_in_postgres(postgres_platform, monitor_flow_run) == (
        "monitor-telemarketing",
        "COMPLETED",
        None,
    ), "the monitor's flow run is not completed in PostgreSQL"
    assert flow_run_in_postgres(postgres_platform, result["training_flow_run_id"]) == (
        "train-telemarketing",
        "SCHEDULED",
        "default",
    ), "the triggered training run is not scheduled in PostgreSQL"

    # and the champion the monitor judged is the one MLflow keeps in PostgreSQL
    champion = postgres_registry.alias_version(CHAMPION)
    assert champion is not None and champion.version == trained["version"]
    assert postgres_platform.query(
        "mlflow",
        "SELECT version FROM registered_model_aliases WHERE name = %s AND alias = 'champion'",
        postgres_registry.model_name,
    ) == [(int(trained["version"]),)], "the champion alias is not in PostgreSQL"


# Small evidence, as in tests/integration/app/test_releases.py: a handful of requests, whose
# p99 is the slowest one. The latency guard has unit tests of its own; here it only stops a
# challenger that is ten times slower.
RELEASE_RULES = {
    "min_requests": 5,
    "min_labelled_rows": 150,
    "min_positives": 10,
    "min_negatives": 10,
    "max_p99_latency_ratio": 10.0,
}
RELEASE_ROWS = range(100, 700)
"""Rows of the bank sample scored during the release: one request of six batches per arm."""
HISTORY = ("poutcome", "pdays", "previous")
"""What earlier campaigns gave: the inputs the release's champion ignores."""


@dataclass(frozen=True)
class PostgresRelease:
    """Champion and challenger registered on the PostgreSQL-backed MLflow, served by MLServer."""

    champion: str
    challenger: str
    features: pd.DataFrame
    rest_url: str
    mongodb_uri: str
    database: str


@pytest.fixture
def postgres_release(
    postgres_platform: PostgresPlatform,
    postgres_registry: Registry,
    bank_sample: pd.DataFrame,
    mongodb: ServiceProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PostgresRelease]:
    """Two versions and an MLServer resolving their aliases on the PostgreSQL-backed MLflow.

    The champion is blind to the earlier campaigns' history: it ranks the release's rows
    measurably differently from the challenger (the session's C=1 and C=0.01 versions rank
    these 600 rows alike, and their release would wait for more outcomes).

    The model repository is the state folder's, where a promotion rewrites it before reloading
    MLServer; the settings the promotion reads point at this MLServer and this database.
    """
    features, labels = split_features_label(bank_sample)
    champion = register_version(
        postgres_registry, features, labels, ModelParams(ignore_features=HISTORY)
    )
    challenger = register_version(postgres_registry, features, labels, ModelParams(C=0.01))
    postgres_registry.set_alias(CHAMPION, champion)
    postgres_registry.set_alias(CHALLENGER, challenger)
    state = tmp_path / "state"
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    write_registry_repository(
        state / "mlserver",
        postgres_registry,
        ServerOptions(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port),
        # Rows ship at once, even while the machine is busy: the test waits for them.
        RuntimeOptions(max_rows=MAX_ROWS, journal_dir=state / "journal", ship_max_defer=0),
    )
    connection = {
        "TELESCORE_MONGODB_URI": mongodb.uri,  # type: ignore[attr-defined]
        "TELESCORE_MONGODB_DATABASE": f"release_{uuid.uuid4().hex[:10]}",
        # No developer's .env: the named file does not exist.
        "TELESCORE_ENV_FILE": str(tmp_path / "no.env"),
    }
    control_token = secrets.token_urlsafe(32)
    process = mlserver_process(
        state,
        state / "mlserver",
        http_port,
        grpc_port,
        metrics_port,
        postgres_platform.mlflow_uri,
        control_token=control_token,
        ready_models=[CHAMPION_MODEL, CHALLENGER_MODEL],
        env=connection,
    )
    rest_url = f"http://127.0.0.1:{http_port}"
    for variable, value in connection.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("TELESCORE_STATE_DIR", str(state))
    # No reconciler runs beside this MLServer: the promotion reloads it itself.
    monkeypatch.setenv("TELESCORE_SERVING_URL", rest_url)
    monkeypatch.setenv("TELESCORE_SERVING_RELOAD_ON_RELEASE", "true")
    monkeypatch.setenv("TELESCORE_SERVING_CONTROL_TOKEN", control_token)
    with process.running():
        yield PostgresRelease(
            champion=champion,
            challenger=challenger,
            features=features,
            rest_url=rest_url,
            mongodb_uri=connection["TELESCORE_MONGODB_URI"],
            database=connection["TELESCORE_MONGODB_DATABASE"],
        )


def aliases_in_postgres(platform: PostgresPlatform, name: str) -> dict[str, str]:
    """The registered model's aliases -> versions, from MLflow's table in PostgreSQL."""
    rows = platform.query(
        "mlflow", "SELECT alias, version FROM registered_model_aliases WHERE name = %s", name
    )
    return {alias: str(version) for alias, version in rows}


def test_a_shadow_release_is_promoted_and_rolled_back_in_the_postgres_backed_registry(
    postgres_platform: PostgresPlatform,
    postgres_registry: Registry,
    postgres_release: PostgresRelease,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = postgres_release
    name = postgres_registry.model_name
    rows = release.features.iloc[list(RELEASE_ROWS)].to_dict("records")
    keys = [f"P{n:05d}" for n in RELEASE_ROWS]
    with (
        ReleaseStore(release.mongodb_uri, release.database) as releases,
        ServingClient(release.rest_url, timeout=60.0) as serving,
    ):
        scoring = ScoringService(serving, releases, batch_rows=MAX_ROWS)
        try:
            # given a shadow release, warmed up (a model's first requests are slow, and the
            # latency guard would judge them), in which every row is shown the champion's score
            # and scored by the challenger too
            set_routing(releases, RoutingConfig(mode="shadow"), "tests")
            for _ in range(3):
                scoring.score(rows[:60], keys[:60])
            scoring.wait_for_shadow()
            began = set_routing(releases, RoutingConfig(mode="shadow"), "tests").updated_at
            assert began is not None, "a stored routing has a start"
            # (the evidence starts at the release's first whole second)
            while datetime.now(UTC) < began.replace(microsecond=0) + timedelta(seconds=1):
                time.sleep(0.01)
            shown = scoring.score(rows, keys)
            scoring.wait_for_shadow()
        finally:
            scoring.close()
        assert {each.route for each in shown} == {"champion"}, "shadow mode shows the champion"
        with PredictionStore(release.mongodb_uri, release.database) as predictions:
            shown_rows = wait_for(
                lambda: logged(predictions, {"_id": {"$in": [s.prediction_id for s in shown]}}),
                len(rows),
                "the champion's predictions to ship",
            )
            request_ids = sorted({row["request_id"] for row in shown_rows})
            shadows = wait_for(
                lambda: logged(
                    predictions, {"request_id": {"$in": request_ids}, "route": "shadow"}
                ),
                len(rows),
                "the challenger's shadow predictions to ship",
            )
        # and every request of both arms counted (each MLServer process stores its counts
        # about every second)
        batches = len(request_ids)
        with ServingCounterStore(release.mongodb_uri, release.database) as counters:
            wait_for(
                lambda: [
                    count
                    for count in (
                        fleet_serving_counts(counters, releases, read_routing(releases)).get(
                            model, (0, 0)
                        )[0]
                        for model in (CHAMPION_MODEL, CHALLENGER_MODEL)
                    )
                    if count >= batches
                ],
                2,
                "both arms' requests to be counted",
            )
    # and outcomes drawn from the challenger's ranking (seeded): the higher it ranks a
    # prospect, the likelier a subscription, from 5% to 65%
    by_row = {(each["request_id"], each["row"]): each["score"] for each in shadows}
    challenger_scores = np.array([by_row[(r["request_id"], r["row"])] for r in shown_rows])
    percentile = challenger_scores.argsort().argsort() / len(challenger_scores)
    subscribed = np.random.default_rng(7).random(len(percentile)) < 0.05 + 0.6 * percentile
    with OutcomeStore(release.mongodb_uri, release.database) as outcomes:
        record_outcomes(
            outcomes,
            [
                Outcome(prediction_id=row["_id"], subscribed=bool(label))
                for row, label in zip(shown_rows, subscribed, strict=True)
            ],
        )
    # In a state folder of the test's own: a run's params_file must lie in the project or there.
    monkeypatch.setenv("TELESCORE_STATE_DIR", str(tmp_path / "state"))
    params = tmp_path / "state" / "release-params.yaml"
    params.parent.mkdir(parents=True, exist_ok=True)
    params.write_text(yaml.safe_dump({"release": RELEASE_RULES}))

    # when the promotion flow judges the release
    outcome, promotion_flow_run = run_flow(promote_telemarketing, str(params))

    # then the challenger is promoted, and MLServer serves it as the champion at once
    assert outcome["action"] == "promote", outcome
    assert (outcome["champion"], outcome["challenger"]) == (
        release.champion,
        release.challenger,
    ), f"the promotion judged other versions: {outcome}"
    with ServingClient(release.rest_url) as serving:
        assert serving.served_version(CHAMPION_MODEL) == release.challenger, (
            "MLServer should serve the promoted version as the champion"
        )

    # and the aliases moved in PostgreSQL: champion -> previous, challenger -> champion
    assert aliases_in_postgres(postgres_platform, name) == {
        CHAMPION: release.challenger,
        PREVIOUS: release.champion,
    }, "the promotion's aliases are not in PostgreSQL's registered_model_aliases"

    # and Prefect keeps the promotion's completed flow run in PostgreSQL
    assert flow_run_in_postgres(postgres_platform, promotion_flow_run) == (
        "promote-telemarketing",
        "COMPLETED",
        None,
    ), "the promotion's flow run is not completed in PostgreSQL"

    # when the release is rolled back
    with Context.from_environment() as ctx:
        old, new = rollback_to_previous(ctx, "tests")

    # then the previous champion is the champion again, served at once
    assert (old, new) == (release.challenger, release.champion), "rolled back the wrong versions"
    with ServingClient(release.rest_url) as serving:
        assert serving.served_version(CHAMPION_MODEL) == release.champion, (
            "MLServer should serve the previous champion again"
        )

    # and PostgreSQL holds the swapped aliases and the rollback's tag on the rejected version
    assert aliases_in_postgres(postgres_platform, name) == {
        CHAMPION: release.champion,
        PREVIOUS: release.challenger,
    }, "the rollback's aliases are not in PostgreSQL's registered_model_aliases"
    tags = postgres_platform.query(
        "mlflow",
        "SELECT version, value FROM model_version_tags WHERE name = %s AND key = %s",
        name,
        "release.rolled_back_by",
    )
    assert tags == [(int(release.challenger), "tests")], (
        f"the rollback is not tagged on the version in PostgreSQL's model_version_tags: {tags}"
    )


def logged(predictions: PredictionStore, query: dict[str, Any]) -> list[dict[str, Any]]:
    """The shipped predictions matching `query`."""
    return list(predictions.collection.find(query))


def wait_for(read: Callable[[], list[Any]], count: int, what: str) -> list[Any]:
    """Poll `read` until it returns `count` items (shipping is asynchronous); return them."""
    deadline = time.monotonic() + 90.0
    while len(found := read()) != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {len(found)} of {count}")
        time.sleep(0.1)
    return found
