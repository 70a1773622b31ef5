"""Pure helpers of the Evidently adapter: snapshot ids, drift options and the quality guards."""

from __future__ import annotations

import uuid
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
WINDOW_ID = uuid.UUID("4ac79b1e-b742-54e0-9b71-2956a5ec34d2")
"""The snapshot id of the window starting at START, as the workspace has always stored it."""
RELEASE_ID = uuid.UUID("5dc776f6-c367-5e18-a649-5e49724571c6")
"""The snapshot id of release decision "d-1"."""


def _window(labels: list[float], scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"label": labels, "score": scores})


def test_a_window_keeps_the_snapshot_id_earlier_runs_stored_it_under() -> None:
    # Given the start of a window, in UTC and in UTC+1
    paris = START.astimezone(timezone(timedelta(hours=1)))

    # When its snapshot id is derived / Then it is the id every earlier run stored it under
    # (uuid5 of the project and "window/<start in UTC>"), so evaluating it again replaces it
    assert window_snapshot_id(START) == WINDOW_ID, "a window's snapshot id changed"
    assert window_snapshot_id(paris) == WINDOW_ID, "the same instant in another zone differs"
    # And the next week is another window
    assert window_snapshot_id(START + timedelta(days=7)) != WINDOW_ID, "two windows share an id"


def test_a_release_decision_keeps_its_snapshot_id_and_never_takes_a_windows() -> None:
    # Given a decision id / When its snapshot id is derived / Then it is the stored one
    assert release_snapshot_id("d-1") == RELEASE_ID, "a decision's snapshot id changed"
    # And another decision, or a decision named like a window's start, gets another id
    assert release_snapshot_id("d-2") != RELEASE_ID, "two decisions share an id"
    assert release_snapshot_id(START.isoformat()) != WINDOW_ID, (
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
    # Given a workspace
    workspace = MonitoringWorkspace(tmp_path / "evidently")

    # When a decision with an unknown action or a naive time is recorded / Then it is refused
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
    # And nothing was written
    assert not (tmp_path / "evidently").exists(), "a refused decision wrote something"


def test_the_releases_tab_plots_the_decisions_and_says_where_the_reason_is() -> None:
    # Given the dashboard / When its Releases tab is looked up
    dashboard = dashboard_model()
    [tab] = [tab for tab in dashboard.tabs if tab.title == "Releases"]
    panels = {panel.id: panel for panel in dashboard.panels}
    plot, text = (panels[panel_id] for panel_id in tab.panels)

    # Then it plots our ReleaseDecision metric, by the type name Evidently registered it under
    assert [value.metric for value in plot.values] == ["evidently:metric_v2:ReleaseDecision"], (
        "the Releases panel does not plot the ReleaseDecision figure"
    )
    assert plot.plot_params["plot_type"] in ("line", "bar"), plot.plot_params
    # And its text says where the reason and the tags are
    for where in ("release_reason", "release-promote", "release-rollback", "release-wait"):
        assert where in (text.subtitle or ""), f"the text panel does not mention {where}"


def test_naive_timestamps_are_refused() -> None:
    # Given a naive start / When a snapshot id is derived / Then refused: its zone is a guess
    with pytest.raises(ValueError, match="no timezone"):
        window_snapshot_id(datetime(2010, 3, 1))  # noqa: DTZ001 - the point of the test
    # And an aware time in another zone comes back as the same instant in UTC
    in_new_york = START.astimezone(timezone(timedelta(hours=-5)))
    assert as_utc(in_new_york) == START and as_utc(in_new_york).tzinfo is UTC, "not in UTC"


def test_drift_options_pin_distances_by_default() -> None:
    # Given no drift settings / Then distances are pinned, not left to Evidently's choice
    options = DriftOptions()
    assert (options.numerical_method, options.categorical_method) == (
        "wasserstein",
        "jensenshannon",
    ), "default drift methods changed"


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
    # Given a p-value test, a bound out of range, a string or an unknown field / Then refused
    with pytest.raises(pydantic.ValidationError):
        DriftOptions(**bad)  # type: ignore[arg-type]


def test_one_class_window_has_no_roc_auc_but_other_figures() -> None:
    # Given three labelled rows, all of one class, and an unlabelled one
    window = _window([0.0, 0.0, 0.0, np.nan], [0.9, 0.2, 0.1, 0.8])

    # Then ROC AUC is undefined, and the other figures use the labelled rows only
    assert quality_statistic(window, "roc_auc") is None, "ROC AUC is undefined on one class"
    assert quality_statistic(window, "positive_rate") == 0.0, "positive rate of one class"
    assert quality_statistic(window, "mean_score") == pytest.approx(0.4), (
        "mean score must use the labelled rows only"
    )


def test_unlabelled_window_has_no_quality_figure() -> None:
    # Given a window with no label yet / Then no quality figure is defined
    window = _window([np.nan, np.nan], [0.9, 0.1])
    for statistic in get_args(QualityStatistic):
        assert quality_statistic(window, statistic) is None, f"{statistic} without labels"


def test_top_decile_precision_counts_the_best_scored_tenth() -> None:
    # Given 20 labelled rows, the best-scored a subscriber, and a better-scored unlabelled one
    scores = np.linspace(0.0, 0.95, 20)
    labels = np.zeros(20)
    labels[-1] = 1.0
    window = pd.concat([_window(list(labels), list(scores)), _window([np.nan], [1.0])])

    # Then the top decile is the 2 best labelled rows, one of them the subscriber
    assert quality_statistic(window, "precision_top_decile") == 0.5, "wrong top decile"
    assert quality_statistic(window, "roc_auc") == 1.0, "the subscriber has the best score"
