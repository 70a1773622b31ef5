"""The loop, played offline: a labelled history replayed in time order under one configuration.

What `telescore replay` does with services (MLServer, the monitor, the training flow, outcomes
reported late), done here with the platform's own rules and no service, in seconds:

- the first champion is trained on the earliest rows of the history (its `training` params);
- the other rows are served a window at a time by the champion, its log-odds shifted by its
  offset (`core.scoring.shift_log_odds`); a row's outcome is known `label_delay_rows` later;
- after each window the promotion judges the release under way (below), then the monitor
  refits the offset on the newest labelled production rows
  (`core.scoring.fit_logit_offset`, as `jobs.monitoring.recalibrate`), judges the champion's
  windows on their labelled rows, older ones again as their outcomes arrive (within
  `lookback_windows`), and decides (`core.retraining.decide_retraining`);
- a training run learns the base rows and the labelled production rows (`retrain_overrides`
  applied, as the monitor triggers it), holds out the newest `split.holdout_rows`, passes the
  model gate, fits its registration offset, and is compared with the champion on the holdout
  rows the champion never saw (`core.promotion.decide_promotion`, as `jobs.training.register`);
- with `training.release.mode` shadow or canary (not `direct`), a winner becomes the
  challenger and goes to a shadow release: it scores every row of the next windows unseen,
  and `core.release.decide_release` promotes it or rolls it back on their outcomes, paired
  with the champion's. A retrain asked for while it is undecided waits for the decision when
  `monitoring.policy.retrain_during_release` is "hold" (`core.retraining.decide_retraining`, as
  the monitor); with "supersede" a newer challenger replaces it, as the registry's
  `challenger` alias moves;
- with no champion (the first one refused by its gate, "cold start"), nothing ranks the
  calls: their rows are scored with the known positive rate, and training is retried after each
  window once `min_training_labels` outcomes are in (and the cooldown is over).

The model gate replays the figures of the Deepchecks suite (`validation/deepchecks.py`) that
judge the model on its holdout, with the same thresholds and comparisons: test size, holdout
ROC AUC, gain over a constant model, train-to-holdout degradation (`holdout_gate`). The data
checks (Great Expectations, drift, new categories, samples mix) are not replayed: on rows the
platform served or trained on already they pass, and drift does not decide a retrain unless
`drift_counts_without_labels` is on, which a candidate may not set here.

Models come from `core.features.build_pipeline` and score as MLServer serves them
(`core.scoring.compile_scorer`). A fit is cached by its model and training rows, so candidates
that share a model share their fits. Pure: no file, no service.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from telescore.core.features import build_pipeline, split_features_label
from telescore.core.metrics import classification_metrics, lift_top_fraction
from telescore.core.monitoring import MonitoringParams
from telescore.core.params import ModelParams, TrainingParams, ValidationParams
from telescore.core.promotion import PromotionDecision, decide_promotion
from telescore.core.release import ArmEvidence, ReleaseRules, decide_release
from telescore.core.requests import FeatureBatch
from telescore.core.retraining import RunState, WindowHealth, decide_retraining
from telescore.core.schema import FEATURES
from telescore.core.scoring import compile_scorer, fit_logit_offset, shift_log_odds

MIN_TEST_ROWS = 100
"""Deepchecks' `DatasetsSizeComparison` condition in the suite: at least 100 holdout rows."""
MAX_GAIN = 50.0
"""Deepchecks clips the gain over a constant model to [-50, 50] (`SimpleModelComparison`)."""
CONSTANT_MODEL_AUC = 0.5
"""ROC AUC of the constant model `SimpleModelComparison(strategy="most_frequent")` compares."""
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
"""Window starts, an hour apart: the policy reads only their order."""

RunOutcome = Literal["promoted", "challenger", "kept", "refused", "failed", "not run"]


@dataclass(frozen=True)
class StreamVariant:
    """How the history is played: window size, label delay, the first champion's share."""

    window_rows: int
    label_delay_rows: int
    first_champion_fraction: float
    request_rows: int = 20
    """Rows per scoring request, as `telescore replay` sends them: a release's arms count
    requests (`release.min_requests`), as MLServer does, not rows."""

    def first_rows(self, total: int) -> int:
        """Return the rows the first champion learns, of a history of `total` rows."""
        return int(total * self.first_champion_fraction)

    @property
    def label(self) -> str:
        """Name the variant in tables: window, delay, first champion share."""
        return f"w{self.window_rows} d{self.label_delay_rows} f{self.first_champion_fraction:g}"


