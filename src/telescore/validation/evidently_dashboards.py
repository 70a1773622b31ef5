"""The workspace `evidently ui` serves: one project, its dashboard, windows and releases.

One snapshot per monitoring window, and one per release decision of the promotion flow.

Written so that running the monitor again changes nothing: the project, its tabs and panels,
each window's snapshot and each release decision's have fixed ids, and every write replaces a
file. (Evidently's own `add_panel` appends again on each call and `add_run` mints a new id each
time.)

Window and release snapshots share the project: a dashboard panel asks the UI for the points of
its metrics, and a snapshot without them gives that panel no point (Evidently 0.7.23,
`InMemoryDataStorage.get_data_series`), so each panel plots only the snapshots that hold its
metric.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from telescore.core.schema import FLOAT_FEATURES
from telescore.validation.evidently import (
    PREDICTION_QUANTILES,
    SCORE,
    as_utc,
)

PROJECT_NAME: Final = "telemarketing"
PROJECT_ID: Final = uuid.uuid5(uuid.NAMESPACE_URL, "telescore:evidently/telemarketing")
"""Fixed, so that the UI's links and every run of the monitor meet the same project."""
RETRAIN_TAG: Final = "retrain"
RELEASE_VALUES: Final = {"promote": 1, "wait": 0, "rollback": -1}
"""The figure a release decision is plotted at, by action (`core.release.Action`)."""
RELEASE_TAGS: Final = {action: f"release-{action}" for action in RELEASE_VALUES}


def window_snapshot_id(window_start: datetime) -> uuid.UUID:
    """Return the id of a window's snapshot: the same window start always gives the same id."""
    return _fixed_id("window", as_utc(window_start).isoformat())


def release_snapshot_id(decision_id: str) -> uuid.UUID:
    """Return the id of a release decision's snapshot: one decision, one snapshot."""
    return _fixed_id("release", decision_id)


def _fixed_id(kind: str, key: str) -> uuid.UUID:
    return uuid.uuid5(PROJECT_ID, f"{kind}/{key}")


