"""Training, a promotion and a monitor run on the production backends: MLflow and Prefect on
PostgreSQL. Every check reads PostgreSQL's own tables, which stay empty if a store fell back
to SQLite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pipelines.monitoring import monitor_telemarketing
from pipelines.training import train_telemarketing
from prefect.states import State
from tests.integration.jobs.test_monitoring import log_window, params_file, recent_rows
from tests.integration.postgres.conftest import PostgresPlatform

from telescore.io import orchestrator
from telescore.io.registry import CHAMPION, PREVIOUS, Registry
from telescore.services.processes import ServiceProcess

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
    postgres_platform: PostgresPlatform, postgres_registry: Registry
) -> None:
    # given a fresh model name, when the training flow runs on a sample of the real data
    first, first_flow_run = run_flow(train_telemarketing, overrides=SAMPLE)
    # and a second training run is promoted over it (any candidate beats the champion)
    second, second_flow_run = run_flow(
        train_telemarketing, overrides=SAMPLE | {"promotion": {"min_improvement": -1.0}}
    )

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