@dataclass(frozen=True)
class LoopConfig:
    """One candidate configuration, resolved: what the platform would run with its params."""

    name: str
    training: TrainingParams
    """The first champion's training run (the `training` section)."""
    retraining: TrainingParams
    """A retraining run's: `training` with `monitoring.retrain_overrides` applied."""
    monitoring: MonitoringParams
    release: ReleaseRules


@dataclass(frozen=True)
class TrainingRun:
    """A training run of the loop: when, why, and what became of its model."""

    after_window: int
    after_row: int
    """Rows of the history scored when it ran (absolute)."""
    reason: str
    outcome: RunOutcome
    detail: str


@dataclass(frozen=True)
class Release:
    """A challenger's shadow release: when it started and ended, and how."""

    registered_after_window: int
    decided_after_window: int | None
    action: Literal["promote", "rollback", "replaced", "undecided"]
    reason: str


@dataclass
class LoopRun:
    """What one configuration did on one stream variant, row by row."""

    candidate: str
    variant: StreamVariant
    first_row: int
    """Absolute index of the first streamed row (the rows before trained the first champion)."""
    labels: np.ndarray
    """The streamed rows' labels, 0/1."""
    served: np.ndarray
    """The score each streamed row was served (the known positive rate when nothing ranked)."""
    baseline: np.ndarray | None
    """The first champion's own scores, never retrained nor shifted; None if it was refused."""
    first_champion: str
    """"accepted", or why its gate refused it."""
    runs: list[TrainingRun] = field(default_factory=list)
    releases: list[Release] = field(default_factory=list)
    unserved_windows: int = 0
    """Windows scored with no champion (cold start)."""

    def window_starts(self) -> range:
        """Return the absolute first row of every window."""
        return range(self.first_row, self.first_row + len(self.labels), self.variant.window_rows)


class History:
    """A labelled history in time order, and the models fitted on it (cached by training rows)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.features, self.labels = split_features_label(frame)
        # The rows as MLServer receives them: each fit then scores all of them in milliseconds.
        self.batch = FeatureBatch.of({name: self.features[name].tolist() for name in FEATURES})
        self._fits: dict[tuple[ModelParams, tuple[tuple[int, int], ...]], np.ndarray] = {}
        self.fits = 0

    def __len__(self) -> int:
        return len(self.labels)

    def scores(self, model: ModelParams, rows: np.ndarray) -> np.ndarray:
        """Return the probabilities, on every row, of `model` fitted on `rows` (cached)."""
        key = (model, _ranges(rows))
        if key not in self._fits:
            pipeline = build_pipeline(model)
            pipeline.fit(self.features.iloc[rows], self.labels[rows])
            self._fits[key] = np.asarray(compile_scorer(pipeline)(self.batch), dtype=np.float64)
            self.fits += 1
        return self._fits[key]

    def forget(self) -> None:
        """Drop the cached fits (their memory): another stream variant shares none of them."""
        self._fits.clear()


def _ranges(rows: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Return sorted row indices as (start, end) runs of consecutive rows."""
    if not len(rows):
        return ()
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    starts = np.r_[0, breaks]
    ends = np.r_[breaks, len(rows)]
    return tuple((int(rows[a]), int(rows[b - 1]) + 1) for a, b in zip(starts, ends, strict=True))


