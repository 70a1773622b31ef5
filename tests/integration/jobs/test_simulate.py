"""`telescore simulate` on a live platform: windows judged with labels in the Evidently workspace
the UI shows, a retrain the policy triggers, its shadow release judged by the promotion job.

The platform is the one `telescore demo` starts, in its order (MLflow, Prefect and its worker,
nx-27017, the web app, the Evidently UI; a first champion trained; MLServer and its reconciler;
then Prometheus, Alertmanager and the local alert receiver), on free ports under the test's
folder. The simulation is run on it as on the live one, with a tiny clock: three windows of
200 calls. Then a real browser opens the Evidently UI the platform started and finds points in
the quality panel, and the demo's outage drill stops MLServer until MLServerDown is delivered.
Prometheus scrapes and evaluates every 2 s and every rule holds 20 s (not the shipped 1 min),
so that the drill takes seconds and a start-up that left MLServer unscraped for 20 s (the
first training run takes longer) would page.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pandas as pd
import pytest
import yaml
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils
from playwright.sync_api import expect, sync_playwright
from tests.integration.app.test_browser import CHROMIUM_ARGS, CHROMIUM_MISSING

from telescore.io import orchestrator
from telescore.io.alert_log import AlertLog, alert_log_path
from telescore.io.context import Context
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs import demo, platform, replay, simulate
from telescore.jobs import serving as deployment
from telescore.jobs.streaming import StreamClock
from telescore.services import prometheus as alerting
from telescore.serving.options import RuntimeOptions
from telescore.validation.evidently_dashboards import (
    PROJECT_ID,
    MonitoringWorkspace,
    window_snapshot_id,
)

# Bringing the platform up, two training runs and the simulation: 4 minutes on two idle
# cores, three times that on a loaded machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(1800)]

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "data" / "bank-additional-full.csv.gz"
BASE_ROWS, WINDOWS, WINDOW_ROWS, LABEL_DELAY = 3000, 3, 200, 20
STREAMED: Final = WINDOWS * WINDOW_ROWS
RULE_FOR: Final = "20s"
"""Every alert rule's `for:` in the test's Prometheus."""
FAST_MONITORING: Final = {
    "TELESCORE_PROMETHEUS_SCRAPE_INTERVAL": "2s",
    "TELESCORE_PROMETHEUS_EVALUATION_INTERVAL": "2s",
    "TELESCORE_ALERTMANAGER_GROUP_WAIT": "1s",
}


@dataclass(frozen=True)
class Simulated:
    """The platform after a simulation, and what the simulation returned."""

    ctx: Context
    result: simulate.SimulationResult
    monitored_after_bring_up: bool
    """Whether Prometheus ran once `bring_up` returned (it should wait for MLServer)."""
    alerts_before_drill: list[dict[str, Any]]
    """What the local receiver logged from start-up to the end of the simulation."""


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """The last calls of the dataset, and params.yaml with a policy that acts in three windows.

    Returns the data file (3,000 calls to learn from, then the 600 streamed) and the params.
    The test's clock is far shorter than the demo's: the policy retrains on a schedule after
    the first judged window, and every candidate that passes the gates is released, so that a
    retrain and a release happen in three windows of 200 calls.
    """
    data = folder / "calls.csv"
    # The last calls of the dataset: 3,000 teach a ranking the gates accept.
    pd.read_csv(DATA, sep=";").tail(BASE_ROWS + STREAMED).to_csv(data, sep=";", index=False)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    training = params["training"]
    training["split"]["holdout_rows"] = 1000
    # The quality gates as shipped; the drift and sample-mix checks opened: the base rows and
    # the streamed ones are one short period, not a campaign's months.
    training["validation"] |= {
        "max_auc_degradation": 1.0,
        "max_categorical_drift": 1.0,
        "max_numeric_drift": 100.0,
        "drifting_features_allowed": 19,
        "max_new_category_ratio": 1.0,
        "max_samples_mix": 1.0,
    }
    training["promotion"]["min_improvement"] = -1.0
    params["monitoring"]["policy"] |= {
        "min_window_rows": 100,
        "min_labelled_rows": 100,
        "windows_considered": 1,
        "retrain_on_degraded": False,
        "retrain_every_windows": 1,
        "cooldown_windows": WINDOWS,
        "min_training_labels": 150,
    }
    written = folder / "params.yaml"
    written.write_text(yaml.safe_dump(params, sort_keys=False))
    return data, written


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulated]:
    """A live platform with a first champion, after a three-window simulation on it."""
    saved = dict(os.environ)
    tracking, registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    state = tmp_path_factory.mktemp("simulate") / "platform"
    try:
        os.environ.update(FAST_MONITORING)
        with Context(replay.isolate(state)) as ctx:
            try:
                platform.bring_up(ctx, ROOT)
                prometheus = next(
                    each
                    for each in platform.monitoring_servers(ctx, ROOT)
                    if each.name == "prometheus"
                )
                monitored_after_bring_up = platform.is_running(ctx, prometheus)
                data, params = write_inputs(ctx.state_dir)
                config = simulate.SimulationConfig(
                    data=data,
                    params=params,
                    windows=WINDOWS,
                    start_row=BASE_ROWS,
                    clock=StreamClock(
                        window_rows=WINDOW_ROWS, label_delay_rows=LABEL_DELAY, request_rows=4
                    ),
                )
                # The first champion learns the calls before the slice, as the demo's does, and
                # before MLServer starts, as in the demo: tens of seconds with nothing served.
                trained_on, _, _ = simulate.write_inputs(config, ctx.state_dir)
                first = orchestrator.run_deployment(
                    orchestrator.TRAINING_DEPLOYMENT,
                    ctx.prefect_api,
                    {"params_file": str(trained_on)},
                )
                assert first["completed"], f"the first champion's training run: {first}"
                deployment.start_serving(ctx, RuntimeOptions(ship_max_defer=0.0))
                started = platform.start_monitoring(ctx, ROOT, rule_for=RULE_FOR)
                assert prometheus.name in started, f"Prometheus should start now: {started}"
                result = simulate.run_simulation(ctx, config)
                log = AlertLog(alert_log_path(ctx.state_dir))
                yield Simulated(ctx, result, monitored_after_bring_up, log.latest(500))
            finally:
                platform.bring_down(ctx)
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = tracking, registry
        os.environ.clear()
        os.environ.update(saved)


def test_the_simulation_fills_the_live_workspace_with_judged_windows(
    simulated: Simulated,
) -> None:
    # given a simulation of three windows on the live platform
    ctx, result = simulated.ctx, simulated.result
    # then it streamed the slice it was given, every window served and monitored
    assert result.rows == (BASE_ROWS, BASE_ROWS + STREAMED), result.rows
    assert [each["window"] for each in result.windows] == list(range(WINDOWS)), result.windows
    assert result.unserved_windows == [], "the champion should serve every window"
    # and the monitor judged each window on its labels, in the platform's records
    runs = list(ctx.store(MonitoringStore).runs.find({}))
    labelled = [each for each in runs if (each.get("labelled_rows") or 0) >= 100]
    assert len(labelled) >= WINDOWS, f"windows judged with labels: {runs}"
    # and the Evidently workspace the platform's UI serves holds each window's snapshot, with
    # its ROC AUC on the labelled rows
    workspace = MonitoringWorkspace(ctx.state_dir / "evidently")
    for run in labelled:
        assert run.get("roc_auc") is not None, f"no ROC AUC recorded for {run['_id']}"
        snapshot = workspace.load_window(run["window_start"])
        assert snapshot is not None, f"no snapshot for {run['_id']}"
        assert window_snapshot_id(run["window_start"]) in workspace.snapshot_ids(), run["_id"]
        assert "roc_auc" in str(snapshot.metric_results), f"no ROC AUC in {run['_id']}"


def test_the_policy_retrains_and_the_promotion_judges_its_shadow_release(
    simulated: Simulated,
) -> None:
    # given a simulation whose policy retrains after the first judged window
    ctx, result = simulated.ctx, simulated.result
    # then the monitor triggered one training run, on the live worker, that was released
    assert [each["window"] for each in result.retrains] == [0], result.retrains
    retrain = result.retrains[0]
    assert retrain["state"] == "Completed", retrain
    assert retrain["released"] == "shadow", f"the default release mode is shadow: {retrain}"
    state = orchestrator.flow_run_state(retrain["flow_run_id"], ctx.prefect_api)
    assert state["state"] == "Completed", f"Prefect knows the run: {state}"
    # and the promotion job judged that release after each later window, recorded for the app
    # (the platform's own schedule may have judged it too: only the simulation's are compared)
    judged = [
        each
        for each in ctx.store(ReleaseStore).latest_decisions(20)
        if each.get("decided_by") == simulate.SOURCE
    ]
    assert judged, "no release decision recorded"
    assert {"promote", "rollback"} & {each["action"] for each in judged}, (
        f"the shadow release should be promoted or rolled back within the windows: {judged}"
    )
    assert {each["challenger_version"] for each in judged} == {retrain["version"]}, judged
    assert [each["release"] for each in result.windows] == [None] + [
        each["action"] for each in sorted(judged, key=lambda each: each["decided_at"])
    ], (result.windows, judged)
    # and each decision is on the dashboard's Releases tab, as a snapshot of its own
    snapshots = MonitoringWorkspace(ctx.state_dir / "evidently").snapshot_ids()
    assert len(snapshots) >= WINDOWS + len(judged), f"{len(snapshots)} snapshots"


def test_a_normal_start_up_pages_nobody(simulated: Simulated) -> None:
    # given the platform brought up in the demo's order: the services, a first training run
    # with nothing served, MLServer, then Prometheus (every rule holding 20 s, not 1 min)
    # then Prometheus was not running while nothing served
    assert not simulated.monitored_after_bring_up, (
        "bring_up should leave Prometheus to start_monitoring, once MLServer serves"
    )
    # and no alert on MLServer was delivered from the start-up to the simulation's end
    down = [
        each for each in simulated.alerts_before_drill if each["alertname"] == demo.OUTAGE_ALERT
    ]
    assert down == [], f"a normal start-up should not page {demo.OUTAGE_ALERT}: {down}"


def test_the_evidently_ui_shows_points_in_the_quality_panel(simulated: Simulated) -> None:
    # given the Evidently UI the platform started, after the simulation (Evidently 0.7 shows
    # every panel of the project's dashboard on one page)
    executable = shutil.which("chromium")
    assert executable is not None, CHROMIUM_MISSING
    ctx = simulated.ctx
    url = f"http://{ctx.host}:{ctx.settings.evidently.port}/projects/{PROJECT_ID}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # when a newcomer opens the project's dashboard
            page.goto(url, timeout=60_000)
            heading = page.get_by_role("heading", name="Ranking quality")
            expect(heading).to_be_visible(timeout=60_000)
            # then the ranking-quality panel plots a point per judged window, per figure (ROC
            # AUC, top-decile precision): MUI X Charts draws each point as a circle
            panel = page.locator(".MuiCard-root", has=heading)
            points = panel.locator("svg circle")
            expect(points.first).to_be_attached(timeout=30_000)
            assert points.count() >= 2 * WINDOWS, f"{points.count()} points in the quality panel"
        finally:
            browser.close()


def test_the_outage_drill_delivers_mlserver_down_and_serving_resumes(
    simulated: Simulated,
) -> None:
    # given the platform after the simulation, MLServer serving, Prometheus watching it
    ctx = simulated.ctx
    assert alerting.missing_commands() is None, "Prometheus and Alertmanager must be installed"
    waited: list[float] = []
    # when the demo's outage drill stops MLServer until the alert is delivered
    drill = demo.outage_drill(ctx, DATA, progress=waited.append, timeout=180.0)
    # then it stopped the MLServer the platform started, and the local receiver got the alert,
    # firing, as the app's ops view and `telescore alerts` read it
    assert drill.stopped, "an MLServer should have been running and been stopped"
    assert drill.alert["alertname"] == demo.OUTAGE_ALERT, drill.alert
    assert drill.alert["status"] == "firing", drill.alert
    assert drill.alert["severity"] == "critical", f"MLServerDown pages: {drill.alert}"
    logged = AlertLog(alert_log_path(ctx.state_dir)).latest(50)
    assert any(each["alertname"] == demo.OUTAGE_ALERT for each in logged), logged
    assert waited, "the wait should report its progress while the rule holds"
    # and MLServer serves the champion again: the sample was ranked after the restart
    assert len(drill.sample.scores.scores) == demo.SAMPLE_ROWS, drill.sample.scores
    assert drill.sample.scores.model_name, "a served model should have scored the sample"
