"""Release decisions: promote the challenger, roll it back, or wait for more evidence.

A challenger is released by canary (some prospects are shown its answers) or in the shadow (it
scores every request, its answers are logged and never shown). Outcomes, did the prospect
subscribe, arrive for the predictions of both arms. `decide_release` compares the arms on:

- guards, known as soon as requests are served: the error rate (server faults over the
  requests the arm accepted; requests refused for invalid input are the caller's doing and do
  not count), which may exceed the champion's by at most `max_error_rate_increase`, and the
  latency, judged twice: the median at most `max_p50_latency_ratio` times the champion's (plus
  `p50_latency_slack_ms`), and the p99 at most `max_p99_latency_ratio` times the champion's
  (plus `p99_latency_slack_ms`, tens of milliseconds). A model really slower is slower on every
  request, so its median moves, and the median of 100 requests barely moves when a loaded
  machine stalls a few of them; the p99 of 100 requests is one of those stalls (3-16 ms here,
  in both arms alike, against medians of 0.1-0.5 ms), so it only catches a tail far beyond
  them. They are judged before any outcome is in: a challenger that fails requests must not
  keep serving while outcomes trickle in for days.
- quality, once each arm has enough labelled rows of both classes: ROC AUC (the primary metric,
  the only one that can promote), precision in the top decile (what a caller working down the
  list feels) and conversion per call (only when both arms' answers were shown).

How the intervals are computed, and why:

- ROC AUC: DeLong's method. The AUC is a Mann-Whitney statistic whose variance has a closed form
  in the placement values (each positive's share of negatives scored below it, and the reverse),
  computed from one sort per arm. When both arms scored the same rows (`paired`, as in shadow
  mode, where every labelled row has both scores), the difference's variance takes the
  covariance of the two models' placements into account: two models that rank alike err alike,
  so a paired comparison sees a much smaller difference than two independent samples of the same
  size. DeLong rather than a bootstrap because a row bootstrap of 1,000 resamples on 100,000 rows
  draws 10^8 random indices and takes seconds here; DeLong takes milliseconds, needs no seed,
  and is what pROC's `roc.test` uses for paired curves.
- Top-decile precision: a bootstrap (`bootstrap_resamples`, seeded by `seed`, percentile
  interval), the same resamples for both models when paired, independent ones otherwise. A
  resample's top decile depends only on the rows near the decile cut, so the rows far above or
  far below it (six standard deviations of the cut's position) are merged into a few cells per
  label, and each resample is one multinomial draw over the cells. That is the row bootstrap's
  distribution (a resample's cut leaves the kept rows about once in 500 million), at a cost that
  grows with the square root of the rows: 0.15 s for 100,000 paired rows here.
- Conversion per call: Newcombe's hybrid score interval for a difference of two proportions
  (Wilson intervals of each arm combined), sound at low rates and small counts. Skipped when the
  challenger's answers were not shown (shadow mode: its conversion is unobservable).

Every interval is two-sided at `confidence`. A metric is "better" when its interval lies above
zero, "worse" when below, "inconclusive" otherwise. Two caveats of the defaults, both accepted:
three quality metrics each judged at 95% roll a true tie back now and then (a rolled-back
challenger only delays a release), and the decision is taken again as evidence accrues, so the
chance of a spurious promotion over a whole release is above the 2.5% of a single look. The
minimum rows, and `min_auc_gain` when needed, are the guard against early noise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from telescore.core.models import FrozenModel

Action = Literal["promote", "rollback", "wait"]
Verdict = Literal["better", "worse", "inconclusive", "acceptable"]
"""better/worse: the interval of the difference excludes zero; inconclusive: it does not;
acceptable: a guard (error rate, latency) within its limit."""


class ReleaseRules(FrozenModel):
    """When a released challenger is promoted, rolled back or given more time."""

    min_requests: int = Field(default=100, gt=0)
    """Requests each arm must have served before its error rate and latency are judged."""
    min_labelled_rows: int = Field(default=200, gt=0)
    """Labelled predictions each arm needs before its quality is compared."""
    min_positives: int = Field(default=20, ge=2)
    """Subscriptions among each arm's labelled rows before its quality is compared."""
    min_negatives: int = Field(default=20, ge=2)
    """Non-subscriptions among each arm's labelled rows before its quality is compared."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    """Two-sided confidence of every interval."""
    min_auc_gain: float = Field(default=0.0, ge=-0.05, lt=1.0)
    """The lower end of the ROC AUC gain's interval must exceed this to promote.

    0 or more: the challenger must be significantly better (a superiority test). Negative: a
    non-inferiority margin, e.g. -0.01 promotes a challenger whose gain is, with `confidence`,
    above -0.01 (no worse than the champion by more than 0.01). Why a margin: the online test
    is there to stop a regression, and a retrain on newer rows is the expected improvement; a
    retrain ranking as well as its champion is rarely *significantly* better, so a superiority
    test leaves it undecided until a newer retrain comes and the first champion serves on
    (backtest: median pooled ROC AUC 0.718 in the shadow against 0.731 released directly). A
    challenger significantly worse is still rolled back, margin or not. Bounded at -0.05: a
    wider margin would promote a real regression."""
    top_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    """Share of each arm's best-scored rows whose precision is compared (0.1: top decile)."""
    bootstrap_resamples: int = Field(default=1000, ge=100)
    """Resamples of the top-fraction precision's bootstrap."""
    seed: int = Field(default=0, ge=0)
    """Seed of the bootstrap: the same evidence and rules give the same decision."""
    max_error_rate_increase: float = Field(default=0.01, ge=0.0, le=1.0)
    """How far the challenger's error rate may exceed the champion's (0.01: one point)."""
    max_p50_latency_ratio: float = Field(default=1.5, ge=1.0)
    """How many times the champion's median latency the challenger's may reach: the guard
    that catches a model slower on every request."""
    p50_latency_slack_ms: float = Field(default=1.0, ge=0.0)
    """Milliseconds added to the median's limit, so that sub-millisecond differences on a fast
    champion (medians of 0.1-0.5 ms here) cannot roll a challenger back."""
    max_p99_latency_ratio: float = Field(default=1.5, ge=1.0)
    """How many times the champion's p99 latency the challenger's may reach."""
    p99_latency_slack_ms: float = Field(default=25.0, ge=0.0)
    """Milliseconds added to the p99's limit. The p99 of 100 requests is their worst one or two:
    on a loaded machine a scheduler stall of 3-16 ms (measured in the replay, in both arms
    alike), which a 1 ms slack took for a slower challenger (4 of 8 releases rolled back).
    25 ms is above those stalls and far below a tail a caller would feel; a challenger slower
    on every request is caught by the median's guard instead."""
    decide_after_rows: int | None = Field(default=10_000, gt=0)
    """Labelled rows per arm after which a challenger with no significant ROC AUC gain is
    rolled back ("no measurable gain") instead of waiting for ever; None: wait for ever.
    The trade-off: lower, and a real but small gain is thrown away before it could be
    measured; higher, and a challenger no better than the champion holds the release slot
    longer (it costs callers nothing, being no worse, but blocks the next candidate). At 10,000
    labelled rows per arm, a 10% positive rate and a ROC AUC near 0.7, an unpaired comparison
    finds a gain of 0.035 four times in five (simulated), a paired one a much smaller gain; a
    challenger whose gain is still not measurable by then is not worth the slot. Ties at a
    few thousand rows per arm wait."""

    @model_validator(mode="after")
    def _decide_after_the_minimum(self) -> ReleaseRules:
        if self.decide_after_rows is not None and self.decide_after_rows < self.min_labelled_rows:
            raise ValueError("decide_after_rows cannot be below min_labelled_rows")
        return self


