"""The loop played offline (`core.backtest`) on the real 2008-2010 data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from telescore.core.backtest import History, LoopConfig, StreamVariant, holdout_gate, run_loop
from telescore.core.backtest_grid import resolve_candidate
from telescore.core.features import build_pipeline, split_features_label
from telescore.core.params import ModelParams, ValidationParams
from telescore.core.prequential import stream_quality
from telescore.io.params_files import load_backtest_plan

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "data" / "bank-additional-full.csv.gz"


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """The dataset as the backtest reads it: `duration` dropped."""
    return pd.read_csv(DATA, sep=";").drop(columns=["duration"])


@pytest.fixture(scope="module")
def plan_candidates() -> dict[str, LoopConfig]:
    """The shipped grid's candidates, by name."""
    plan = load_backtest_plan(ROOT / "backtest.yaml", ROOT / "params.yaml")
    return {each.name: each for each in plan.candidates}


def _config(name: str, **overrides: dict[str, object]) -> LoopConfig:
    document = yaml.safe_load((ROOT / "params.yaml").read_text())
    return resolve_candidate(document, name, overrides)


@pytest.mark.slow
def test_the_backtest_gives_the_replays_own_figures(
    frame: pd.DataFrame, plan_candidates: dict[str, LoopConfig]
) -> None:
    # given the whole history, the configuration `telescore replay` measured with every service
    # (params.yaml released directly, a retrain every 2nd window: the grid's `direct`) and the
    # replay's default stream: first champion on 20%, 2,000-row windows, outcomes 1,000 late
    history = History(frame)
    variant = StreamVariant(2000, 1000, 0.2)

    # when the loop is played offline
    run = run_loop(history, plan_candidates["direct"], variant)

    # then it gives what `telescore replay` measured with every service (README "Replay"):
    # pooled AUC 0.728, gap 0.038, lift 1.28, 8 runs of which 4 promoted (the same candidates
    # beat the champion on the same holdouts); never retrained 0.570/0.114
    loop = stream_quality(run.labels, run.served, 2000)
    assert run.baseline is not None, "the first champion passed its gate"
    baseline = stream_quality(run.labels, run.baseline, 2000)
    figures = (loop.pooled_roc_auc, loop.mean_calibration_gap, loop.mean_top_decile_lift)
    assert figures == pytest.approx((0.728, 0.038, 1.28), abs=0.006), f"the loop: {figures}"
    outcomes = [each.outcome for each in run.runs]
    assert outcomes.count("promoted") == 4, f"4 of 8 runs promoted: {run.runs}"
    assert len(outcomes) == 8, f"8 runs: {run.runs}"
    assert (baseline.pooled_roc_auc, baseline.mean_calibration_gap) == pytest.approx(
        (0.570, 0.114), abs=0.006
    ), "the first champion never retrained"


@pytest.mark.slow
def test_the_model_gate_refuses_what_the_deepchecks_suite_refuses(frame: pd.DataFrame) -> None:
    from telescore.core.features import linear_feature_importance
    from telescore.validation.deepchecks import DeepchecksValidator, labelled_rows

    # given params.yaml's model fitted on the earliest 20% of the rows less a 4,000-row holdout
    # (it failed its gate: holdout ROC AUC 0.54, gain over a constant model 8.35%)
    features, labels = split_features_label(frame.iloc[:8237])
    train, holdout = slice(0, 8237 - 4000), slice(8237 - 4000, 8237)
    pipeline = build_pipeline(ModelParams()).fit(features.iloc[train], labels[train])
    scores = pipeline.predict_proba(features)[:, 1]

    for bounds in (ValidationParams(), ValidationParams(min_roc_auc=0.5, min_gain_over_constant=0)):
        # when both judge it
        ours = holdout_gate(
            (labels[train], scores[train]), (labels[holdout], scores[holdout]), bounds
        )
        report = DeepchecksValidator(
            pipeline, bounds, feature_importance=linear_feature_importance(pipeline)
        ).validate(
            labelled_rows(features.iloc[holdout], labels[holdout]),
            reference=labelled_rows(features.iloc[train], labels[train]),
            report_dir=Path("/tmp") / "telescore-test-gate",  # noqa: S108 - a throwaway report
        )
        scored = [
            each
            for each in report.failures
            if any(
                name in each for name in ("ROC Report", "Simple Model", "Train Test Performance")
            )
        ]
        # then they agree on the conditions that read the model's scores
        assert len(ours) == len(scored), f"ours {ours} / deepchecks {scored}"


def test_with_outcomes_later_than_the_stream_nothing_retrains(frame: pd.DataFrame) -> None:
    # given a slice whose outcomes would arrive only after its end
    history = History(frame.iloc[:6000])
    loose = {"min_roc_auc": 0.0, "min_gain_over_constant": 0.0, "max_auc_degradation": 1.0}
    config = _config(
        "late",
        training={
            "calibration": {"enabled": True},
            "split": {"holdout_rows": 500},
            "validation": loose,
        },
    )
    variant = StreamVariant(1000, 10_000, 0.3)

    # when the loop is played
    run = run_loop(history, config, variant)

    # then no outcome ever reaches the monitor: no retrain, and the first champion serves every
    # window with the offset fitted at its registration, never refitted
    assert run.first_champion == "accepted", run.first_champion
    assert run.runs == [], f"no labelled production rows, no run: {run.runs}"
    assert run.baseline is not None
    shift = np.log(run.served / (1 - run.served)) - np.log(run.baseline / (1 - run.baseline))
    assert np.ptp(shift) < 1e-9, "one offset for the whole stream"
    assert abs(shift[0]) > 0.01, "the registration offset moved the scores"