def holdout_gate(
    train: tuple[np.ndarray, np.ndarray],
    holdout: tuple[np.ndarray, np.ndarray],
    bounds: ValidationParams,
) -> list[str]:
    """Return the model gate's failures on (labels, scores) of the training and holdout rows.

    The conditions of the Deepchecks suite that read the model's scores, as Deepchecks
    computes and compares them: at least 100 holdout rows; holdout ROC AUC above
    `min_roc_auc`; gain over a constant model, (AUC - 0.5) / (1 - 0.5), above
    `min_gain_over_constant`; relative drop of ROC AUC from training to holdout below
    `max_auc_degradation`. An AUC that cannot be computed (one class) fails, as an errored
    check does.
    """
    (train_labels, train_scores), (labels, scores) = train, holdout
    failures = []
    if len(labels) < MIN_TEST_ROWS:
        failures.append(f"holdout of {len(labels)} rows < {MIN_TEST_ROWS}")
    if len(np.unique(labels)) < 2 or len(np.unique(train_labels)) < 2:
        return [*failures, "ROC AUC undefined: one class only"]
    auc = float(roc_auc_score(labels, scores))
    train_auc = float(roc_auc_score(train_labels, train_scores))
    if auc <= bounds.min_roc_auc:
        failures.append(f"holdout ROC AUC {auc:.3f} <= {bounds.min_roc_auc}")
    gain = (auc - CONSTANT_MODEL_AUC) / (1.0 - CONSTANT_MODEL_AUC)
    gain = min(max(gain, -MAX_GAIN), MAX_GAIN)
    if gain <= bounds.min_gain_over_constant:
        failures.append(
            f"gain over a constant model {gain:.1%} <= {bounds.min_gain_over_constant:.0%}"
        )
    degradation = (train_auc - auc) / abs(train_auc) if train_auc else 0.0
    if degradation >= bounds.max_auc_degradation:
        failures.append(
            f"ROC AUC degradation {degradation:.1%} >= {bounds.max_auc_degradation:.0%} "
            f"(train {train_auc:.3f}, holdout {auc:.3f})"
        )
    return failures


@dataclass(frozen=True)
class _Model:
    """A model the loop trained and registered."""

    scores: np.ndarray
    """Its raw probabilities on every row of the history."""
    params: TrainingParams
    holdout: np.ndarray
    """Rows it held out (absolute indices)."""
    last_production_row: int | None
    """The newest labelled production row of its data (`data_last_prediction_id`)."""
    offset: float
    """The log-odds offset fitted at its registration (0 without `calibration`)."""


@dataclass
class _Challenger:
    model: _Model
    start_row: int
    registered_after_window: int