@dataclass(frozen=True, eq=False, kw_only=True)
class ArmEvidence:
    """What one arm (champion or challenger) did during the release.

    `scores` and `labels` are its labelled predictions, row for row: the probability it gave
    and whether the prospect subscribed (1) or not (0). For a paired (shadow) comparison both
    arms hold the same rows in the same order.
    """

    scores: np.ndarray
    labels: np.ndarray
    requests: int
    """Requests this arm scored (shown or in the shadow)."""
    errors: int
    """Of those, how many the server failed (5xx)."""
    latency_p50_ms: float
    """Median scoring latency, from the prediction log (kept for the record, not judged)."""
    latency_p99_ms: float
    calls: int | None = None
    """Calls made on this arm's shown predictions; None when its answers were not shown."""
    subscriptions: int | None = None
    """Subscriptions from those calls; None exactly when `calls` is None."""
    refused: int = 0
    """Requests refused for the caller's invalid input, not among `requests`: recorded, never
    judged, since anyone who can reach the model could send them."""

    def __post_init__(self) -> None:
        scores = np.array(self.scores, dtype=np.float64).ravel()
        labels = np.array(self.labels).ravel()
        if len(scores) != len(labels):
            raise ValueError(f"scores: {len(scores)} scores for {len(labels)} labels")
        if not np.all(np.isfinite(scores)) or np.any((scores < 0) | (scores > 1)):
            raise ValueError("scores: every score must be a probability in [0, 1]")
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError("labels: every label must be 0 or 1")
        labels = labels.astype(np.int8)
        scores.setflags(write=False)
        labels.setflags(write=False)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)
        if not 0 <= self.errors <= self.requests:
            raise ValueError(f"errors: {self.errors} errors for {self.requests} requests")
        if self.refused < 0:
            raise ValueError(f"refused: {self.refused} is not a count")
        for name in ("latency_p50_ms", "latency_p99_ms"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: {value} is not a duration")
        if (self.calls is None) != (self.subscriptions is None):
            raise ValueError("calls and subscriptions: give both or neither")
        if self.calls is not None and not 0 <= (self.subscriptions or 0) <= self.calls:
            raise ValueError(f"subscriptions: {self.subscriptions} for {self.calls} calls")

    @property
    def labelled_rows(self) -> int:
        """Return how many predictions have an outcome."""
        return len(self.labels)

    @property
    def positives(self) -> int:
        """Return how many labelled predictions ended in a subscription."""
        return int(self.labels.sum())

    @property
    def negatives(self) -> int:
        """Return how many labelled predictions did not."""
        return self.labelled_rows - self.positives

    @property
    def error_rate(self) -> float | None:
        """Return failed requests over requests, None before any request."""
        return self.errors / self.requests if self.requests else None

    @property
    def conversion(self) -> float | None:
        """Return subscriptions per call, None when unobserved or no call was made."""
        if self.calls is None or self.subscriptions is None or self.calls == 0:
            return None
        return self.subscriptions / self.calls

    def summary(self) -> dict[str, int | float | None]:
        """Return the arm's counts and figures as plain values, for the decision log."""
        return {
            "labelled_rows": self.labelled_rows,
            "positives": self.positives,
            "requests": self.requests,
            "errors": self.errors,
            "refused": self.refused,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "calls": self.calls,
            "subscriptions": self.subscriptions,
        }


@dataclass(frozen=True)
class MetricComparison:
    """One metric of the challenger against the champion, as the decision saw it."""

    metric: str
    champion: float | None
    challenger: float | None
    difference: float
    """Challenger minus champion."""
    low: float | None
    """Lower end of the difference's interval; None for guards, which have a limit instead."""
    high: float | None
    verdict: Verdict
    method: str
    """How the interval or the limit was computed, in words."""


@dataclass(frozen=True)
class ReleaseDecision:
    """Promote, roll back or wait; why, in one line; and every comparison behind it."""

    action: Action
    reason: str
    comparisons: tuple[MetricComparison, ...]
    paired: bool
    champion: dict[str, int | float | None] = field(default_factory=dict)
    """The champion arm's counts (`ArmEvidence.summary`)."""
    challenger: dict[str, int | float | None] = field(default_factory=dict)

    def comparison(self, metric: str) -> MetricComparison | None:
        """Return the comparison of `metric`, if it was made."""
        return next((each for each in self.comparisons if each.metric == metric), None)

    def as_record(self) -> dict[str, Any]:
        """Return the decision as a plain mapping, for the decision log."""
        record = asdict(self)
        record["comparisons"] = [asdict(each) for each in self.comparisons]
        return record


def decide_release(
    champion: ArmEvidence, challenger: ArmEvidence, rules: ReleaseRules, *, paired: bool
) -> ReleaseDecision:
    """Decide from both arms' evidence whether to promote the challenger, roll it back or wait.

    In order: too little traffic to judge the guards waits; a guard breached rolls back; too few
    labelled rows (or of one class) waits; a quality metric significantly worse rolls back; a
    ROC AUC gain whose interval lies above `min_auc_gain` (significantly better when it is 0,
    non-inferior within the margin when negative) promotes; past
    `decide_after_rows` labelled rows per arm, no gain rolls back; anything else waits.
    `paired` says both arms scored the same labelled rows (shadow mode).
    """
    if paired and (
        champion.labelled_rows != challenger.labelled_rows
        or not np.array_equal(champion.labels, challenger.labels)
    ):
        raise ValueError("paired: both arms must hold the same labelled rows in the same order")

    def decision(
        action: Action, reason: str, comparisons: list[MetricComparison]
    ) -> ReleaseDecision:
        return ReleaseDecision(
            action, reason, tuple(comparisons), paired, champion.summary(), challenger.summary()
        )

    short = [
        f"{name} served {arm.requests} requests ({rules.min_requests} required)"
        for name, arm in (("champion", champion), ("challenger", challenger))
        if arm.requests < rules.min_requests
    ]
    if short:
        return decision("wait", "waiting for traffic: " + "; ".join(short), [])
    guards = _guards(champion, challenger, rules)
    breached = [each for each in guards if each.verdict == "worse"]
    if breached:
        return decision("rollback", "; ".join(_guard_reason(each) for each in breached), guards)

    missing = _missing_outcomes(champion, challenger, rules)
    if missing:
        return decision("wait", "waiting for outcomes: " + "; ".join(missing), guards)
    quality = _quality(champion, challenger, rules, paired=paired)
    comparisons = quality + guards
    auc = quality[0]
    worse = [each for each in quality if each.verdict == "worse"]
    if worse:
        return decision(
            "rollback",
            "; ".join(f"{_describe(each, rules)}: significantly worse" for each in worse),
            comparisons,
        )
    if auc.low is not None and auc.low > rules.min_auc_gain:
        test = (
            "significantly better"
            if rules.min_auc_gain >= 0
            else f"non-inferior (gain above {rules.min_auc_gain:+.3f})"
        )
        return decision(
            "promote", f"{_describe(auc, rules)}: {test}, nothing significantly worse", comparisons
        )
    rows = min(champion.labelled_rows, challenger.labelled_rows)
    if rules.decide_after_rows is not None and rows >= rules.decide_after_rows:
        lacking = "no measurable gain" if rules.min_auc_gain >= 0 else "non-inferiority not shown"
        return decision(
            "rollback",
            f"{lacking} after {rows:,} labelled rows per arm: {_describe(auc, rules)}",
            comparisons,
        )
    pending = (
        f"gain not yet above the required {rules.min_auc_gain:.3f}"
        if auc.verdict == "better" or rules.min_auc_gain < 0
        else "no significant difference yet"
    )
    return decision(
        "wait",
        f"{pending}: {_describe(auc, rules)} on {champion.labelled_rows:,} and "
        f"{challenger.labelled_rows:,} labelled rows",
        comparisons,
    )


def _guards(
    champion: ArmEvidence, challenger: ArmEvidence, rules: ReleaseRules
) -> list[MetricComparison]:
    champion_errors, challenger_errors = champion.error_rate or 0.0, challenger.error_rate or 0.0
    error_limit = champion_errors + rules.max_error_rate_increase
    median_limit = (
        champion.latency_p50_ms * rules.max_p50_latency_ratio + rules.p50_latency_slack_ms
    )
    latency_limit = (
        champion.latency_p99_ms * rules.max_p99_latency_ratio + rules.p99_latency_slack_ms
    )
    return [
        MetricComparison(
            metric="error_rate",
            champion=champion_errors,
            challenger=challenger_errors,
            difference=challenger_errors - champion_errors,
            low=None,
            high=None,
            verdict="worse" if challenger_errors > error_limit else "acceptable",
            method=f"limit {error_limit:.2%}: champion's + {rules.max_error_rate_increase:.2%}",
        ),
        MetricComparison(
            metric="latency_p50_ms",
            champion=champion.latency_p50_ms,
            challenger=challenger.latency_p50_ms,
            difference=challenger.latency_p50_ms - champion.latency_p50_ms,
            low=None,
            high=None,
            verdict="worse" if challenger.latency_p50_ms > median_limit else "acceptable",
            method=(
                f"limit {median_limit:.2f} ms: champion's x {rules.max_p50_latency_ratio:g} "
                f"+ {rules.p50_latency_slack_ms:g} ms"
            ),
        ),
        MetricComparison(
            metric="latency_p99_ms",
            champion=champion.latency_p99_ms,
            challenger=challenger.latency_p99_ms,
            difference=challenger.latency_p99_ms - champion.latency_p99_ms,
            low=None,
            high=None,
            verdict="worse" if challenger.latency_p99_ms > latency_limit else "acceptable",
            method=(
                f"limit {latency_limit:.2f} ms: champion's x {rules.max_p99_latency_ratio:g} "
                f"+ {rules.p99_latency_slack_ms:g} ms"
            ),
        ),
    ]


def _guard_reason(guard: MetricComparison) -> str:
    if guard.metric == "error_rate":
        return (
            f"error rate {guard.challenger:.2%} against the champion's {guard.champion:.2%} "
            f"({guard.method})"
        )
    which = "median" if guard.metric == "latency_p50_ms" else "p99"
    return (
        f"{which} latency {guard.challenger:.2f} ms against the champion's "
        f"{guard.champion:.2f} ms ({guard.method})"
    )


def _missing_outcomes(
    champion: ArmEvidence, challenger: ArmEvidence, rules: ReleaseRules
) -> list[str]:
    missing = []
    for name, arm in (("champion", champion), ("challenger", challenger)):
        shortfalls = [
            f"{count:,} {what} ({required:,} required)"
            for count, required, what in (
                (arm.labelled_rows, rules.min_labelled_rows, "labelled rows"),
                (arm.positives, rules.min_positives, "subscriptions"),
                (arm.negatives, rules.min_negatives, "non-subscriptions"),
            )
            if count < required
        ]
        if shortfalls:
            missing.append(f"{name} has " + ", ".join(shortfalls))
    return missing


def _quality(
    champion: ArmEvidence, challenger: ArmEvidence, rules: ReleaseRules, *, paired: bool
) -> list[MetricComparison]:
    """Return ROC AUC (first), top-fraction precision and, when observed, conversion."""
    z = NormalDist().inv_cdf((1 + rules.confidence) / 2)
    rng = np.random.default_rng(rules.seed)
    comparisons = [
        _compare_auc(champion, challenger, z, paired=paired, confidence=rules.confidence),
        _compare_top_precision(champion, challenger, rules, rng, paired=paired),
    ]
    if champion.conversion is not None and challenger.conversion is not None:
        comparisons.append(_compare_conversion(champion, challenger, z, rules.confidence))
    return comparisons


def _verdict(low: float, high: float) -> Verdict:
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "inconclusive"


def _describe(comparison: MetricComparison, rules: ReleaseRules) -> str:
    names = {
        "roc_auc": "ROC AUC",
        "top_precision": f"top {rules.top_fraction:.0%} precision",
        "conversion": "conversion per call",
    }
    return (
        f"{names.get(comparison.metric, comparison.metric)} {comparison.challenger:.3f} "
        f"against {comparison.champion:.3f} ({comparison.difference:+.3f}, "
        f"{rules.confidence * 100:.4g}% interval {comparison.low:+.3f} to {comparison.high:+.3f})"
    )


# ROC AUC: DeLong


def _midranks(values: np.ndarray) -> np.ndarray:
    """Return 1-based ranks, ties given the mean of their ranks (scipy's rankdata 'average')."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values))
    ranks[order] = np.repeat((starts + ends + 1) / 2, ends - starts)
    return ranks


def _placements(scores: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Return the AUC and DeLong's placement values of the positives and of the negatives.

    A positive's placement is the share of negatives scored below it (ties count half), a
    negative's the share of positives scored above it; the AUC is the mean of either.
    """
    positive, negative = scores[labels == 1], scores[labels == 0]
    pooled = _midranks(np.concatenate([positive, negative]))
    of_positives = (pooled[: len(positive)] - _midranks(positive)) / len(negative)
    of_negatives = 1.0 - (pooled[len(positive) :] - _midranks(negative)) / len(positive)
    return float(of_positives.mean()), of_positives, of_negatives


def _compare_auc(
    champion: ArmEvidence, challenger: ArmEvidence, z: float, *, paired: bool, confidence: float
) -> MetricComparison:
    return compare_auc(
        (champion.scores, champion.labels),
        (challenger.scores, challenger.labels),
        paired=paired,
        confidence=confidence,
        z=z,
    )


def compare_auc(
    champion: tuple[np.ndarray, np.ndarray],
    challenger: tuple[np.ndarray, np.ndarray],
    *,
    paired: bool,
    confidence: float,
    z: float | None = None,
) -> MetricComparison:
    """Compare two models' ROC AUC by DeLong's method: (scores, labels) of each, row for row.

    `paired`: both scored the same rows (the same labels, in the same order), so the
    difference's variance takes their covariance into account. Each side needs both classes.
    The offline gate of a retrained candidate (`core.promotion.paired_auc_test`) uses the same
    test as an online release.
    """
    z = z if z is not None else NormalDist().inv_cdf((1 + confidence) / 2)
    auc_champion, positives_champion, negatives_champion = _placements(*champion)
    auc_challenger, positives_challenger, negatives_challenger = _placements(*challenger)
    if paired:
        # Same rows, same labels: the placements pair up row by row, and the variance of their
        # difference carries the covariance of the two models.
        variance = np.var(positives_challenger - positives_champion, ddof=1) / len(
            positives_champion
        ) + np.var(negatives_challenger - negatives_champion, ddof=1) / len(negatives_champion)
    else:
        variance = sum(
            np.var(placements, ddof=1) / len(placements)
            for placements in (
                positives_champion,
                negatives_champion,
                positives_challenger,
                negatives_challenger,
            )
        )
    difference = auc_challenger - auc_champion
    margin = z * math.sqrt(variance)
    return MetricComparison(
        metric="roc_auc",
        champion=auc_champion,
        challenger=auc_challenger,
        difference=difference,
        low=difference - margin,
        high=difference + margin,
        verdict=_verdict(difference - margin, difference + margin),
        method=f"DeLong, {'paired' if paired else 'unpaired'}, {confidence * 100:.4g}%",
    )


# Top-fraction precision: bootstrap


def _top_rows(rows: int, fraction: float) -> int:
    # As metrics.lift_top_fraction counts them.
    return max(1, int(round(rows * fraction)))


def _top_precision(scores: np.ndarray, labels: np.ndarray, fraction: float) -> float:
    """Return the positive rate among the best-scored `fraction` of rows (ties in row order)."""
    order = np.argsort(-scores, kind="stable")
    return float(labels[order[: _top_rows(len(scores), fraction)]].mean())


def _bootstrap_top_precision(
    columns: list[np.ndarray],
    labels: np.ndarray,
    fraction: float,
    resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Return the top-fraction precision of each score column in each bootstrap resample.

    Shape (columns, resamples); the columns share their resamples (a paired bootstrap). Rows
    within six standard deviations of a column's cut keep a cell each; the others only matter
    by their count and label, so they are merged into one cell per label and side of each cut.
    One multinomial draw of `rows` over the cells is one resample.
    """
    rows = len(labels)
    top = _top_rows(rows, fraction)
    # The k-th best row of a resample sits at original rank r when Binomial(rows, r / rows)
    # crosses k: a deviation of sqrt(k (1 - k / rows)) ranks.
    half_width = math.ceil(6 * math.sqrt(top * (1 - top / rows))) + 2
    ranks = np.empty((len(columns), rows), dtype=np.int64)
    for index, scores in enumerate(columns):
        ranks[index, np.argsort(-scores, kind="stable")] = np.arange(rows)
    near_cut = np.any(np.abs(ranks - top) <= half_width, axis=0)
    above = ranks < top  # for rows away from every cut: which side of each cut they are on
    merged_key = (above.T * (2 ** np.arange(len(columns)))).sum(axis=1) * 2 + labels
    keys, sizes = np.unique(merged_key[~near_cut], return_counts=True)

    near_rows = np.flatnonzero(near_cut)
    cell_labels = np.r_[labels[near_rows], keys % 2]
    cell_sizes = np.r_[np.ones(len(near_rows), dtype=np.int64), sizes]
    counts = rng.multinomial(rows, cell_sizes / rows, size=resamples)

    precisions = np.empty((len(columns), resamples))
    for index in range(len(columns)):
        merged_above = (keys // 2 >> index) % 2 == 1
        # Position of each cell in this column's order: merged cells before or after every row
        # near the cut (their own order is moot while the cut stays near it).
        position = np.r_[ranks[index, near_rows], np.where(merged_above, -1, rows)]
        order = np.argsort(position, kind="stable")
        ordered, positive = counts[:, order], cell_labels[order]
        before = np.cumsum(ordered, axis=1) - ordered
        taken = np.clip(top - before, 0, ordered)
        precisions[index] = (taken * positive).sum(axis=1) / top
    return precisions


def _in_canonical_order(
    champion: ArmEvidence, challenger: ArmEvidence, *, paired: bool
) -> tuple[ArmEvidence, ArmEvidence]:
    """Return both arms' rows sorted by their scores and labels, whatever order they came in.

    The bootstrap's draws (and the top rows' ties) follow the rows' order: the same evidence,
    read in stream order by the backtest and in the log's order by the promotion, must give
    the same interval and so the same decision. Paired arms keep their rows aligned.
    """

    def sorted_arm(arm: ArmEvidence, order: np.ndarray) -> ArmEvidence:
        return replace(arm, scores=arm.scores[order], labels=arm.labels[order])

    if paired:
        order = np.lexsort((champion.labels, challenger.scores, champion.scores))
        return sorted_arm(champion, order), sorted_arm(challenger, order)
    return (
        sorted_arm(champion, np.lexsort((champion.labels, champion.scores))),
        sorted_arm(challenger, np.lexsort((challenger.labels, challenger.scores))),
    )


def _compare_top_precision(
    champion: ArmEvidence,
    challenger: ArmEvidence,
    rules: ReleaseRules,
    rng: np.random.Generator,
    *,
    paired: bool,
) -> MetricComparison:
    fraction, resamples = rules.top_fraction, rules.bootstrap_resamples
    champion, challenger = _in_canonical_order(champion, challenger, paired=paired)
    champion_value = _top_precision(champion.scores, champion.labels, fraction)
    challenger_value = _top_precision(challenger.scores, challenger.labels, fraction)
    if paired:
        both = _bootstrap_top_precision(
            [champion.scores, challenger.scores], champion.labels, fraction, resamples, rng
        )
        differences = both[1] - both[0]
    else:
        (challenger_draws,) = _bootstrap_top_precision(
            [challenger.scores], challenger.labels, fraction, resamples, rng
        )
        (champion_draws,) = _bootstrap_top_precision(
            [champion.scores], champion.labels, fraction, resamples, rng
        )
        differences = challenger_draws - champion_draws
    alpha = 1 - rules.confidence
    low, high = (float(each) for each in np.quantile(differences, [alpha / 2, 1 - alpha / 2]))
    return MetricComparison(
        metric="top_precision",
        champion=champion_value,
        challenger=challenger_value,
        difference=challenger_value - champion_value,
        low=low,
        high=high,
        verdict=_verdict(low, high),
        method=(
            f"bootstrap, {'paired' if paired else 'unpaired'}, {resamples} resamples, "
            f"seed {rules.seed}, percentile {rules.confidence * 100:.4g}%"
        ),
    )


# Conversion per call: Newcombe


def _wilson(successes: int, trials: int, z: float) -> tuple[float, float]:
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return centre - half, centre + half


def _compare_conversion(
    champion: ArmEvidence, challenger: ArmEvidence, z: float, confidence: float
) -> MetricComparison:
    # Both observed: the caller checked that conversion is not None, so calls > 0.
    rates, bounds = [], []
    for arm in (champion, challenger):
        calls, subscriptions = arm.calls or 0, arm.subscriptions or 0
        rates.append(subscriptions / calls)
        bounds.append(_wilson(subscriptions, calls, z))
    (champion_rate, challenger_rate), ((low_c, high_c), (low_h, high_h)) = rates, bounds
    difference = challenger_rate - champion_rate
    low = difference - math.hypot(challenger_rate - low_h, high_c - champion_rate)
    high = difference + math.hypot(high_h - challenger_rate, champion_rate - low_c)
    return MetricComparison(
        metric="conversion",
        champion=champion_rate,
        challenger=challenger_rate,
        difference=difference,
        low=low,
        high=high,
        verdict=_verdict(low, high),
        method=f"Newcombe hybrid score interval, {confidence * 100:.4g}%",
    )
