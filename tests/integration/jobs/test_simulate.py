"""`telescore simulate` on a live platform: windows judged with labels in the Evidently workspace
the UI shows, a retrain the policy triggers, its shadow release judged by the promotion job.

The platform is the one `telescore up` starts (MLflow, Prefect and its worker, nx-27017, the web
app, the Evidently UI), on free ports under the test's folder, with MLServer and its
reconciler and a first champion trained on it. The simulation is run on it as on the live one,
with a tiny clock: three windows of 200 calls. Then a real browser opens the Evidently UI the
platform started and finds points in the quality panel.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pandas as pd
import pytest
import yaml
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils
from playwright.sync_api import expect, sync_playwright
from tests.integration.app.test_browser import CHROMIUM_ARGS, CHROMIUM_MISSING

from telescore.io import orchestrator
from telescore.io.context import Context
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs import platform, replay, simulate
from telescore.jobs import serving as deployment
from telescore.jobs.streaming import StreamClock
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


@dataclass(frozen=True)
class Simulated:
    """The platform after a simulation, and what the simulation returned."""

    ctx: Context
    result: simulate.SimulationResult


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
        with Context(replay.isolate(state)) as ctx:
            try:
                platform.bring_up(ctx, ROOT)
                deployment.start_serving(ctx, RuntimeOptions(ship_max_defer=0.0))
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
                # The first champion learns the calls before the slice, as the demo's does.
                trained_on, _, _ = simulate.write_inputs(config, ctx.state_dir)
                first = orchestrator.run_deployment(
                    orchestrator.TRAINING_DEPLOYMENT,
                    ctx.prefect_api,
                    {"params_file": str(trained_on)},
                )
                assert first["completed"], f"the first champion's training run: {first}"
                result = simulate.run_simulation(ctx, config)
                yield Simulated(ctx, result)
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
    assert {each["challenger_version"] for each in judged} == {retrain["version"]}, judged
    assert [each["release"] for each in result.windows] == [None] + [
        each["action"] for each in sorted(judged, key=lambda each: each["decided_at"])
    ], (result.windows, judged)
    # and each decision is on the dashboard's Releases tab, as a snapshot of its own
    snapshots = MonitoringWorkspace(ctx.state_dir / "evidently").snapshot_ids()
    assert len(snapshots) >= WINDOWS + len(judged), f"{len(snapshots)} snapshots"


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
