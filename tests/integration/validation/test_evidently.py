"""Evidently on real rows: drift verdicts, idempotent workspace writes, the real UI serving them."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from telescore.services.embedded import evidently_ui
from telescore.services.processes import free_port, wait_until
from telescore.validation.base import ValidationReport
from telescore.validation.evidently import EvidentlyValidator, snapshot_metrics
from telescore.validation.evidently_dashboards import (
    PROJECT_ID,
    MonitoringWorkspace,
    dashboard_model,
    release_snapshot_id,
    window_snapshot_id,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
START = datetime(2010, 3, 1, tzinfo=UTC)
WEEK = timedelta(days=7)
QUALITY = ("roc_auc", "precision_top_decile", "positive_rate", "mean_score")
RELEASES_PANEL = "Release decisions"


@pytest.fixture(scope="module")
def bank() -> pd.DataFrame:
    """The real rows as the monitor sees them: inputs, a score, a label, and the call's year."""
    frame = pd.read_csv(ROOT / "data" / "bank-additional-full.csv.gz", sep=";")
    frame = frame.drop(columns=["duration"])
    # The rows are in call order over 2008-2010: a new year starts where the month goes back.
    month = frame["month"].map(MONTHS.index)
    frame["year"] = 2008 + (month.diff() < 0).cumsum()
    frame["label"] = (frame.pop("y") == "yes").astype(float)
    # A stand-in for the champion: low rates made calls succeed, and so does this score.
    frame["score"] = 1 / (1 + np.exp(frame["euribor3m"] - 2.0))
    return frame


@pytest.fixture(scope="module")
def reference(bank: pd.DataFrame) -> pd.DataFrame:
    return bank[bank["year"] == 2008].sample(3000, random_state=0).drop(columns="year")


def _sample(
    bank: pd.DataFrame, year: int, rows: int, exclude: pd.Index | None = None
) -> pd.DataFrame:
    period = bank[bank["year"] == year]
    if exclude is not None:
        period = period.drop(index=exclude)
    return period.sample(rows, random_state=1).drop(columns="year")


def _evaluate(
    reference: pd.DataFrame, current: pd.DataFrame, start: datetime, report_dir: Path
) -> ValidationReport:
    validator = EvidentlyValidator(window_start=start, window_end=start + WEEK)
    return validator.validate(current, reference=reference, report_dir=report_dir)


def test_a_shifted_macro_indicator_drifts_and_a_same_period_sample_does_not(
    bank: pd.DataFrame, reference: pd.DataFrame, tmp_path: Path
) -> None:
    # given a reference of 2008 rows, rows of 2010 (rates fell) and other rows of 2008
    later = _sample(bank, 2010, 1000)
    same_period = _sample(bank, 2008, 1000, exclude=reference.index)

    # when each is evaluated against the reference
    shifted = _evaluate(reference, later, START, tmp_path)
    same = _evaluate(reference, same_period, START, tmp_path)

    # then the 2010 rates drift, and so does the score built on them, failing the window
    assert shifted.metrics["drift.euribor3m"] >= 0.1, "2010 rates vs 2008 rates: no drift"
    drifted = shifted.details["drifted_features"]
    assert "euribor3m" in drifted, f"euribor3m is not among the drifted inputs: {drifted}"
    assert shifted.metrics["prediction_drift"] >= 0.1, "a score built on rates must drift too"
    assert not shifted.passed and any("prediction drift" in f for f in shifted.failures), (
        f"a drifted score should fail the window: {shifted.summary()}"
    )
    assert shifted.artifact_path is not None and shifted.artifact_path.stat().st_size > 0, (
        "HTML report missing"
    )
    # and rows of the same period drift on nothing and pass
    assert same.metrics["drift.euribor3m"] < 0.1, "a sample of the same period drifted"
    assert same.details["drifted_features"] == [], f"same period, yet drift: {same.details}"
    assert same.passed, f"a sample of the same period failed: {same.summary()}"


def test_quality_figures_follow_the_labels_present(
    bank: pd.DataFrame, reference: pd.DataFrame, tmp_path: Path
) -> None:
    # given 600 rows of 2009: labelled one in three, labelled 0 on 100 rows only, or unlabelled
    current = _sample(bank, 2009, 600)
    some = current.assign(label=current["label"].where(np.arange(600) % 3 == 0))
    one_class = current.assign(label=np.where(np.arange(600) < 100, 0.0, np.nan))
    none = current.assign(label=np.nan)

    # when each is evaluated
    figures = {
        name: _evaluate(reference, frame, START, tmp_path).metrics
        for name, frame in {"some": some, "one-class": one_class, "none": none}.items()
    }

    # then quality is figured on the labelled rows, only where it is defined
    assert set(QUALITY) <= set(figures["some"]), f"quality missing: {sorted(figures['some'])}"
    assert figures["some"]["label_coverage"] == pytest.approx(200 / 600), "wrong coverage"
    assert figures["some"]["labelled_rows"] == 200 and figures["some"]["rows"] == 600, "wrong rows"
    assert "roc_auc" not in figures["one-class"], "ROC AUC of one class must be left out"
    assert figures["one-class"]["positive_rate"] == 0.0, "one class still has a positive rate"
    assert not set(QUALITY) & set(figures["none"]), "quality figures without any label"
    assert figures["none"]["label_coverage"] == 0.0, "coverage of an unlabelled window"


