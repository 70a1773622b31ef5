"""Pure helpers of the Evidently adapter: snapshot ids, drift options and the quality guards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import get_args

import numpy as np
import pandas as pd
import pydantic
import pytest

from telescore.validation.evidently import (
    DriftOptions,
    QualityStatistic,
    as_utc,
    quality_statistic,
)
from telescore.validation.evidently_dashboards import (
    MonitoringWorkspace,
    dashboard_model,
    release_snapshot_id,
    window_snapshot_id,
)

START = datetime(2010, 3, 1, tzinfo=UTC)


def _window(labels: list[float], scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"label": labels, "score": scores})


def test_a_window_always_gets_the_same_snapshot_id() -> None:
    paris = START.astimezone(timezone(timedelta(hours=1)))
    assert window_snapshot_id(START) == window_snapshot_id(START), "id is not deterministic"
    assert window_snapshot_id(paris) == window_snapshot_id(START), (
        "the same instant in another zone must name the same window"
    )
    assert window_snapshot_id(START + timedelta(days=7)) != window_snapshot_id(START), (
        "two windows share a snapshot id"
    )


def test_a_release_decision_always_gets_the_same_snapshot_id() -> None:
    assert release_snapshot_id("d-1") == release_snapshot_id("d-1"), "id is not deterministic"
    assert release_snapshot_id("d-1") != release_snapshot_id("d-2"), "two decisions share an id"
    assert release_snapshot_id(START.isoformat()) != window_snapshot_id(START), (
        "a decision's snapshot could replace a window's"
    )


@pytest.mark.parametrize(
    ("action", "decided_at"),
    [("promoted", START), ("promote", datetime(2010, 3, 1))],  # noqa: DTZ001 - refused
    ids=["unknown-action", "naive-time"],
)
def test_a_release_decision_needs_a_known_action_and_an_aware_time(
    action: str, decided_at: datetime, tmp_path: Path
) -> None:
    workspace = MonitoringWorkspace(tmp_path / "evidently")
    with pytest.raises(ValueError, match="release action|no timezone"):
        workspace.record_release(
            "d-1",
            decided_at,
            action=action,
            reason="-",
            champion="1",
            challenger="2",
            mode="canary",
        )
    assert not (tmp_path / "evidently").exists(), "a refused decision wrote something"


def test_the_releases_tab_plots_the_decisions_and_says_where_the_reason_is() -> None:
    dashboard = dashboard_model()
    [tab] = [tab for tab in dashboard.tabs if tab.title == "Releases"]
    panels = {panel.id: panel for panel in dashboard.panels}
    plot, text = (panels[panel_id] for panel_id in tab.panels)
    assert [value.metric for value in plot.values] == ["evidently:metric_v2:ReleaseDecision"], (
        "the Releases panel does not plot the ReleaseDecision figure"
    )
    assert plot.plot_params["plot_type"] in ("line", "bar"), plot.plot_params
    for where in ("release_reason", "release-promote", "release-rollback", "release-wait"):
        assert where in (text.subtitle or ""), f"the text panel does not mention {where}"


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="no timezone"):
        window_snapshot_id(datetime(2010, 3, 1))  # noqa: DTZ001 - the point of the test
    assert as_utc(START.astimezone(timezone(timedelta(hours=-5)))).tzinfo is UTC, "not in UTC"


def test_drift_options_pin_distances_by_default() -> None:
    options = DriftOptions()
    assert (options.numerical_method, options.categorical_method) == (
        "wasserstein",
        "jensenshannon",
    ), "default drift methods changed"
    with pytest.raises(pydantic.ValidationError):
        options.numerical_threshold = 0.2  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"numerical_method": "chisquare"},
        {"categorical_method": "wasserstein"},
        {"numerical_threshold": 0.0},
        {"drift_share": 1.5},
        {"numerical_threshold": "0.1"},
        {"window": 7},
    ],
    ids=[
        "p-value-numeric",
        "p-value-categorical",
        "zero-threshold",
        "share-over-1",
        "str",
        "extra",
    ],
)
def test_drift_options_refuse_invalid_values(bad: dict[str, object]) -> None:
    with pytest.raises(pydantic.ValidationError):
        DriftOptions(**bad)  # type: ignore[arg-type]


def test_one_class_window_has_no_roc_auc_but_other_figures() -> None:
    window = _window([0.0, 0.0, 0.0, np.nan], [0.9, 0.2, 0.1, 0.8])
    assert quality_statistic(window, "roc_auc") is None, "ROC AUC is undefined on one class"
    assert quality_statistic(window, "positive_rate") == 0.0, "positive rate of one class"
    assert quality_statistic(window, "mean_score") == pytest.approx(0.4), (
        "mean score must use the labelled rows only"
    )


def test_unlabelled_window_has_no_quality_figure() -> None:
    window = _window([np.nan, np.nan], [0.9, 0.1])
    for statistic in get_args(QualityStatistic):
        assert quality_statistic(window, statistic) is None, f"{statistic} without labels"


def test_top_decile_precision_counts_the_best_scored_tenth() -> None:
    # 20 labelled rows: the top decile is the 2 best scores, one of them a subscriber.
    scores = np.linspace(0.0, 0.95, 20)
    labels = np.zeros(20)
    labels[-1] = 1.0
    window = pd.concat([_window(list(labels), list(scores)), _window([np.nan], [1.0])])
    assert quality_statistic(window, "precision_top_decile") == 0.5, "wrong top decile"
    assert quality_statistic(window, "roc_auc") == 1.0, "the subscriber has the best score"
