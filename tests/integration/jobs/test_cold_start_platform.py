"""Cold start on the whole local platform: no model passes, labels arrive, the monitor retrains,
the first model that passes is served, and nobody runs a command in between.

The platform is the one `telescore up` starts (MLflow, Prefect and its worker, nx-27017, the
web app), on free ports under the test's folder, and MLServer with its reconciler, started
before any model exists. The first training run, started by hand, has too few rows for the
data gate: it is recorded as a cold-start attempt. The app gives the call list unranked, and a
call recorded on one of its rows is a labelled row; calls made meanwhile are logged unscored
and their outcomes recorded; the monitor (run here, as its schedule would) triggers training
once enough new labels arrived since that attempt; the worker runs it; the reconciler serves
the new champion; the app ranks. Removing the champion's alias takes the platform back to "no
model serving", and the list back to unranked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pandas as pd
import pytest
import yaml
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from telescore.core.access import API_KEY_HEADER
from telescore.core.monitoring import Window
from telescore.core.outcomes import Outcome
from telescore.core.schema import FEATURES
from telescore.io import orchestrator
from telescore.io.access_store import AccessStore
from telescore.io.context import Context
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.params_files import load_monitoring_params
from telescore.io.prediction_store import PredictionStore
from telescore.io.prospect_store import ProspectStore
from telescore.io.registry import CHAMPION
from telescore.jobs import access, cold_start, monitoring, platform, reconciler, replay, streaming
from telescore.jobs import serving as deployment
from telescore.jobs.campaign import seed_prospects
from telescore.jobs.model_repository import CHAMPION_MODEL
from telescore.jobs.outcomes import record_outcomes
from telescore.serving.options import RuntimeOptions

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "data" / "bank-additional-full.csv.gz"
FIRST_ROWS = 1500
"""Fewer than the data gate's 2,000: the first training run fails it."""
NEW_LABELS = 800
"""The policy's `cold_start_min_new_labels`."""
T = TypeVar("T")


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """The platform is pointed at through this process's environment: put it back after."""
    saved = dict(os.environ)
    tracking, registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = tracking, registry
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def ctx(tmp_path: Path, restored_environment: None) -> Iterator[Context]:
    """The local platform on free ports, with MLServer and its reconciler and no model yet."""
    with Context(replay.isolate(tmp_path / "platform")) as opened:
        try:
            platform.bring_up(opened, ROOT)
            # The test plays the monitor's schedule, window by window.
            orchestrator.set_schedules_active(
                orchestrator.MONITOR_DEPLOYMENT, opened.prefect_api, active=False
            )
            deployment.start_serving(opened, RuntimeOptions(ship_max_defer=0.0))
            yield opened
        finally:
            platform.bring_down(opened)


