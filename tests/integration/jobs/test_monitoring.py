"""The monitor end to end: logged predictions in nx-27017, the champion in MLflow, Evidently,
and the real deployments of pipelines/prefect.yaml on a Prefect test server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from pipelines.monitoring import monitor_telemarketing
from pipelines.training import train_telemarketing
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Failed, State
from tests.integration.flows.test_training_flow import committed_params
from tests.integration.serving_fixtures import register_version

from telescore.core.features import split_features_label
from telescore.core.outcomes import Outcome
from telescore.core.params import ModelParams
from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import ServedModel, prediction_records
from telescore.core.routing import RoutingConfig
from telescore.core.schema import FEATURES
from telescore.core.scoring import fit_logit_offset
from telescore.io import orchestrator
from telescore.io.datasets import read_snapshot
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.io.registry import CHALLENGER, CHAMPION, Registry
from telescore.io.release_store import ReleaseStore
from telescore.jobs.outcomes import Status, record_outcomes
from telescore.jobs.releases import set_routing
from telescore.services.embedded import mongodb_server
from telescore.services.processes import ServiceProcess, free_port
from telescore.validation.evidently_dashboards import MonitoringWorkspace

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "data" / "bank-additional-full.csv.gz"
SAMPLE = {"data": {"sample_rows": 6000}, "split": {"holdout_rows": 1500}}
WINDOW_ROWS = 600


@pytest.fixture(scope="module")
def deployments(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The project's deployments, registered from pipelines/prefect.yaml; returns the API URL."""
    api_url = str(PREFECT_API_URL.value())
    env = {
        "PREFECT_API_URL": api_url,
        "TELESCORE_PROJECT_ROOT": str(ROOT),
        "TELESCORE_MONITOR_SCHEDULE": "FREQ=MINUTELY;INTERVAL=60",
        "TELESCORE_PROMOTION_SCHEDULE": "FREQ=MINUTELY;INTERVAL=60",
    }
    # No worker polls the pool: a triggered training run stays SCHEDULED, which is what the
    # in-flight guard and the idempotency key must see.
    orchestrator.ensure_work_pool("telescore-process", env, ROOT)
    orchestrator.deploy_all(ROOT / "pipelines" / "prefect.yaml", env, ROOT)
    return api_url