@pytest.fixture(scope="module")
def windows(
    bank: pd.DataFrame, reference: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> list[ValidationReport]:
    """Three weekly windows of 2009 rows, the last without labels yet."""
    report_dir = tmp_path_factory.mktemp("reports")
    rows = _sample(bank, 2009, 900)
    rows.loc[rows.index[600:], "label"] = np.nan
    return [
        _evaluate(reference, rows.iloc[i * 300 : (i + 1) * 300], START + i * WEEK, report_dir)
        for i in range(3)
    ]


def test_saving_a_window_again_replaces_its_snapshot(
    windows: list[ValidationReport], tmp_path: Path
) -> None:
    # given a window saved with a retraining decision, and a second evaluation of other figures
    workspace = MonitoringWorkspace(tmp_path / "evidently")
    workspace.save_window(windows[0].tool_result, START)
    workspace.record_decision(START, retrain=True, reason="ROC AUC under 0.7")
    assert windows[1].metrics != windows[0].metrics, "the two evaluations cannot be told apart"

    # when late labels come: the window is evaluated again and saved again, dated to its start
    workspace.save_window(windows[1].tool_result, START)

    # then it has one snapshot, with the new figures and the decision kept
    assert workspace.snapshot_ids() == [window_snapshot_id(START)], "a window got two snapshots"
    stored = workspace.load_window(START)
    assert stored is not None, "the window's snapshot is gone"
    assert stored.timestamp == START, f"snapshot dated {stored.timestamp}, not its window"
    assert stored.metadata["retrain_reason"] == "ROC AUC under 0.7", "the decision was lost"
    figures = snapshot_metrics(stored)
    assert figures.pop("retrain") == 1.0, "the decision's figure was lost"
    assert figures == windows[1].metrics, "stored figures differ from the evaluation's"

    # when another decision is recorded for the window
    workspace.record_decision(START, retrain=False, reason="labels back to normal")

    # then it replaces the first: one decision, keep, and the retrain tag gone
    stored = workspace.load_window(START)
    assert stored is not None, "the window's snapshot is gone"
    decisions = [
        result.value
        for result in stored.metric_results.values()
        if result.metric_value_location.metric.params["type"].endswith(":RetrainingDecision")
    ]
    assert decisions == [0], f"expected one decision, now keep: {decisions}"
    assert "retrain" not in stored.tags, "a kept model still tagged retrain"


def test_writing_the_dashboard_again_does_not_duplicate_panels(tmp_path: Path) -> None:
    # given a workspace with its dashboard written
    workspace = MonitoringWorkspace(tmp_path / "evidently")
    workspace.write_dashboard()
    first = workspace.dashboard()

    # when the dashboard is written again
    workspace.write_dashboard()
    again = workspace.dashboard()

    # then it has the same panels, each in one tab
    assert [p.id for p in again.panels] == [p.id for p in first.panels], "panels changed"
    assert len(again.panels) == len(dashboard_model().panels), "panels duplicated"
    placed = [panel for tab in again.tabs for panel in tab.panels]
    assert sorted(placed) == sorted(p.id for p in again.panels), "a panel is in no tab or two"


def _api(base: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 - local URL
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.loads(response.read())


def _panel_batches(base: str) -> dict[str, Any]:
    """Ask the UI for each panel's points, as its front end does: one filter per value.

    Each answer has `sources` (the snapshots plotted, with their timestamps) and `series`
    (one list of values per series, a value per source). A failing panel raises HTTPError.
    """
    batches = {}
    for panel in _api(base, f"/api/v2/dashboards/{PROJECT_ID}")["panels"]:
        filters = [
            {key: value[key] for key in ("tags", "metadata", "metric", "metric_labels")}
            for value in panel["values"]
        ]
        if filters:  # a text panel plots nothing
            batches[panel["title"]] = _api(
                base,
                f"/api/v2/snapshots/{PROJECT_ID}/data_series_batch",
                {"series_filter": filters},
            )
    return batches


def _panel_series(base: str) -> dict[str, list[list[float | None]]]:
    """Return each panel's series as the UI plots them: values only."""
    return {
        title: [series["values"] for series in batch["series"]]
        for title, batch in _panel_batches(base).items()
    }


def _timestamps(batch: Any) -> list[datetime]:
    return [datetime.fromisoformat(source["timestamp"]) for source in batch["sources"]]


def _served(port: int) -> tuple[int, list[str]]:
    """Return the panels and the snapshot ids that the UI on `port` serves for the project."""
    base = f"http://127.0.0.1:{port}"
    projects = {p["id"]: p["name"] for p in _api(base, "/api/projects")}
    assert projects.get(str(PROJECT_ID)) == "telemarketing", f"project missing: {projects}"
    dashboard = _api(base, f"/api/v2/dashboards/{PROJECT_ID}")
    snapshots = _api(base, f"/api/projects/{PROJECT_ID}/snapshots")
    return len(dashboard["panels"]), sorted(s["id"] for s in snapshots)


@pytest.mark.slow
def test_the_ui_serves_the_project_and_keeps_it_across_a_restart(
    windows: list[ValidationReport], tmp_path: Path
) -> None:
    # given a workspace with its dashboard, two windows and a retraining decision on the second
    workspace = MonitoringWorkspace(tmp_path / "evidently")
    workspace.write_dashboard()
    for i, window in enumerate(windows[:2]):
        workspace.save_window(window.tool_result, START + i * WEEK)
    workspace.record_decision(START + WEEK, retrain=True, reason="share drifted over 0.5")
    panels = dashboard_model().panels

    # when the Evidently UI serves the workspace
    port = free_port()
    with evidently_ui(tmp_path, port).running():
        count, before = _served(port)
        series = _panel_series(f"http://127.0.0.1:{port}")

        # then it shows every panel, both windows, and a point per window and decision
        assert count == len(panels), f"the UI shows {count} panels, not {len(panels)}"
        assert len(before) == 2, f"the UI lists {len(before)} snapshots, not 2"
        # No release decided here: the Releases panel is checked with decisions of its own below.
        empty = [title for title, found in series.items() if not found and title != RELEASES_PANEL]
        assert not empty, f"panels whose values match nothing in the snapshots: {empty}"
        share = series["Share of drifted inputs"]
        assert [len(points) for points in share] == [2], f"one point a window expected: {share}"
        decisions = series["Retraining decisions"]
        assert decisions == [[1.0]], f"the recorded decision is not plotted: {decisions}"

        # when a window is saved while the UI runs
        workspace.save_window(windows[2].tool_result, START + 2 * WEEK)

        # then it shows up without a restart (the UI watches the folder)
        wait_until(lambda: len(_served(port)[1]) == 3, 30, what="the third window in the UI")
        _, before = _served(port)

    # when the UI is started again on the same workspace
    port = free_port()
    with evidently_ui(tmp_path, port).running():
        count, after = _served(port)

    # then it serves the same panels and snapshots
    assert count == len(panels), f"after a restart the UI shows {count} panels, not {len(panels)}"
    assert after == before, f"snapshots changed across the restart: {before} -> {after}"


def test_recording_a_release_decision_again_replaces_its_snapshot(tmp_path: Path) -> None:
    # given a workspace, and a decision to wait on a challenger in shadow
    workspace = MonitoringWorkspace(tmp_path / "evidently")
    decided_at = datetime(2010, 3, 3, 9, 30, 15, 250_000, tzinfo=UTC)
    decision = {"champion": "3", "challenger": "4", "mode": "shadow"}

    # when the decision is recorded twice, its reason updated, then a promotion a week later
    workspace.record_release(
        "d-1", decided_at, action="wait", reason="120 labelled rows of 500", **decision
    )
    workspace.record_release(
        "d-1", decided_at, action="wait", reason="130 labelled rows of 500", **decision
    )
    workspace.record_release(
        "d-2", decided_at + WEEK, action="promote", reason="ROC AUC better", **decision
    )

    # then each decision has one snapshot, dated when it was decided, holding its latest record
    assert sorted(workspace.snapshot_ids()) == sorted(
        [release_snapshot_id("d-1"), release_snapshot_id("d-2")]
    ), "recording a decision again added a snapshot"
    stored = workspace.load_release("d-1")
    assert stored is not None, "the decision's snapshot is gone"
    assert stored.timestamp == decided_at, f"snapshot dated {stored.timestamp}, not its decision"
    assert snapshot_metrics(stored) == {"release": 0.0}, "a wait must be plotted at 0, alone"
    assert stored.metadata == {
        "release_decision_id": "d-1",
        "release_action": "wait",
        "release_reason": "130 labelled rows of 500",
        "champion_version": "3",
        "challenger_version": "4",
        "routing_mode": "shadow",
    }, f"metadata not that of the latest recording: {stored.metadata}"
    assert stored.tags == ["release-wait"], f"the wait is not tagged as one: {stored.tags}"
    [counter] = stored.widgets
    assert counter.params["counters"][0] == {
        "value": "wait",
        "label": "130 labelled rows of 500",
    }, f"the counter does not show the action and its reason: {counter.params}"
    promoted = workspace.load_release("d-2")
    assert promoted is not None and snapshot_metrics(promoted) == {"release": 1.0}, (
        "a promotion must be plotted at 1"
    )
    # and the dashboard is written with its Releases tab
    tabs = [tab.title for tab in workspace.dashboard().tabs]
    assert "Releases" in tabs, f"recording a release did not write the dashboard: {tabs}"


@pytest.mark.slow
def test_the_ui_plots_release_decisions_beside_the_windows(
    windows: list[ValidationReport], tmp_path: Path
) -> None:
    # given a workspace with a window kept, then a promotion and a rollback a week apart
    workspace = MonitoringWorkspace(tmp_path / "evidently")
    workspace.save_window(windows[0].tool_result, START)
    workspace.record_decision(START, retrain=False, reason="no drift")
    promoted_at = START + timedelta(days=2, hours=9, microseconds=123_456)
    rolled_back_at = START + timedelta(days=9, hours=15)
    decision = {"champion": "3", "challenger": "4", "mode": "canary"}
    workspace.record_release(
        "promote-1", promoted_at, action="promote", reason="ROC AUC 0.79 vs 0.75", **decision
    )
    workspace.record_release(
        "rollback-1", rolled_back_at, action="rollback", reason="errors 2.1% > 1%", **decision
    )

    # when the Evidently UI serves the workspace
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with evidently_ui(tmp_path, port).running():
        snapshots = {s["id"]: s for s in _api(base, f"/api/projects/{PROJECT_ID}/snapshots")}
        promote_id = str(release_snapshot_id("promote-1"))
        # The report page's widgets (served as text/plain, but JSON).
        shown = _api(base, f"/api/projects/{PROJECT_ID}/{promote_id}/data")
        batches = _panel_batches(base)

        # then it lists the window and both decisions, each decision's report saying why
        assert sorted(snapshots) == sorted(
            [str(window_snapshot_id(START)), promote_id, str(release_snapshot_id("rollback-1"))]
        ), f"the UI does not list the window and both decisions: {sorted(snapshots)}"
        assert snapshots[promote_id]["tags"] == ["release-promote"], (
            f"the promotion is not tagged as one: {snapshots[promote_id]}"
        )
        assert [w["params"]["counters"][0] for w in shown["widgets"]] == [
            {"value": "promote", "label": "ROC AUC 0.79 vs 0.75"}
        ], f"the decision's report does not show its action and reason: {shown['widgets']}"
        # and every panel answers: the decisions when decided, the window's alone
        releases = batches[RELEASES_PANEL]
        assert [series["values"] for series in releases["series"]] == [[1.0, -1.0]], (
            f"expected promote (1) then rollback (-1): {releases['series']}"
        )
        assert _timestamps(releases) == [promoted_at, rolled_back_at], (
            f"the decisions are not plotted when they were decided: {_timestamps(releases)}"
        )
        share = batches["Share of drifted inputs"]
        assert _timestamps(share) == [START] and len(share["series"][0]["values"]) == 1, (
            f"a release decision shows up in a window panel: {share}"
        )
        empty = [title for title, batch in batches.items() if not batch["series"]]
        assert not empty, f"window panels lost their point beside the decisions: {empty}"

        # when the same decision is recorded again, its reason reworded
        workspace.record_release(
            "promote-1", promoted_at, action="promote", reason="ROC AUC 0.79 vs 0.74", **decision
        )

        def reworded() -> bool:
            listed = _api(base, f"/api/projects/{PROJECT_ID}/snapshots")
            return any(
                s["id"] == promote_id and s["metadata"]["release_reason"].endswith("0.74")
                for s in listed
            )

        # then the UI shows the new reason, and the same points at the same times
        wait_until(reworded, 30, what="the decision recorded again, in the UI")
        releases = _panel_batches(base)[RELEASES_PANEL]
        assert [series["values"] for series in releases["series"]] == [[1.0, -1.0]], (
            f"recording a decision again changed the points: {releases['series']}"
        )
        assert _timestamps(releases) == [promoted_at, rolled_back_at], (
            f"recording a decision again moved the points: {_timestamps(releases)}"
        )