def write_params(ctx: Context, rows: pd.DataFrame) -> Path:
    """Params in the state folder: the first rows as the base data, and the cold-start policy."""
    base = ctx.state_dir / "first-rows.csv"
    rows.to_csv(base, sep=";", index=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    training = params["training"]
    training["data"] |= {"path": str(base), "sample_rows": None}
    training["split"]["holdout_rows"] = 1000
    # The quality gates as shipped; the drift and sample-mix checks opened, since the test's
    # base rows and its new labels come from one short period, not from a campaign's months.
    training["validation"] |= {
        "max_auc_degradation": 1.0,
        "max_categorical_drift": 1.0,
        "max_numeric_drift": 100.0,
        "drifting_features_allowed": 19,
        "max_new_category_ratio": 1.0,
        "max_samples_mix": 1.0,
    }
    params["monitoring"]["policy"] |= {
        "cold_start_min_new_labels": NEW_LABELS,
        "cold_start_cooldown_windows": 1,
    }
    path = ctx.state_dir / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def call_unserved(ctx: Context, rows: pd.DataFrame) -> Window:
    """Make calls with no model serving: log them unscored, record their outcomes."""
    start = datetime.now(UTC).replace(microsecond=0)
    ids = cold_start.log_unserved(
        ctx.store(PredictionStore), rows.loc[:, list(FEATURES)].to_dict("records"), "test", "x"
    )
    results = record_outcomes(
        ctx.store(OutcomeStore),
        [
            Outcome(prediction_id=each, subscribed=label == "yes", source="test")
            for each, label in zip(ids, rows["y"], strict=True)
        ],
    )
    assert all(each.status == "recorded" for each in results), results[:3]
    return Window(start, start + timedelta(seconds=2))


def monitor(ctx: Context, params: Path, window: Window, work: Path) -> dict[str, Any]:
    """One monitor run on a window, as the deployment's task runs it; return its decision."""
    watcher = monitoring.open_monitor(ctx, load_monitoring_params(params), str(params))
    return monitoring.monitor_window(watcher, window, work).decision


def eventually(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Wait until `probe` returns something; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(0.5)


def listed(app: httpx.Client, *, ranked: bool, saying: str = "") -> dict[str, Any] | None:
    """Return the call list if it is `ranked` (or not) and its notice says `saying`.

    The app reads what MLServer serves at most every second, and the registry's reason for
    serving nothing at most every 10 s.
    """
    answer = app.get("/prospects")
    assert answer.status_code == 200, f"the call list is always given: {answer.text}"
    body: dict[str, Any] = answer.json()
    return body if body["ranked"] is ranked and saying in (body["notice"] or "") else None


# The whole platform starts, trains twice and serves: 9 minutes on a loaded 2-core machine,
# above the suite's 600 s default.
@pytest.mark.timeout(1500)
def test_a_cold_start_reaches_serving_with_no_person_in_between(
    ctx: Context, tmp_path: Path
) -> None:
    # The last calls of the dataset: a period where 2,000 rows teach a ranking (ROC AUC about
    # 0.75 on the next 1,000), so that the gates the test keeps are passed on merit.
    rows = pd.read_csv(DATA, sep=";").drop(columns=["duration"]).tail(FIRST_ROWS + 1500)
    params = write_params(ctx, rows.head(FIRST_ROWS))
    seed_prospects(ctx.store(ProspectStore), DATA, 200)
    key = access.create_api_key(ctx.store(AccessStore), "tests", "caller").key
    app = httpx.Client(
        base_url=f"http://{ctx.host}:{ctx.settings.api.port}",
        headers={API_KEY_HEADER: key},
        timeout=60,
    )
    client = ctx.serving_client(timeout=60.0)
    registry = ctx.registry

    # given a first training run whose rows are too few for the data gate
    first = orchestrator.run_deployment(
        orchestrator.TRAINING_DEPLOYMENT, ctx.prefect_api, {"params_file": str(params)}
    )
    assert not first["completed"], f"{FIRST_ROWS} rows should fail the data gate: {first}"
    # then no model is registered, MLServer serves none, and the app says so
    assert registry.alias_version(CHAMPION) is None, "a model that failed a gate was registered"
    assert reconciler.wait_reconciled(client, registry) == {}, "MLServer should serve nothing"
    refused = app.post("/prospects/score", json={"prospect_ids": ["P00001"]})
    assert refused.status_code == 503 and refused.headers.get("retry-after"), refused.text
    assert refused.json()["detail"].startswith("no model is serving yet"), refused.text
    # and the run started by hand is an attempt the monitor's policy counts, on 0 labels
    attempt = ctx.store(MonitoringStore).last_retrain()
    assert attempt is not None and attempt["manual"], f"the failed run is no attempt: {attempt}"
    assert attempt["state"]["labelled_rows_available"] == 0, attempt["state"]

    # when a caller opens the call list: it is given unranked, saying so and why
    unranked = listed(app, ranked=False, saying="no model is serving yet: prospects in ")
    assert unranked is not None and unranked["total"] == 200, unranked
    shown = unranked["prospects"][0]
    assert shown["score"] is None and shown["route"] == "unserved", shown
    # and records that the first prospect subscribed, citing the row's prediction
    call = app.post(
        f"/prospects/{shown['prospect_id']}/calls",
        json={"prediction_id": shown["prediction_id"], "result": "subscribed"},
    )
    # then its outcome is a labelled row the next training attempt reads
    assert call.status_code == 201 and call.json()["outcome_status"] == "recorded", call.text
    outcomes = ctx.store(OutcomeStore)
    labelled = outcomes.latest_labelled(outcomes.count())
    assert labelled["prediction_id"].tolist() == [shown["prediction_id"]], labelled
    assert labelled["y"].tolist() == ["yes"], "the call's outcome should be the row's label"

    # when calls are made and 500 outcomes recorded, and the monitor runs
    few = monitor(
        ctx, params, call_unserved(ctx, rows.iloc[FIRST_ROWS : FIRST_ROWS + 500]), tmp_path
    )
    # then it waits for more labels, saying how many it has since the attempt by hand
    assert not few["retrain"], few["reason"]
    assert "501 new labelled rows" in few["reason"] and str(NEW_LABELS) in few["reason"], few
    assert "started by hand, its run Failed, on 0 labelled rows" in few["reason"], few

    # when 1,000 more are recorded, and the monitor runs on the next window
    enough = monitor(ctx, params, call_unserved(ctx, rows.iloc[FIRST_ROWS + 500 :]), tmp_path)
    # then it triggers training on its own, which the worker runs and which passes the gates
    assert enough["retrain"] and enough.get("flow_run_id"), enough
    training = streaming.wait_training(ctx.prefect_api, enough["flow_run_id"])
    assert training["final"] and training["state"] == "Completed", training
    champion = registry.alias_version(CHAMPION)
    assert champion is not None, "the first model that passed should be champion"
    production = registry.version_tags(champion)["data_production_rows"]
    assert production == "1501", f"the new labels, the app's call included: {production}"

    # and MLServer's reconciler serves it, with no command: MLServer answers, the app ranks
    served = reconciler.wait_reconciled(client, registry)
    assert served[CHAMPION_MODEL].version == champion.version, served
    scored = client.infer(rows.head(3).loc[:, list(FEATURES)])
    assert scored.model_version == champion.version and len(scored.scores) == 3, scored
    ranked = eventually("the app ranks with the new champion", lambda: listed(app, ranked=True))
    rows = ranked["prospects"]
    assert rows and {each["model_version"] for each in rows} == {champion.version}, rows
    assert ranked["notice"] is None, ranked["notice"]

    # when the champion's alias is removed
    registry.delete_alias(CHAMPION)
    # then MLServer stops serving it and the app goes back to saying why
    assert reconciler.wait_reconciled(client, registry) == {}, "the removed champion answers"
    gone = eventually(
        "the app lists unranked, saying the champion is gone",
        lambda: listed(app, ranked=False, saying="no champion any more"),
    )
    assert {each["route"] for each in gone["prospects"]} == {"unserved"}, gone["prospects"][:2]