class _Loop:
    """The state of one configuration playing one stream variant."""

    def __init__(self, history: History, config: LoopConfig, variant: StreamVariant) -> None:
        total = len(history)
        self.first = variant.first_rows(total)
        if not 0 < self.first < total:
            raise ValueError(
                f"first_champion_fraction {variant.first_champion_fraction} leaves no rows to "
                f"{'train on' if self.first <= 0 else 'stream'} in {total} rows"
            )
        self.history, self.config, self.variant = history, config, variant
        self.labels = history.labels
        self.served = np.empty(total - self.first)
        self.champion: _Model | None = None
        self.offset = 0.0
        self.champion_windows: list[tuple[int, int, int]] = []
        self.challenger: _Challenger | None = None
        self.last_trigger: int | None = None
        self.runs: list[TrainingRun] = []
        self.releases: list[Release] = []
        self.known_after: list[int] = []
        self._health: dict[tuple[int, int], WindowHealth] = {}

    def play(self) -> LoopRun:
        first, total = self.first, len(self.history)
        width, delay = self.variant.window_rows, self.variant.label_delay_rows
        model = self.train(self.config.training, first)
        baseline = None
        if isinstance(model, _Model):
            self.promote(model)
            baseline = model.scores[first:].copy()
            verdict = "accepted"
        else:
            verdict = model[1]
        unserved = 0
        for index, start in enumerate(range(first, total, width)):
            end = min(start + width, total)
            served = slice(start - first, end - first)
            if self.champion is not None:
                scores = self.champion.scores[start:end].tolist()
                self.served[served] = shift_log_odds(scores, self.offset)
            else:
                # Nothing ranks the calls: every row gets the rate known so far.
                known = self.known_after[-1] if self.known_after else first
                self.served[served] = self.labels[:known].mean()
                unserved += 1
            # Outcomes are reported `delay` scored rows late: the rows before `known` are labelled.
            self.known_after.append(first + max(0, end - first - delay))
            self.after_window(index, start, end)
        if self.challenger is not None:
            self.releases.append(
                Release(self.challenger.registered_after_window, None, "undecided", "stream ended")
            )
        return LoopRun(
            candidate=self.config.name,
            variant=self.variant,
            first_row=first,
            labels=self.labels[first:].astype(np.float64),
            served=self.served,
            baseline=baseline,
            first_champion=verdict,
            runs=self.runs,
            releases=self.releases,
            unserved_windows=unserved,
        )

    # -- after each window: the monitor, the release, the retraining decision -------------------

    def after_window(self, index: int, start: int, end: int) -> None:
        known = self.known_after[index]
        policy = self.config.monitoring.policy
        if self.champion is not None:
            self.champion_windows.append((index, start, end))
            # The promotion runs before the monitor, as in the platform (`jobs/streaming.py`):
            # a challenger promoted here gets its offset refitted on this window's outcomes.
            if self.challenger is not None:
                self.judge_release(index, end, known)
            self.recalibrate(known)
        if self.champion is not None:
            health = [self.health(j, s, e, index) for j, s, e in self.champion_windows]
            since = None if self.last_trigger is None else index - self.last_trigger
            under_way = (
                None
                if self.challenger is None
                else f"registered after window {self.challenger.registered_after_window}"
            )
            state = RunState(False, since, known - self.first, under_way)
            decision = decide_retraining(health, state, policy)
            retrain, reason = decision.retrain, decision.reason
        else:
            cooling = (
                self.last_trigger is not None
                and index - self.last_trigger < policy.cooldown_windows
            )
            retrain = known - self.first >= policy.min_training_labels and not cooling
            reason = f"no champion: {known - self.first} labelled rows"
        if not retrain:
            return
        self.last_trigger = index
        if end == len(self.history):
            self.runs.append(
                TrainingRun(index, end, reason, "not run", "after the last window: serves nothing")
            )
            return
        self.retrain(index, end, known, reason)

    def recalibrate(self, known: int) -> None:
        """Refit the champion's offset on the newest labelled production rows, as the monitor."""
        assert self.champion is not None  # noqa: S101 - called with a champion only
        calibration = self.champion.params.calibration
        rows = min(known - self.first, calibration.rows)
        if not calibration.enabled or rows < calibration.min_rows:
            return  # the offset served stays
        newest = slice(known - rows, known)
        self.offset = fit_logit_offset(
            self.champion.scores[newest], self.labels[newest], calibration.max_offset
        )

    def health(self, window: int, start: int, end: int, now: int) -> WindowHealth:
        """Return a window's figures as the monitor last evaluated it, by window `now`."""
        lookback = self.config.monitoring.lookback_windows
        labelled_end = min(end, self.known_after[min(now, window + lookback)])
        key = (window, labelled_end)
        if key not in self._health:
            labels = self.labels[start : max(start, labelled_end)]
            scores = self.served[start - self.first : max(start, labelled_end) - self.first]
            lift = lift_top_fraction(labels, scores, 0.1) if len(labels) else float("nan")
            rate = float(labels.mean()) if len(labels) else None
            self._health[key] = WindowHealth(
                window_start=_EPOCH + timedelta(hours=window),
                rows=end - start,
                labelled_rows=len(labels),
                share_drifted_features=0.0,
                mean_score=float(scores.mean()) if len(labels) else 0.0,
                positive_rate=rate,
                roc_auc=(
                    float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else None
                ),
                precision_top_decile=None if np.isnan(lift) or rate is None else lift * rate,
            )
        return self._health[key]

    def judge_release(self, index: int, end: int, known: int) -> None:
        """Decide the shadow release on the outcomes of the rows both models scored."""
        challenger = self.challenger
        assert challenger is not None  # noqa: S101 - called with a challenger only
        start = challenger.start_row
        labelled = slice(start, max(start, min(end, known)))
        arms = [
            ArmEvidence(
                scores=scores,
                labels=self.labels[labelled],
                requests=math.ceil((end - start) / self.variant.request_rows),
                errors=0,
                latency_p50_ms=0.0,
                latency_p99_ms=0.0,
            )
            for scores in (
                self.served[labelled.start - self.first : labelled.stop - self.first],
                challenger.model.scores[labelled],
            )
        ]
        decision = decide_release(arms[0], arms[1], self.config.release, paired=True)
        if decision.action == "wait":
            return
        self.releases.append(
            Release(challenger.registered_after_window, index, decision.action, decision.reason)
        )
        self.challenger = None
        if decision.action == "promote":
            self.promote(challenger.model)

    # -- a training run --------------------------------------------------------------------------

    def retrain(self, index: int, end: int, known: int, reason: str) -> None:
        params = self.config.retraining
        model = self.train(params, known)
        if not isinstance(model, _Model):
            self.runs.append(TrainingRun(index, end, reason, *model))
            return
        decision = self.compare(model)
        if not decision.promote:
            self.runs.append(TrainingRun(index, end, reason, "kept", decision.reason))
        elif self.champion is None or params.release.mode == "direct":
            self.runs.append(TrainingRun(index, end, reason, "promoted", decision.reason))
            self.promote(model)
        else:
            if self.challenger is not None:
                self.releases.append(
                    Release(
                        self.challenger.registered_after_window,
                        index,
                        "replaced",
                        "a newer challenger was registered",
                    )
                )
            self.challenger = _Challenger(model, end, index)
            self.runs.append(
                TrainingRun(index, end, reason, "challenger", f"{decision.reason}; in shadow")
            )

    def promote(self, model: _Model) -> None:
        self.champion, self.offset = model, model.offset
        self.champion_windows = []  # the monitor judges the new champion's windows only

    def train(
        self, params: TrainingParams, known: int
    ) -> _Model | tuple[Literal["refused", "failed"], str]:
        """Run a training run on the rows labelled before `known`: fit, gate, registration offset.

        The rows: the base rows (the first champion's, cut to `data.sample_rows`), then the
        newest labelled production rows when `data.production` is on, as `jobs.training.ingest`.
        """
        first = self.first
        base_start = (
            0 if params.data.sample_rows is None else max(0, first - params.data.sample_rows)
        )
        production = known - first if params.data.production.enabled else 0
        if params.data.production.max_rows is not None:
            production = min(production, params.data.production.max_rows)
        rows = np.r_[base_start:first, known - production : known]
        split = params.split
        if len(rows) <= split.holdout_rows:
            return (
                "failed",
                f"{len(rows)} rows cannot hold out {split.holdout_rows} and still train",
            )
        holdout, train = rows[-split.holdout_rows :], rows[: -split.holdout_rows]
        if split.train_window_rows is not None:
            train = train[-split.train_window_rows :]
        if len(np.unique(self.labels[train])) < 2:
            return "failed", "the training rows hold one class only"
        scores = self.history.scores(params.model, train)
        failures = holdout_gate(
            (self.labels[train], scores[train]),
            (self.labels[holdout], scores[holdout]),
            params.validation,
        )
        if failures:
            return "refused", "model gate: " + "; ".join(failures)
        offset = 0.0
        calibration = params.calibration
        newest = rows[-calibration.rows :]
        if calibration.enabled and len(newest) >= calibration.min_rows:
            offset = fit_logit_offset(scores[newest], self.labels[newest], calibration.max_offset)
        return _Model(scores, params, holdout, known - 1 if production else None, offset)

    def compare(self, model: _Model) -> PromotionDecision:
        """Decide promotion as `jobs.training.register`: on the holdout rows the champion never saw.

        Production rows newer than the champion's newest; base rows never count (it may have
        trained on them); when none is left, the whole holdout.
        """
        metric = model.params.promotion.metric
        labels = self.labels[model.holdout]
        if self.champion is None:
            candidate = classification_metrics(labels, model.scores[model.holdout])[metric]
            return decide_promotion(
                candidate,
                None,
                metric=metric,
                min_improvement=model.params.promotion.min_improvement,
            )
        unseen = np.ones(len(model.holdout), dtype=bool)
        last_seen = self.champion.last_production_row
        if last_seen is not None and model.last_production_row is not None:
            unseen = (model.holdout >= self.first) & (model.holdout > last_seen)
            if not unseen.any():
                unseen[:] = True
        rows = model.holdout[unseen]
        return decide_promotion(
            classification_metrics(labels[unseen], model.scores[rows])[metric],
            classification_metrics(labels[unseen], self.champion.scores[rows])[metric],
            metric=metric,
            min_improvement=model.params.promotion.min_improvement,
        )


def run_loop(history: History, config: LoopConfig, variant: StreamVariant) -> LoopRun:
    """Play `history` under one configuration and stream variant; return what was served."""
    return _Loop(history, config, variant).play()
