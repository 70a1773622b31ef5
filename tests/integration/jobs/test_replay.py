"""`telescore replay` on a slice, end to end: its own platform, MLServer, the monitor, outcomes,
a retrain released in the shadow and judged by the promotion job between windows."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from telescore.io.context import Context
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs import platform, replay

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
FIRST_ROWS, STREAMED, WINDOW = 8237, 3000, 1000


@pytest.fixture
def restored_environment() -> Iterator[None]:
    """The replay points this process at its own services: put the environment back after.

    MLflow keeps its URIs in module globals as well as in the environment; they are put back
    as they were, unset included (setting them to what the getters report would pin a
    default that later tests expect to come from MLFLOW_TRACKING_URI).
    """
    saved = dict(os.environ)
    tracking, registry = tracking_utils._tracking_uri, registry_utils._registry_uri
    try:
        yield
    finally:
        tracking_utils._tracking_uri, registry_utils._registry_uri = tracking, registry
        os.environ.clear()
        os.environ.update(saved)


def test_a_replay_on_a_slice_scores_monitors_releases_and_reports(
    tmp_path: Path, restored_environment: None
) -> None:
    # given the earliest rows of the real data and a replay config for a three-window slice,
    # with params.yaml releasing in the shadow, its retrain asked after every window (params.yaml
    # asks every 3rd): once, after the second, when 1,500 outcomes are in (1,000 needed)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["training"]["release"]["mode"] = "shadow"
    params["monitoring"]["policy"]["retrain_every_windows"] = 1
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    config = replay.ReplayConfig(
        data=ROOT / "data" / "bank-additional-full.csv.gz",
        params=params_file,
        rows=FIRST_ROWS + STREAMED,
        first_rows=FIRST_ROWS,
        window_rows=WINDOW,
        label_delay_rows=500,
    )
    steps: list[str] = []
    try:
        # when it runs
        result = replay.run_replay(
            config, tmp_path / "replay", ROOT, lambda what, *_: steps.append(what)
        )
        # (the replay pointed this process's environment at its own platform)
        with Context.from_environment() as ctx:
            outcomes, records = ctx.store(OutcomeStore), ctx.store(MonitoringStore)
            predictions = outcomes.predictions.count_documents({"route": "champion"})
            shadows = outcomes.predictions.count_documents({"route": "shadow"})
            reported = outcomes.count()
            windows = records.runs.count_documents({})
            decisions = records.decisions.count_documents({})
            judged = ctx.store(ReleaseStore).latest_decisions(10)
    finally:
        with Context.from_environment() as ctx:
            platform.bring_down(ctx)

    # then every streamed row was shown the champion's score and logged, and outcomes came late
    assert predictions == STREAMED, f"{predictions} of {STREAMED} replayed rows were logged"
    assert reported == STREAMED - 500, f"outcomes lag 500 rows behind: {reported} reported"
    # and the monitor evaluated each window and took one decision per run
    assert windows == STREAMED // WINDOW, f"{windows} windows monitored"
    assert decisions == result.decisions == STREAMED // WINDOW, "one decision per monitor run"
    # and the retrain after the second window passed the gates and started a shadow release,
    # in which the challenger scored every row of the third window, unseen
    assert [each["window"] for each in result.retrains] == [1], result.retrains
    retrain = result.retrains[0]
    assert retrain["released"] == "shadow" and not retrain["promoted"], retrain
    assert shadows == WINDOW, f"{shadows} shadow predictions for the {WINDOW} rows of window 3"
    # and the promotion job judged it after that window (50 requests per arm: it waits for
    # the 100 its guards need), and the replay says how long it has been in the shadow
    assert [each["action"] for each in judged] == ["wait"], judged
    assert judged[0]["challenger_version"] == retrain["version"], judged
    assert result.releases == [retrain["release"]], result.releases
    assert retrain["release"]["challenger"] == retrain["version"], retrain["release"]
    assert (retrain["release"]["windows"], retrain["release"]["calls"]) == (1, WINDOW), retrain
    assert retrain["release"]["outcome"] is None, "undecided when the stream ended"
    assert result.release_summary["started"] == result.release_summary["undecided"] == 1, (
        result.release_summary
    )
    # and the first window was served by the first champion, its log-odds shifted by the offset
    # fitted at its registration: the same ranking, the mean moved the offset's way
    served, offline = result.loop.windows[0], result.never_retrained.windows[0]
    offset = result.config["first_champion_logit_offset"]
    assert offset is not None, "params.yaml fits an offset at registration"
    assert served.roc_auc == pytest.approx(offline.roc_auc, abs=1e-12), "another model served"
    assert (served.mean_score - offline.mean_score) * offset > 0, (offset, served, offline)
    # and after each window the monitor refitted the offset and MLServer served it
    assert [each["window"] for each in result.offsets] == [0, 1, 2], result.offsets
    assert all(each["served"] for each in result.offsets), json.dumps(result.offsets, default=str)
    assert len(result.loop.windows) == len(result.never_retrained.windows) == STREAMED // WINDOW
    assert any(step.startswith("window 3 of 3") for step in steps), steps

    # and the figures and the plot are saved
    figures, plot = replay.save_result(result, tmp_path / "out")
    saved = json.loads(figures.read_text())
    assert saved["loop"]["pooled_roc_auc"] == pytest.approx(result.loop.pooled_roc_auc)
    assert saved["release_summary"]["started"] == 1, saved["release_summary"]
    assert plot.stat().st_size > 10_000, "the PNG is missing or empty"