def dashboard_model() -> Any:
    """Return the whole dashboard (`evidently.sdk.models.DashboardModel`) with fixed ids."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import bar_plot_panel, line_plot_panel, text_panel

    def value(metric: str, legend: str, **labels: str) -> Any:
        return PanelMetric(metric=metric, legend=legend, metric_labels=labels)

    tabs = {
        "Drift": [
            line_plot_panel(
                "Share of drifted inputs",
                [value("DriftedColumnsCount", "share drifted", value_type="share")],
                "Inputs whose drift score reached the threshold, out of 19",
                "half",
            ),
            line_plot_panel(
                "Prediction drift",
                [value("ValueDrift", "score", column=SCORE)],
                "Drift score of the predicted probability against the training rows",
                "half",
            ),
            line_plot_panel(
                "Drift of the macro indicators",
                [value("ValueDrift", feature, column=feature) for feature in FLOAT_FEATURES],
                "Drift score per indicator: these move with the economy",
            ),
        ],
        "Predictions": [
            line_plot_panel(
                "Predicted scores",
                [value("MeanValue", "mean", column=SCORE)]
                + [
                    value("QuantileValue", f"p{round(q * 100):02d}", column=SCORE, quantile=str(q))
                    for q in PREDICTION_QUANTILES
                ],
                "Mean and deciles of the predicted probability, all rows of the window",
            ),
            bar_plot_panel(
                "Rows per window",
                [
                    value("RowCount", "rows"),
                    value("LabelCoverage", "labelled rows", value_type="count"),
                ],
            ),
        ],
        "Quality": [
            line_plot_panel(
                "Ranking quality",
                [
                    value("LabelledQuality", "ROC AUC", statistic="roc_auc"),
                    value(
                        "LabelledQuality", "precision, top decile", statistic="precision_top_decile"
                    ),
                ],
                "On the labelled rows only; no point where a window has no labels or one class",
            ),
            line_plot_panel(
                "Calibration",
                [
                    value("LabelledQuality", "positive rate", statistic="positive_rate"),
                    value("LabelledQuality", "mean score", statistic="mean_score"),
                ],
                "Actual subscription rate next to the mean predicted probability, labelled rows",
                "half",
            ),
            line_plot_panel(
                "Label coverage",
                [value("LabelCoverage", "labelled share", value_type="share")],
                "Share of the window's rows whose outcome is known",
                "half",
            ),
        ],
        "Retraining": [
            bar_plot_panel(
                "Retraining decisions", [value("RetrainingDecision", "retrain (1) or keep (0)")]
            ),
            text_panel(
                "Why",
                "Each window's reason is in its snapshot: metadata `retrain_reason`; "
                f"windows that led to retraining carry the tag `{RETRAIN_TAG}`.",
            ),
        ],
        "Releases": [
            # A line, not bars: a wait (0) would be a bar of no height, and most runs wait.
            line_plot_panel(
                "Release decisions",
                [value("ReleaseDecision", "promote (1), wait (0) or roll back (-1)")],
                "One point per run of the promotion flow, at the moment it decided",
            ),
            text_panel(
                "Why",
                "Each release decision is a snapshot of its own (Reports): the reason is in its "
                "metadata `release_reason`, next to `release_action`, `champion_version`, "
                "`challenger_version` and `routing_mode` (canary or shadow). Its tag names the "
                f"action: `{RELEASE_TAGS['promote']}`, `{RELEASE_TAGS['rollback']}` or "
                f"`{RELEASE_TAGS['wait']}`.",
            ),
        ],
    }
    panels = []
    tab_models = []
    for tab, tab_panels in tabs.items():
        for panel in tab_panels:
            panel.id = _fixed_id("panel", f"{tab}/{panel.title}")
        panels.extend(tab_panels)
        tab_models.append(
            DashboardTabModel(
                id=_fixed_id("tab", tab), title=tab, panels=[panel.id for panel in tab_panels]
            )
        )
    return DashboardModel(tabs=tab_models, panels=panels)


class MonitoringWorkspace:
    """A local Evidently workspace folder: the monitor writes it, `evidently ui` serves it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._project = path / str(PROJECT_ID)

    def write_dashboard(self) -> None:
        """Write the project and its whole dashboard in one go, replacing any earlier version."""
        from evidently.sdk.models import ProjectModel

        project = ProjectModel(
            id=PROJECT_ID,
            name=PROJECT_NAME,
            description=(
                "Drift, quality and retraining decisions of each monitoring window; "
                "release decisions of the promotion flow"
            ),
        )
        self._write(self._project / "metadata.json", project.dict())
        self._write(self._project / "dashboard.json", dashboard_model().dict())

    def save_window(self, snapshot: Any, window_start: datetime) -> uuid.UUID:
        """Store a window's snapshot, dated to the window, replacing the window's earlier one.

        A retraining decision already recorded for the window is kept: recomputing quality when
        late labels arrive does not undo what was decided.
        """
        start = as_utc(window_start)
        model = snapshot.to_snapshot_model() if hasattr(snapshot, "to_snapshot_model") else snapshot
        model.timestamp = start
        # The UI shows a snapshot from its top-level widgets; each result's copy of its own
        # widgets is never read, and halves the file (0.93 -> 0.48 MB for a 2,000-row window).
        for result in model.metric_results.values():
            result.widget = None
        previous = self.load_window(start)
        if (
            previous is not None
            and "retrain" in previous.metadata
            and "retrain" not in model.metadata
        ):
            _set_decision(
                model, previous.metadata["retrain"] == "true", previous.metadata["retrain_reason"]
            )
        if not (self._project / "metadata.json").exists():
            self.write_dashboard()
        return self._write_snapshot(model, window_snapshot_id(start))

    def record_decision(self, window_start: datetime, *, retrain: bool, reason: str) -> None:
        """Add the retraining decision taken on a window to that window's snapshot."""
        start = as_utc(window_start)
        model = self.load_window(start)
        if model is None:
            raise LookupError(f"no snapshot for the window starting {start.isoformat()}")
        _set_decision(model, retrain, reason)
        self._write_snapshot(model, window_snapshot_id(start))

    def record_release(
        self,
        decision_id: str,
        decided_at: datetime,
        *,
        action: str,
        reason: str,
        champion: str,
        challenger: str,
        mode: str,
    ) -> uuid.UUID:
        """Store a release decision as a snapshot of its own, dated when it was decided.

        Recording the same decision again replaces its snapshot. The snapshot holds only the
        `ReleaseDecision` figure, with the action and the reason shown as counters.
        """
        if action not in RELEASE_VALUES:
            raise ValueError(f"unknown release action {action!r}: one of {sorted(RELEASE_VALUES)}")
        moment = as_utc(decided_at)
        from evidently.core.serialization import ReportModel, SnapshotModel
        from evidently.legacy.renderers.html_widgets import CounterData, counter

        from telescore.validation.evidently_metrics import ReleaseDecision

        # Every field `Snapshot.to_snapshot_model` fills, nothing computed: no report items (it
        # writes none either), no tests; the figure and its widget are added below.
        model = SnapshotModel(
            report=ReportModel(items=[]),
            name=f"release {moment.isoformat()}: {action}",
            timestamp=moment,
            # The UI reads metadata as str -> str.
            metadata={
                "release_decision_id": decision_id,
                "release_action": action,
                "release_reason": reason,
                "champion_version": champion,
                "challenger_version": challenger,
                "routing_mode": mode,
            },
            tags=[RELEASE_TAGS[action]],
            metric_results={},
            top_level_metrics=[],
            widgets=[],
            tests_widgets=[],
        )
        widget = counter(
            title="Release decision",
            counters=[
                CounterData(label=reason, value=action),
                CounterData(
                    label=f"champion / challenger, {mode}", value=f"{champion} / {challenger}"
                ),
            ],
        )
        _put_figure(model, ReleaseDecision(), RELEASE_VALUES[action], widget)
        # Every time, not only for a new workspace: one written before releases had a tab
        # gets it with the first decision recorded.
        self.write_dashboard()
        return self._write_snapshot(model, release_snapshot_id(decision_id))

    def load_window(self, window_start: datetime) -> Any | None:
        """Return a window's stored snapshot (`SnapshotModel`), or None."""
        return self._load(window_snapshot_id(window_start))

    def load_release(self, decision_id: str) -> Any | None:
        """Return a release decision's stored snapshot (`SnapshotModel`), or None."""
        return self._load(release_snapshot_id(decision_id))

    def snapshot_ids(self) -> list[uuid.UUID]:
        """Return the ids of the stored snapshots."""
        if not (self._project / "snapshots").is_dir():
            return []
        return [uuid.UUID(str(i)) for i in self._state().list_snapshots(str(PROJECT_ID))]

    def dashboard(self) -> Any:
        """Return the stored dashboard (`DashboardModel`)."""
        return self._state().read_dashboard(str(PROJECT_ID))

    def _load(self, snapshot_id: uuid.UUID) -> Any | None:
        if snapshot_id not in self.snapshot_ids():
            return None
        return self._state().read_snapshot(str(PROJECT_ID), str(snapshot_id))

    def _state(self) -> Any:
        # Not `evidently.ui.workspace.Workspace`: it parses every snapshot of the folder when
        # opened, and its `add_run` cannot take the window's id.
        from evidently.ui.storage.local.base import LocalState

        return LocalState(str(self.path))

    def _write_snapshot(self, model: Any, snapshot_id: uuid.UUID) -> uuid.UUID:
        self._write(self._project / "snapshots" / f"{snapshot_id}.json", model.dict())
        return snapshot_id

    def _write(self, path: Path, content: dict[str, Any]) -> None:
        """Write a file whole or not at all: one torn snapshot fails every project request.

        The temporary file sits outside the workspace: the UI's watcher ignores a rename made
        inside it and takes one from outside as a new file, which it then loads.
        """
        from evidently.legacy.utils.numpy_encoder import NumpyEncoder

        path.parent.mkdir(parents=True, exist_ok=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", dir=self.path.parent, prefix=f".{self.path.name}-", delete=False
        ) as temporary:
            try:
                json.dump(content, temporary, cls=NumpyEncoder)
                temporary.flush()
                os.fsync(temporary.fileno())
                os.fchmod(temporary.fileno(), 0o644)  # as Evidently writes them, not 0600
            except BaseException:
                Path(temporary.name).unlink()
                raise
        Path(temporary.name).replace(path)


