"""The backtest's time-series selection: chosen on earlier folds, reported on the last one."""

from __future__ import annotations

import numpy as np

from telescore.core.backtest import LoopRun, StreamVariant, TrainingRun
from telescore.core.backtest_selection import (
    SelectionParams,
    fold_edges,
    fold_of,
    period_figures,
    select,
    summarise,
)

FIRST, TOTAL, WINDOW = 1_000, 4_000, 500
NO_LIMITS = SelectionParams(folds=3, max_calibration_gap=None, max_runs_per_10k_calls=None)


def _labels(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(TOTAL - FIRST) < 0.3).astype(np.float64)


def _scores(labels: np.ndarray, ranks: np.ndarray, seed: int) -> np.ndarray:
    """Scores that rank the labels where `ranks` is true, and are noise elsewhere."""
    noise = np.random.default_rng(seed).random(len(labels))
    return np.where(ranks, 0.2 + 0.3 * labels + 0.1 * noise, 0.2 + 0.4 * noise)


def _run(name: str, variant: StreamVariant, served: np.ndarray, labels: np.ndarray) -> LoopRun:
    return LoopRun(name, variant, FIRST, labels, served, None, "accepted")


def test_a_configuration_that_wins_only_on_the_report_period_is_not_chosen() -> None:
    # given two candidates on two stream variants, three folds of 1,000 rows after the first
    # champion: "steady" ranks well on folds 1-2 and not at all on fold 3, "late" the reverse
    edges = fold_edges(TOTAL, [FIRST], 3)
    early = np.arange(FIRST, TOTAL) < edges[2]
    runs = []
    for seed, window in ((1, WINDOW), (2, 2 * WINDOW)):
        variant = StreamVariant(window, 250, FIRST / TOTAL)
        labels = _labels(seed)
        runs.append(_run("steady", variant, _scores(labels, early, seed + 10), labels))
        runs.append(_run("late", variant, _scores(labels, ~early, seed + 20), labels))
    summaries = [summarise(run, edges) for run in runs]

    # when the backtest selects on the choose period
    selection = select(summaries, ("late", "steady"), edges, NO_LIMITS)

    # then the candidate that wins on the choose period is recommended, not the one that wins
    # only on the report period, and the figure reported is its own on that period
    late, steady = selection.evidence["late"], selection.evidence["steady"]
    assert late.report.of("pooled_roc_auc").median > 0.9, "the case: late wins the report period"
    assert steady.report.of("pooled_roc_auc").median < 0.6, "the case: steady loses it"
    assert steady.choose.of("pooled_roc_auc").median > late.choose.of("pooled_roc_auc").median, (
        "the case: steady wins the choose period"
    )
    assert selection.recommended == "steady", "chosen on the choose period only"
    last = selection.steps[-1]
    assert last.chosen == "steady", "the last cut chooses on folds 1-2"
    assert last.figures == steady.report, "the figure reported is the chosen one's, on fold 3"
    assert last.best_in_hindsight == "late", "the report period alone would have chosen late"


def test_a_candidate_over_a_limit_ranks_after_one_within_it_whatever_its_auc() -> None:
    # given "sharp" ranks better than "calibrated" but serves scores far above the positive rate
    edges = fold_edges(TOTAL, [FIRST], 3)
    variant = StreamVariant(WINDOW, 250, FIRST / TOTAL)
    labels = _labels(3)
    everywhere = np.ones(len(labels), dtype=bool)
    sharp = _run("sharp", variant, 0.5 + 0.5 * _scores(labels, everywhere, 4), labels)
    rate = labels.mean()
    calibrated_scores = np.clip(rate + 0.02 * (_scores(labels, everywhere, 5) - 0.35), 0, 1)
    calibrated = _run("calibrated", variant, calibrated_scores, labels)
    rule = SelectionParams(folds=3, max_calibration_gap=0.05, max_runs_per_10k_calls=None)

    # when they are ranked
    selection = select(
        [summarise(sharp, edges), summarise(calibrated, edges)],
        ("sharp", "calibrated"),
        edges,
        rule,
    )

    # then the one within the calibration limit comes first
    assert not selection.evidence["sharp"].within_limits, "sharp's gap is over 0.05"
    assert selection.evidence["calibrated"].within_limits, "calibrated's gap is within 0.05"
    assert selection.ranking == ("calibrated", "sharp"), "limits come before the figure"


def test_a_candidate_of_a_release_mode_the_rule_excludes_is_reported_never_recommended() -> None:
    # given "direct" ranks better than "shadow" on every fold
    edges = fold_edges(TOTAL, [FIRST], 3)
    variant = StreamVariant(WINDOW, 250, FIRST / TOTAL)
    labels = _labels(6)
    everywhere = np.ones(len(labels), dtype=bool)
    direct = _run("direct", variant, _scores(labels, everywhere, 7), labels)
    noisy = np.random.default_rng(8).random(len(labels)) < 0.5
    shadow = _run("shadow", variant, _scores(labels, noisy, 9), labels)
    summaries = [summarise(direct, edges), summarise(shadow, edges)]

    # when the deployment may release only by online test ("direct" is not allowed)
    selection = select(
        summaries, ("direct", "shadow"), edges, NO_LIMITS, ineligible=frozenset({"direct"})
    )
    unconstrained = select(summaries, ("direct", "shadow"), edges, NO_LIMITS)

    # then "shadow" is recommended at every cut, and "direct" is still reported beside it
    assert unconstrained.recommended == "direct", "without the rule the better one wins"
    assert selection.ranking == ("shadow", "direct"), f"ranking: {selection.ranking}"
    assert all(step.chosen == "shadow" for step in selection.steps), selection.steps
    assert "direct" in selection.evidence, "the excluded candidate's figures are kept"


def test_folds_cut_the_rows_every_variant_streams_and_earlier_rows_count_in_the_first() -> None:
    # given variants whose first champions learn 1,000 and 1,500 rows of 4,000
    edges = fold_edges(TOTAL, [1_000, 1_500], 5)

    # then five folds of 500 rows start after the larger first champion
    assert edges == (1_500, 2_000, 2_500, 3_000, 3_500, 4_000), "equal folds after 1,500"
    assert fold_of(1_000, edges) == 0, "a row streamed before the first edge is in fold 1"
    assert fold_of(2_000, edges) == 1, "an edge row starts its fold"
    assert fold_of(3_999, edges) == 4, "the last row is in the last fold"


def test_a_period_counts_its_own_windows_rows_and_training_runs() -> None:
    # given a run with training runs after windows 0, 2 and 5 (windows of 500 rows)
    variant = StreamVariant(WINDOW, 250, FIRST / TOTAL)
    labels = _labels(6)
    run = _run("x", variant, _scores(labels, np.ones(len(labels), dtype=bool), 7), labels)
    run.runs = [TrainingRun(index, 0, "why", "promoted", "") for index in (0, 2, 5)]
    edges = fold_edges(TOTAL, [FIRST], 3)

    # when its figures are taken over folds 2-3 (windows 2-5)
    figures = period_figures(run, edges, (1, 3))

    # then they cover those windows' rows and the runs after them
    assert figures is not None, "folds 2-3 hold windows"
    assert (figures.windows, figures.rows) == (4, 2_000), "windows 2-5: 2,000 rows"
    assert figures.training_runs == 2, "the runs after windows 2 and 5"
    assert figures.runs_per_10k_calls == 10.0, "2 runs in 2,000 calls"
