"""`telescore backtest` on a slice: MLflow parent and child runs, evidence; a MongoDB history."""

from __future__ import annotations

import csv
import statistics
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from telescore.core.outcomes import Outcome
from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import ServedModel, prediction_records
from telescore.core.schema import FEATURES, TARGET
from telescore.io.context import Context
from telescore.io.datasets import fingerprint_rows
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.jobs import backtest
from telescore.services.processes import ServiceProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
GRID = """
candidates:
  - name: loose
    overrides:
      training:
        split: {holdout_rows: 500}
        validation: {min_roc_auc: 0.5, min_gain_over_constant: 0.0, max_auc_degradation: 0.5}
        calibration: {enabled: true}
  - name: every2
    extends: loose
    overrides:
      monitoring:
        policy: {retrain_on_degraded: false, retrain_every_windows: 2, cooldown_windows: 1}
variants:
  window_rows: [1000]
  label_delay_rows: [250, 500]
  first_champion_fraction: [0.3]
selection:
  folds: 2
"""


def test_a_backtest_logs_a_parent_run_a_child_per_candidate_and_the_evidence(
    tmp_path: Path,
    mlflow_tracking_uri: str,
    mlflow_uris_restored: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a grid of two candidates on two stream variants, a real MLflow server, and the
    # first 6,000 rows of the dataset
    experiment = f"backtest-test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TELESCORE_MLFLOW_TRACKING_URI", mlflow_tracking_uri)
    monkeypatch.setenv("TELESCORE_MLFLOW_EXPERIMENT", experiment)
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    config = backtest.BacktestConfig(
        grid=grid,
        params=ROOT / "params.yaml",
        rows=6000,
        workers=2,
        out=tmp_path / "out",
        patch=tmp_path / "patch.yaml",
    )

    # when the backtest runs
    with Context.from_environment() as ctx:
        result = backtest.run_backtest(ctx, config, ROOT)
        client = ctx.registry.client
        parent_id = result.mlflow_run_id
        assert parent_id is not None, f"logged to MLflow: {result.mlflow_note}"
        parent = client.get_run(parent_id)
        children = client.search_runs(
            [parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'"
        )
        artifacts = {each.path for each in client.list_artifacts(parent_id, "backtest")}

    # then one parent run holds the grid, the history and the recommendation, finished
    recommended = result.selection.recommended
    assert parent.info.status == "FINISHED", "the parent run finished"
    assert parent.data.params["recommended"] == recommended, "the recommendation is a param"
    assert parent.data.params["history_rows"] == "6000", "the slice is recorded"
    assert parent.info.experiment_id == children[0].info.experiment_id, "one experiment"
    # and one child per candidate, with its changes as params and its figures as metrics
    by_name = {child.info.run_name: child for child in children}
    assert set(by_name) == {"loose", "every2"}, f"a child per candidate: {set(by_name)}"
    every2 = by_name["every2"].data
    assert every2.params["monitoring.policy.retrain_every_windows"] == "2", "its own change"
    assert every2.params["training.split.holdout_rows"] == "500", "the change it extends"
    chosen = by_name[recommended].data
    assert chosen.tags["backtest.recommended"] == "true", "the recommended child is tagged"
    evidence = result.selection.evidence[recommended]
    assert chosen.metrics["report_pooled_roc_auc_median"] == pytest.approx(
        evidence.report.of("pooled_roc_auc").median
    ), "the child's report figure is the selection's"
    # and the table, the runs, the plot, the summary, the patch and the grid are artifacts
    expected = {
        f"backtest/{name}"
        for name in (
            "backtest.csv",
            "training_runs.csv",
            "backtest.md",
            "backtest.png",
            "recommended.patch.yaml",
            "grid.yaml",
        )
    }
    assert artifacts == expected, f"artifacts: {sorted(artifacts)}"
    # and the table's report rows give the figure the selection reports (median over variants)
    with (tmp_path / "out" / "backtest.csv").open() as handle:
        rows = [
            row
            for row in csv.DictReader(handle)
            if row["candidate"] == recommended and row["period"] == "report"
        ]
    assert len(rows) == 2, "one report row per variant"
    median = statistics.median(float(row["pooled_roc_auc"]) for row in rows)
    assert median == pytest.approx(evidence.report.of("pooled_roc_auc").median, abs=1e-6), (
        "the table holds the figures"
    )
    assert (tmp_path / "out" / "backtest.png").stat().st_size > 10_000, "a plot was drawn"
    assert (
        (tmp_path / "patch.yaml")
        .read_text()
        .startswith(f"# telescore backtest: the recommended candidate `{recommended}`")
    ), "the patch was written where asked"


def test_the_mongodb_history_is_the_logged_predictions_with_outcomes_in_time_order(
    tmp_path: Path, mongodb: ServiceProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given 3,000 rows of the dataset logged as predictions, 100 of them never labelled, and a
    # shadow model's predictions of the same rows (no outcome is reported against those)
    database = f"test_{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("TELESCORE_MONGODB_URI", mongodb.uri)  # type: ignore[attr-defined]
    monkeypatch.setenv("TELESCORE_MONGODB_DATABASE", database)
    frame = pd.read_csv(ROOT / "data" / "bank-additional-full.csv.gz", sep=";", nrows=3000)
    frame = frame.loc[:, [*FEATURES, TARGET]]
    unlabelled = set(range(1000, 3000, 20))
    start = datetime(2024, 5, 6, 7, 0, tzinfo=UTC)
    with (
        PredictionStore(mongodb.uri, database) as predictions,  # type: ignore[attr-defined]
        OutcomeStore(mongodb.uri, database) as outcomes,  # type: ignore[attr-defined]
    ):
        for batch in range(0, len(frame), 100):
            rows = frame.iloc[batch : batch + 100]
            when = start + timedelta(seconds=batch)
            for route in ("champion", "shadow"):
                ids = PredictionIds(clock_ns=lambda when=when: int(when.timestamp() * 1e9)).new(
                    len(rows)
                )
                predictions.insert(
                    prediction_records(
                        prediction_ids=ids,
                        request_id=f"request-{batch}",
                        model=ServedModel("telemarketing", "1", route),
                        rows=rows.loc[:, list(FEATURES)].to_dict("records"),
                        scores=[0.5] * len(rows),
                        latency_ms=1.0,
                        out_of_range=[[]] * len(rows),
                        timestamp=when,
                    )
                )
                if route == "champion":
                    outcomes.record(
                        [
                            Outcome(prediction_id=prediction_id, subscribed=label == "yes")
                            for index, (prediction_id, label) in enumerate(
                                zip(ids, rows[TARGET], strict=True), start=batch
                            )
                            if index not in unlabelled
                        ]
                    )
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.replace("[1000]", "[500]"))
    config = backtest.BacktestConfig(
        grid=grid,
        params=ROOT / "params.yaml",
        source="mongodb",
        workers=1,
        out=tmp_path / "out",
        mlflow=False,
    )

    # when the backtest reads its history from MongoDB
    with Context.from_environment() as ctx:
        result = backtest.run_backtest(ctx, config, ROOT)

    # then the history is exactly the labelled predictions of the model shown, in time order
    labelled = frame.drop(index=sorted(unlabelled)).reset_index(drop=True)
    assert result.history_rows == 2900, f"{result.history_rows} rows: 3,000 less 100 unlabelled"
    assert result.fingerprint == fingerprint_rows(labelled), "the same rows in the same order"
    assert result.source.startswith(f"MongoDB {database}"), result.source