def test_a_first_champion_that_fails_starts_cold_and_the_loop_serves_once_one_passes(
    frame: pd.DataFrame,
) -> None:
    # given a first champion on 5% of 10,000 rows: too few for params.yaml's 1,000-row holdout;
    # gates a model can pass on this slice
    history = History(frame.iloc[:10_000])
    variant = StreamVariant(1000, 250, 0.05)
    loose = {"min_roc_auc": 0.5, "min_gain_over_constant": 0.0, "max_auc_degradation": 0.5}
    config = _config("cold", training={"validation": loose})

    # when the loop is played
    run = run_loop(history, config, variant)

    # then nothing ranks the first windows (one score for all, the known positive rate), a
    # training run is retried as outcomes accumulate, and the first that passes is served
    assert "cannot hold out" in run.first_champion, run.first_champion
    assert run.unserved_windows >= 1, "windows with no model"
    assert np.ptp(run.served[:1000]) == 0.0, "the first window: one score for every call"
    promoted = [each for each in run.runs if each.outcome == "promoted"]
    assert promoted, f"a model passed and was served: {run.runs}"
    served_from = (promoted[0].after_window + 1) * 1000
    assert np.ptp(run.served[served_from : served_from + 1000]) > 0, "it ranks the next window"


def test_in_a_shadow_release_mode_a_retrained_model_is_promoted_only_by_its_shadow_release(
    frame: pd.DataFrame, plan_candidates: dict[str, LoopConfig]
) -> None:
    # given params.yaml (released in the shadow), 20,000 rows
    history = History(frame.iloc[:20_000])

    # when its loop is played
    run = run_loop(history, plan_candidates["params"], StreamVariant(2000, 500, 0.2))

    # then every retrained model that passes becomes a challenger, never champion directly,
    # and a release is decided after at least one window in the shadow
    outcomes = {each.outcome for each in run.runs}
    assert "challenger" in outcomes, f"challengers: {run.runs}"
    assert "promoted" not in outcomes, "no direct promotion in the shadow release mode"
    assert run.releases, "the challengers' releases are recorded"
    for release in run.releases:
        if release.decided_after_window is not None and release.action != "replaced":
            assert release.decided_after_window > release.registered_after_window, release


@pytest.mark.parametrize("during_release", ["hold", "supersede"])
def test_a_release_under_way_holds_the_scheduled_retrain_only_when_the_policy_says_so(
    frame: pd.DataFrame, during_release: str
) -> None:
    # given params.yaml released in the shadow, with a retrain held or not during a release
    history = History(frame.iloc[:20_000])
    config = _config(
        during_release,
        training={"release": {"mode": "shadow"}},
        monitoring={"policy": {"retrain_during_release": during_release}},
    )

    # when its loop is played with outcomes a window late
    run = run_loop(history, config, StreamVariant(1000, 1000, 0.2))

    # then with hold no challenger is replaced and no training runs while one is undecided;
    # with supersede a scheduled retrain replaces an undecided challenger
    actions = [each.action for each in run.releases]
    assert run.releases, f"releases were started: {run.runs}"
    if during_release == "supersede":
        assert "replaced" in actions, f"supersede replaces undecided challengers: {actions}"
        return
    assert "replaced" not in actions, f"hold never replaces a challenger: {run.releases}"
    for release in run.releases:
        end = release.decided_after_window or len(run.labels)
        during = [
            each for each in run.runs if release.registered_after_window < each.after_window < end
        ]
        assert not during, f"no training run while {release} was under way: {during}"


def test_a_release_counts_scoring_requests_not_rows(
    frame: pd.DataFrame, plan_candidates: dict[str, LoopConfig]
) -> None:
    # given params.yaml (a release needs `min_requests`, 100, per arm) on 30,000 rows in
    # windows of 1,000, scored 10 rows a request (100 a window) or 100 (10 a window)
    history = History(frame.iloc[:30_000])
    min_requests = plan_candidates["params"].release.min_requests
    windows_needed = {rows: -(-min_requests * rows // 1000) for rows in (10, 100)}

    # when its loop is played on each
    decided = {
        rows: [
            each.decided_after_window - each.registered_after_window
            for each in run_loop(
                history, plan_candidates["params"], StreamVariant(1000, 250, 0.2, rows)
            ).releases
            if each.decided_after_window is not None and each.action != "replaced"
        ]
        for rows in (10, 100)
    }

    # then no release is decided before its arms served `min_requests` requests, however many
    # rows they scored: one window of 10-row requests can decide, 100-row ones need ten
    assert decided[10] and decided[100], f"releases decided on both streams: {decided}"
    assert min(decided[10]) < windows_needed[100], f"small requests decide sooner: {decided}"
    assert min(decided[100]) >= windows_needed[100], f"large requests wait: {decided}"