@pytest.fixture
def platform(
    mongodb: ServiceProcess,
    registry: Registry,
    deployments: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """This test's own database and state folder, and a champion trained on a sample."""
    database = f"monitor_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("TELESCORE_MONGODB_URI", mongodb.uri)  # type: ignore[attr-defined]
    monkeypatch.setenv("TELESCORE_MONGODB_DATABASE", database)
    monkeypatch.setenv("TELESCORE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TELESCORE_PREFECT_API_URL", deployments)
    result = train_telemarketing(overrides=SAMPLE)
    assert result["promoted"], result["reason"]
    # Training runs triggered by earlier tests stay SCHEDULED (no worker): end them.
    for flow_run_id in training_runs(deployments):
        set_state(flow_run_id, Cancelled())
    uri = mongodb.uri  # type: ignore[attr-defined]
    return {"database": database, "uri": uri, "state": tmp_path / "state"}


def params_file(tmp_path: Path, **policy: Any) -> str:
    """A params file whose monitoring policy lets drift alone decide (the test's lever)."""
    monitoring = {
        "policy": {
            "min_window_rows": 100,
            "drift_counts_without_labels": True,
            "windows_considered": 1,
            "windows_required": 1,
            "min_training_labels": 0,
            **policy,
        },
        "lookback_windows": 4,
    }
    # In the state folder (the `platform` fixture's): a run's params_file must lie in the
    # project or the platform's state folder.
    (tmp_path / "state").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "state" / "params.yaml"
    base = yaml.safe_load((ROOT / "params.yaml").read_text())
    path.write_text(yaml.safe_dump(base | {"monitoring": monitoring}))
    return str(path)


def log_window(
    platform: dict[str, Any],
    registry: Registry,
    rows: pd.DataFrame,
    start: datetime,
    ids: list[str] | None = None,
) -> list[str]:
    """Score `rows` with the champion and log them as MLServer would, inside one window."""
    champion = registry.alias_version(CHAMPION)
    assert champion is not None
    features, _ = split_features_label(rows)
    scores = registry.load_model(champion).predict_proba(features)[:, 1]
    ids = ids or PredictionIds().new(len(rows))
    records = prediction_records(
        prediction_ids=ids,
        request_id="monitor-test",
        model=ServedModel(registry.model_name, champion.version, "champion"),
        rows=[{name: row[name] for name in FEATURES} for row in features.to_dict("records")],
        scores=scores.tolist(),
        latency_ms=0.1,
        out_of_range=[[] for _ in ids],
        timestamp=start + timedelta(minutes=5),
    )
    with PredictionStore(platform["uri"], platform["database"]) as store:
        assert store.insert(records).stored == len(records)
    return ids


def set_state(flow_run_id: str, state: State) -> None:
    """Move a flow run to `state`, as a worker would report it."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(flow_run_id), state, force=True)


def training_runs(api_url: str) -> list[str]:
    return orchestrator.runs_in_flight(orchestrator.TRAINING_DEPLOYMENT, api_url)


def recent_rows(count: int) -> pd.DataFrame:
    frame = pd.read_csv(DATA, sep=";").drop(columns=["duration"])
    return frame.tail(count).reset_index(drop=True)


def test_a_shifted_indicator_triggers_exactly_one_training_run_when_monitored_twice(
    platform: dict[str, Any], registry: Registry, deployments: str, tmp_path: Path
) -> None:
    # given a window whose euribor3m moved by +2 points from the champion's training rows
    shifted = recent_rows(WINDOW_ROWS).assign(euribor3m=lambda f: f["euribor3m"] + 2.0)
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    log_window(platform, registry, shifted, start)
    params = params_file(tmp_path)
    before = len(training_runs(deployments))

    # when the monitor runs on it twice (by hand, then by the schedule)
    first = monitor_telemarketing(params, start, start + timedelta(hours=1))
    second = monitor_telemarketing(params, start, start + timedelta(hours=1))

    # then the window is judged drifted, with euribor3m among the drifted inputs
    with MonitoringStore(platform["uri"], platform["database"]) as records:
        run = records.run(start.isoformat())
        decisions = list(records.decisions.find({}))
    assert run is not None and run["verdict"] == "drifted, unlabelled", run
    assert run["drift_euribor3m"] >= 0.1, f"euribor3m moved 2 points: {run['drift_euribor3m']}"
    # and exactly one training run was created, by the first decision
    assert first["retrain"] and first["training_flow_run_id"], first
    assert not second["retrain"], f"the second run must not retrain: {second['reason']}"
    assert len(training_runs(deployments)) == before + 1, "one window, one training run"
    assert len(decisions) == 2, "every decision is recorded, the refusal too"
    # and the window has one snapshot, however often it was evaluated
    workspace = MonitoringWorkspace(platform["state"] / "evidently")
    assert workspace.load_window(start) is not None, "the window's snapshot is missing"
    assert len(workspace.snapshot_ids()) == 1, "a re-run must replace the window's snapshot"


def test_unshifted_data_triggers_nothing(
    platform: dict[str, Any], registry: Registry, deployments: str, tmp_path: Path
) -> None:
    # given a window drawn from the champion's own training period
    same_period = recent_rows(6000).iloc[:3000].sample(WINDOW_ROWS, random_state=1)
    start = datetime(2026, 3, 2, 10, tzinfo=UTC)
    log_window(platform, registry, same_period, start)
    before = len(training_runs(deployments))

    # when the monitor runs on it
    result = monitor_telemarketing(params_file(tmp_path), start, start + timedelta(hours=1))

    # then no input drifted enough and no training run was created
    with MonitoringStore(platform["uri"], platform["database"]) as records:
        run = records.run(start.isoformat())
    assert run is not None and run["share_drifted_features"] < 0.5, run
    assert not result["retrain"], result["reason"]
    assert len(training_runs(deployments)) == before, "no drift, no training run"


def test_late_outcomes_add_the_older_windows_quality_dated_to_it(
    platform: dict[str, Any], registry: Registry, deployments: str, tmp_path: Path
) -> None:
    # given two windows monitored before any outcome arrived
    rows = recent_rows(6000).iloc[:3000]
    first_start = datetime(2026, 3, 3, 10, tzinfo=UTC)
    second_start = first_start + timedelta(hours=1)
    first_ids = log_window(platform, registry, rows.iloc[:WINDOW_ROWS], first_start)
    log_window(platform, registry, rows.iloc[WINDOW_ROWS : 2 * WINDOW_ROWS], second_start)
    params = params_file(tmp_path, drift_counts_without_labels=False)
    monitor_telemarketing(params, first_start, second_start)

    # when outcomes for the first window arrive, and the monitor runs on the second one
    labels = (rows.iloc[:WINDOW_ROWS]["y"] == "yes").tolist()
    with OutcomeStore(platform["uri"], platform["database"]) as outcomes:
        outcomes.record(
            [Outcome(prediction_id=i, subscribed=y) for i, y in zip(first_ids, labels, strict=True)]
        )
    result = monitor_telemarketing(params, second_start, second_start + timedelta(hours=1))

    # then the first window was evaluated again with its labels, and kept its own date
    assert any(entry.startswith(first_start.isoformat()) for entry in result["evaluated"]), result
    with MonitoringStore(platform["uri"], platform["database"]) as records:
        run = records.run(first_start.isoformat())
    assert run is not None and run["labelled_rows"] == WINDOW_ROWS, run
    assert abs(run["positive_rate"] - sum(labels) / len(labels)) < 1e-9, "joined to other rows"
    snapshot = MonitoringWorkspace(platform["state"] / "evidently").load_window(first_start)
    assert snapshot is not None, "the older window's snapshot is missing"


def test_outcomes_reported_before_their_predictions_were_logged_count_once_they_are(
    platform: dict[str, Any], registry: Registry, deployments: str, tmp_path: Path
) -> None:
    # given a window's outcomes reported at once, before a tenth of its predictions shipped,
    # and the window monitored then
    rows = recent_rows(6000).iloc[3000:4000]
    first_start = datetime(2026, 3, 5, 10, tzinfo=UTC)
    second_start = first_start + timedelta(hours=1)
    ids = PredictionIds().new(WINDOW_ROWS)
    shipped, late = ids[: WINDOW_ROWS - 60], ids[WINDOW_ROWS - 60 :]
    labels = (rows.iloc[:WINDOW_ROWS]["y"] == "yes").tolist()
    with OutcomeStore(platform["uri"], platform["database"]) as outcomes:
        reported = [
            Outcome(prediction_id=i, subscribed=y) for i, y in zip(ids, labels, strict=True)
        ]
        results = record_outcomes(outcomes, reported)
        assert {result.status for result in results} == {Status.PENDING}, "none logged yet"
    log_window(platform, registry, rows.iloc[: len(shipped)], first_start, shipped)
    log_window(platform, registry, rows.iloc[WINDOW_ROWS : 2 * WINDOW_ROWS], second_start)
    params = params_file(tmp_path, drift_counts_without_labels=False)
    monitor_telemarketing(params, first_start, second_start)
    with MonitoringStore(platform["uri"], platform["database"]) as records:
        run = records.run(first_start.isoformat())
    assert run is not None and run["labelled_rows"] == len(shipped), f"pending aside: {run}"

    # when the rest of the window ships, and the monitor runs on the next window
    log_window(platform, registry, rows.iloc[len(shipped) : WINDOW_ROWS], first_start, late)
    result = monitor_telemarketing(params, second_start, second_start + timedelta(hours=1))

    # then the first window was evaluated again with every label (joined late, arrived late)
    assert any(entry.startswith(first_start.isoformat()) for entry in result["evaluated"]), result
    with MonitoringStore(platform["uri"], platform["database"]) as records:
        run = records.run(first_start.isoformat())
    assert run is not None and run["labelled_rows"] == WINDOW_ROWS, f"all joined: {run}"
    with OutcomeStore(platform["uri"], platform["database"]) as outcomes:
        assert outcomes.count_pending() == 0, "the monitor's sweep confirmed them"


def test_a_retraining_run_links_the_exact_production_rows_it_used(
    platform: dict[str, Any], registry: Registry, tmp_path: Path
) -> None:
    # given labelled production rows (not among the base rows: the samples-mix gate would refuse)
    rows = recent_rows(12000).iloc[:2000]
    ids = log_window(platform, registry, rows, datetime(2026, 3, 4, 10, tzinfo=UTC))
    with OutcomeStore(platform["uri"], platform["database"]) as outcomes:
        outcomes.record(
            [
                Outcome(prediction_id=i, subscribed=y == "yes")
                for i, y in zip(ids, rows["y"], strict=True)
            ]
        )

    # when a training run adds them to the base rows, as the monitor's retraining does
    overrides = SAMPLE | {"data": {"sample_rows": 6000, "production": {"enabled": True}}}
    result = train_telemarketing(overrides=overrides, trigger={"by": "test", "window": "w"})

    # then the new version links the snapshot of exactly those rows, base and production
    version = registry.client.get_model_version(registry.model_name, result["version"])
    tags = version.tags
    assert tags["data_production_rows"] == str(len(rows)), tags
    assert tags["data_last_prediction_id"] == ids[-1], "the newest production row is named"
    assert tags["trigger_by"] == "test", "who asked for the run is kept on the version"
    snapshot = registry.download(tags["data_snapshot"], tmp_path / "snapshot")
    frame = read_snapshot(snapshot, tags["data_fingerprint"])  # raises if the rows differ
    assert len(frame) == 6000 + len(rows), "base rows plus every labelled production row"


def test_a_failed_training_run_is_recorded_and_the_champion_stays(
    platform: dict[str, Any], registry: Registry, deployments: str, tmp_path: Path
) -> None:
    # given a decision that triggered a training run, which then failed its validation
    shifted = recent_rows(WINDOW_ROWS).assign(euribor3m=lambda f: f["euribor3m"] + 2.0)
    start = datetime(2026, 3, 5, 10, tzinfo=UTC)
    log_window(platform, registry, shifted, start)
    params = params_file(tmp_path)
    triggered = monitor_telemarketing(params, start, start + timedelta(hours=1))
    assert triggered["training_flow_run_id"], triggered
    champion = registry.alias_version(CHAMPION)
    set_state(
        triggered["training_flow_run_id"],
        Failed(message="ValidationFailedError: deepchecks: FAILED"),
    )

    # when the monitor runs again
    next_start = start + timedelta(hours=1)
    log_window(platform, registry, shifted, next_start)
    monitor_telemarketing(params, next_start, next_start + timedelta(hours=1))

    # then the first decision records that training failed and the champion was kept
    with MonitoringStore(platform["uri"], platform["database"]) as records:
        decision = records.decisions.find_one({"_id": triggered["decision_id"]})
    assert decision is not None and decision["training"]["state"] == "Failed", decision
    summary = decision["training"]["summary"]
    assert f"champion {champion.version} kept" in summary and "deepchecks" in summary, summary
    assert registry.alias_version(CHAMPION) == champion, "a failed run must not move champion"


def test_mongodb_down_fails_the_run_visibly_and_decides_nothing(
    registry: Registry, deployments: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a champion, and a MongoDB that is stopped before the monitor runs
    port = free_port()
    server = mongodb_server(tmp_path / "mongo", port)
    uri = f"mongodb://127.0.0.1:{port}"
    with server.running():
        pass  # started, then stopped: nothing answers on its port now
    monkeypatch.setenv("TELESCORE_MONGODB_URI", uri)
    monkeypatch.setenv("TELESCORE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("TELESCORE_PREFECT_API_URL", deployments)
    train_telemarketing(overrides=SAMPLE)
    start = datetime(2026, 3, 6, 10, tzinfo=UTC)

    # when the monitor runs, its task retried by Prefect
    state = monitor_telemarketing(
        params_file(tmp_path), start, start + timedelta(hours=1), return_state=True
    )

    # then the run failed, after its retries, and no decision or snapshot was written
    assert state.is_failed(), f"the run must fail visibly, not {state.name}"
    assert "ServerSelectionTimeoutError" in str(state.message), state.message
    with server.running(), MonitoringStore(uri, "telescore") as records:
        assert records.decisions.count_documents({}) == 0, "a decision on partial data"
        assert records.runs.count_documents({}) == 0, "figures of a window never read"


def test_a_calibrated_champion_gets_its_offset_refitted_and_recorded(
    platform: dict[str, Any], registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a champion trained with calibration on (every candidate that passes the gates made
    # champion at once: a committed params change, since a run cannot relax a guard), and a
    # window of 600 predictions whose outcomes are all known
    always = committed_params(
        platform["state"],
        monkeypatch,
        {"promotion": {"min_improvement": -1.0}, "release": {"mode": "direct"}},
    )
    calibrated = SAMPLE | {"calibration": {"enabled": True, "rows": 600, "min_rows": 200}}
    trained = train_telemarketing(params_file=always, overrides=calibrated)
    assert trained["promoted"], trained["reason"]
    champion = registry.alias_version(CHAMPION)
    assert champion is not None and champion.version == trained["version"]
    tags = registry.version_tags(champion)
    assert tags["logit_offset_rows"] == "600", "an offset is fitted at registration"
    rows = recent_rows(12000).iloc[:WINDOW_ROWS]
    start = datetime(2026, 3, 7, 10, tzinfo=UTC)
    ids = log_window(platform, registry, rows, start)
    labels = (rows["y"] == "yes").to_numpy()
    with OutcomeStore(platform["uri"], platform["database"]) as outcomes:
        outcomes.record(
            [Outcome(prediction_id=i, subscribed=bool(y)) for i, y in zip(ids, labels, strict=True)]
        )

    # when the monitor runs on the window (no MLServer serves this test's state folder)
    result = monitor_telemarketing(params_file(tmp_path), start, start + timedelta(hours=1))

    # then it refitted the offset on those rows, rescored by the champion, and recorded it
    features, _ = split_features_label(rows)
    scores = registry.load_model(champion).predict_proba(features)[:, 1]
    expected = fit_logit_offset(scores, labels, max_offset=4.0)
    with MonitoringStore(platform["uri"], platform["database"]) as records:
        decision = records.decisions.find_one({"_id": result["decision_id"]})
        run = records.run(start.isoformat())
    assert decision is not None and run is not None
    recalibration = decision["recalibration"]
    assert recalibration["offset"] == pytest.approx(expected, abs=1e-9), recalibration
    assert recalibration["rows"] == WINDOW_ROWS and recalibration["version"] == champion.version
    assert recalibration["mean_served_score"] == pytest.approx(labels.mean(), abs=1e-9)
    assert recalibration["served"] is False, "nothing is served from this state folder"
    refit = registry.version_tags(champion).get("logit_offset_recalibrated")
    assert refit is not None and float(refit) == pytest.approx(expected, abs=1e-9), (
        "the refitted offset must be in the registry, where every MLServer's reconciler reads it"
    )
    assert run["recalibration"] == recalibration, "the window records the offset fitted after it"


def test_a_release_under_way_holds_the_retrain_until_it_is_decided(
    platform: dict[str, Any], registry: Registry, deployments: str, tmp_path: Path
) -> None:
    # given a challenger in a shadow release, and a window that asks for a retrain (drift)
    rows = recent_rows(3000)
    features, labels = split_features_label(rows)
    challenger = register_version(registry, features, labels, ModelParams(C=1.0))
    registry.set_alias(CHALLENGER, challenger)
    with ReleaseStore(platform["uri"], platform["database"]) as releases:
        set_routing(releases, RoutingConfig(mode="shadow"), by="test")
    shifted = recent_rows(WINDOW_ROWS).assign(euribor3m=lambda f: f["euribor3m"] + 2.0)
    start = datetime(2026, 3, 4, 10, tzinfo=UTC)
    log_window(platform, registry, shifted, start)
    params = params_file(tmp_path)  # retrain_during_release: hold, the default
    before = len(training_runs(deployments))

    # when the monitor runs during the release, then again once the routing is champion only
    held = monitor_telemarketing(params, start, start + timedelta(hours=1))
    with ReleaseStore(platform["uri"], platform["database"]) as releases:
        set_routing(releases, RoutingConfig(mode="champion"), by="test")
    after = monitor_telemarketing(params, start, start + timedelta(hours=1))

    # then the retrain is held, with the reason and the challenger recorded, and runs after
    assert not held["retrain"], f"a release under way holds the retrain: {held['reason']}"
    assert f"release under way: challenger {challenger}" in held["reason"], held["reason"]
    with MonitoringStore(platform["uri"], platform["database"]) as records:
        recorded = records.decisions.find_one({"_id": held["decision_id"]})
    assert recorded is not None, "the held decision is recorded"
    assert recorded["state"]["release_under_way"] == challenger, recorded["state"]
    assert after["retrain"] and after["training_flow_run_id"], after["reason"]
    assert len(training_runs(deployments)) == before + 1, "one training run, after the release"