def _put_figure(model: Any, metric: Any, value: float, widget: Any) -> None:
    """Put a recorded figure in a snapshot, with the widget that shows it, replacing its old one."""
    from evidently.legacy.model.widget import link_metric

    calculation = metric.to_calculation()
    link_metric(widget, calculation.id)
    model.metric_results[calculation.id] = calculation.result(value)
    if calculation.id not in model.top_level_metrics:
        model.top_level_metrics.append(calculation.id)
    model.widgets = [
        shown for shown in model.widgets if calculation.id not in (shown.linked_metrics or [])
    ] + [widget]


def _set_decision(model: Any, retrain: bool, reason: str) -> None:
    """Put a decision in a snapshot: a 1/0 figure the dashboard plots, the reason in metadata."""
    from evidently.legacy.renderers.html_widgets import CounterData, counter

    from telescore.validation.evidently_metrics import RetrainingDecision

    widget = counter(
        title="Retraining decision",
        counters=[CounterData(label=reason, value="retrain" if retrain else "keep")],
    )
    _put_figure(model, RetrainingDecision(), 1 if retrain else 0, widget)
    # The UI reads metadata as str -> str.
    model.metadata["retrain"] = "true" if retrain else "false"
    model.metadata["retrain_reason"] = reason
    model.tags = [tag for tag in model.tags if tag != RETRAIN_TAG] + (
        [RETRAIN_TAG] if retrain else []
    )
