"""Offline study of the retraining loop: retrain policies and cheap recalibration, side by side.

    nice -n 19 .venv/bin/python -m studies.loop_study [--events] [--windows]
        [--data PATH] [--params PATH]

No services: plain pandas and scikit-learn on the 41,188 rows in time order, played as
`telescore replay` plays them. The first champion is fitted on the earliest 20% of the rows
(its newest 1,000 held out, as `split.holdout_rows` does), the other 32,951 are scored in
2,000-row windows, and a row's label becomes known 1,000 rows after it was scored. Models come
from the project's own `core.features.build_pipeline`. After each window the project's own
`core.retraining.decide_retraining` judges the window on its labelled rows with the replay's
policy before this study (`BEFORE_POLICY`: one degraded window retrains; at most 8 runs in all);
a training run fits on the base rows plus every labelled production row less the newest
1,000 (the holdout), is refused under `validation.min_roc_auc` on the holdout (the check of the
Deepchecks suite that refused candidates in the replay; the rest is left out) and is promoted only
when its raw Brier score on the holdout beats the champion's by 0.002 (the replay's
`promotion.min_improvement` before this study), as the training flow does. Configurations:

(a) the first champion, never retrained;  (b) that policy, as the replay ran it;
(c) (b) plus recalibration: before each window the champion's log-odds are shifted by an
    intercept (or mapped by a slope and an intercept, Platt-style) fitted on the most recent M
    labelled rows, i.e. older than the label delay, rescored by the champion; the monitor then
    judges the scores as served;
(d) recalibration alone; (e) other cheap ideas within 8 runs: a retrain scheduled every 2nd
    window, training on the last 10k labelled rows only, a more regularised model, logistic
    regression, a model that ignores the five macro indicators (the intercept follows the
    period instead), promotion of every candidate that passes the AUC gate ("promote on gate");
(f) the `--params` file (params.yaml; once the replay's own params file): its model, its
    `monitoring.policy` (a retrain every 2nd window), its promotion rule and its `calibration`
    (the offset fitted on the newest N labelled rows: at registration on the newest rows of the
    model's training data, then by the monitor on labelled production rows only).

Quality is `core.prequential.stream_quality` of the served scores (each window scored before
any model learnt from it): pooled ROC AUC over all windows, mean over windows of
|mean score - positive rate|, mean over windows of the top-decile lift; then the training runs
triggered (promoted) and which of the issue's targets are met. Rows marked "ref" break the
issue's guards (instant labels, or a run before every window) and are there to compare with the
issue author's figures. The last row is the issue's target. `--events` prints every training
run's verdict, `--windows` every window's figures. Deterministic: every model is seeded with SEED.
About 100 s on 2 cores.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score

from telescore.core.features import build_pipeline, split_features_label
from telescore.core.metrics import lift_top_fraction
from telescore.core.params import ModelParams, TrainingParams
from telescore.core.prequential import StreamQuality, stream_quality
from telescore.core.retraining import (
    RetrainingPolicy,
    RunState,
    WindowHealth,
    decide_retraining,
)
from telescore.core.schema import FLOAT_FEATURES, LEAKING_COLUMNS
from telescore.core.scoring import fit_logit_offset
from telescore.io.params_files import load_monitoring_params, load_training_params

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
WINDOW_ROWS = 2_000
LABEL_DELAY_ROWS = 1_000
FIRST_SHARE = 0.2
"""The first champion's rows: the earliest 20% of the dataset, as the replay."""
MAX_RETRAINS = 8
"""The issue's budget of training runs, enforced on top of the policy."""
EPSILON = 1e-6
TARGET = {"auc": 0.73, "gap": 0.05, "lift": 1.4, "retrains": MAX_RETRAINS}
BEFORE_MODEL = ModelParams(
    kind="hist_gradient_boosting",
    max_iter=100,
    learning_rate=0.05,
    max_leaf_nodes=8,
    random_state=SEED,
)
"""The replay's model before this study (params.replay.yaml then)."""
BEFORE_POLICY = RetrainingPolicy(
    min_window_rows=200,
    min_labelled_rows=300,
    max_calibration_gap=0.05,
    min_roc_auc=0.5,
    windows_considered=1,
    windows_required=1,
    cooldown_windows=1,
    min_training_labels=1000,
)
"""The replay's `monitoring.policy` before this study."""
BEFORE_MIN_IMPROVEMENT = 0.002
"""The replay's `promotion.min_improvement` (Brier score) before this study."""


@dataclass(frozen=True)
class Learner:
    """How a model is fitted on the labelled rows known at some point of the stream."""

    name: str
    model: ModelParams
    holdout_rows: int = 1_000
    """Newest labelled rows left out of the fit (the training flow's `split.holdout_rows`)."""
    train_rows: int | None = None
    """Fit on only the last N rows before the holdout; None: base rows + all production rows."""
    classifier_params: tuple[tuple[str, object], ...] = ()
    """Extra scikit-learn parameters of the classifier, beyond what ModelParams exposes."""
    drop_features: tuple[str, ...] = ()
    """Inputs the model ignores (their column still arrives, as serving sends it)."""

    def params(self) -> ModelParams:
        """Return the model params with the dropped inputs as `ignore_features`."""
        if not self.drop_features:
            return self.model
        return self.model.model_copy(update={"ignore_features": self.drop_features})


@dataclass(frozen=True)
class Recalibration:
    """The cheap update between retrains: a map of the model's log-odds fitted on recent labels."""

    kind: Literal["none", "intercept", "platt"] = "none"
    rows: int = 2_000
    """M: the most recent labelled rows it is fitted on."""
    unseen_only: bool = False
    """Fit only on rows the model did not train on (fewer rows right after a retrain)."""
    production_only: bool = False
    """As the platform fits it: once outcomes arrive, on labelled production rows only (the
    monitor reads them from MongoDB), keeping the previous offset under `min_rows`; before,
    on the newest base rows (the offset fitted at registration)."""
    min_rows: int = 500
    max_offset: float = 30.0

    @property
    def label(self) -> str:
        """Name the recalibration in the table ("" for none)."""
        if self.kind == "none":
            return ""
        name = {"intercept": "intercept", "platt": "Platt"}[self.kind]
        return f"{name} M={self.rows}" + (", unseen rows" if self.unseen_only else "")

    @classmethod
    def platform(cls, training: TrainingParams) -> Recalibration:
        """Return the recalibration the platform runs with `training.calibration`."""
        calibration = training.calibration
        return cls(
            "intercept" if calibration.enabled else "none",
            calibration.rows,
            production_only=True,
            min_rows=calibration.min_rows,
            max_offset=calibration.max_offset,
        )


@dataclass(frozen=True)
class Config:
    """One way of running the loop."""

    label: str
    learner: Learner
    retrain: Literal["never", "policy", "every"] = "never"
    """never; when `decide_retraining` says so; or on a schedule, every `every` windows."""
    recalibration: Recalibration = Recalibration()
    every: int = 1
    label_delay_rows: int = LABEL_DELAY_ROWS
    promotion: Literal["brier", "gate", "always"] = "brier"
    """brier: the flow's rule, the AUC gate then a better raw holdout Brier score; gate: promote
    every candidate that passes the AUC gate; always: no gate (the issue author's runs)."""
    budget: int | None = MAX_RETRAINS
    policy: RetrainingPolicy = BEFORE_POLICY
    """What `decide_retraining` is given with retrain="policy"."""
    min_improvement: float = BEFORE_MIN_IMPROVEMENT
    """The Brier score a candidate must gain over the champion with promotion="brier"."""
    reference: bool = False
    """Breaks the issue's guards: shown to compare with the author's figures."""


@dataclass
class Outcome:
    """What a configuration measured."""

    config: Config
    quality: StreamQuality
    triggered: int
    promoted: int
    events: list[str] = field(default_factory=list)


class Stream:
    """The dataset in time order, the models fitted on it (cached) and their log-odds."""

    def __init__(self, frame: pd.DataFrame, training: TrainingParams) -> None:
        self.features, self.labels = split_features_label(frame)
        self.first = int(len(frame) * FIRST_SHARE)
        self.training = training
        self._logits: dict[tuple[Learner, int], np.ndarray] = {}
        self.fits = 0
        self.fit_seconds = 0.0

    @property
    def streamed(self) -> int:
        """Rows scored after the first champion."""
        return len(self.labels) - self.first

    def logits(self, learner: Learner, labelled_end: int) -> np.ndarray:
        """Return the log-odds, on every row, of `learner` fitted on the rows before `labelled_end`.

        Rows [0, labelled_end) are labelled; the newest `holdout_rows` of them are held out.
        """
        key = (learner, labelled_end)
        if key not in self._logits:
            end = labelled_end - learner.holdout_rows
            start = 0 if learner.train_rows is None else max(0, end - learner.train_rows)
            pipeline = build_pipeline(learner.params())
            if learner.classifier_params:
                pipeline.set_params(**{f"classifier__{k}": v for k, v in learner.classifier_params})
            started = time.perf_counter()
            pipeline.fit(self.features.iloc[start:end], self.labels[start:end])
            self.fit_seconds += time.perf_counter() - started
            self.fits += 1
            scores = pipeline.predict_proba(self.features)[:, 1]
            self._logits[key] = logit(np.clip(scores, EPSILON, 1 - EPSILON))
        return self._logits[key]


def fit_recalibration(
    z: np.ndarray, y: np.ndarray, kind: Literal["intercept", "platt"]
) -> tuple[float, float]:
    """Return (slope, intercept) mapping log-odds z to calibrated log-odds, fitted on labels y."""
    if len(y) == 0:
        return 1.0, 0.0
    rate = float(np.clip(y.mean(), 0.5 / len(y), 1 - 0.5 / len(y)))
    if kind == "intercept" or len(np.unique(y)) < 2:
        # The maximum-likelihood intercept: the mean shifted score equals the positive rate.
        shift = brentq(lambda b: expit(z + b).mean() - rate, -30.0, 30.0)
        return 1.0, float(shift)
    platt = LogisticRegression(C=1e4, max_iter=1_000).fit(z.reshape(-1, 1), y)
    return float(platt.coef_[0, 0]), float(platt.intercept_[0])


def window_health(index: int, labels: np.ndarray, scores: np.ndarray, rows: int) -> WindowHealth:
    """Return what the monitor records for a window, from its labelled rows."""
    labelled = len(labels)
    both = labelled and len(np.unique(labels)) == 2
    lift = lift_top_fraction(labels, scores, 0.1) if labelled else float("nan")
    return WindowHealth(
        window_start=datetime(2008, 5, 1, tzinfo=UTC) + timedelta(hours=index),
        rows=rows,
        labelled_rows=labelled,
        share_drifted_features=0.0,  # drift counts only without labels; every window has some
        mean_score=float(scores.mean()) if labelled else 0.0,
        positive_rate=float(labels.mean()) if labelled else None,
        roc_auc=float(roc_auc_score(labels, scores)) if both else None,
        precision_top_decile=None if np.isnan(lift) else float(lift * labels.mean()),
    )


def run(config: Config, stream: Stream) -> Outcome:
    """Play the stream under one configuration; return its prequential quality."""
    first, delay, learner = stream.first, config.label_delay_rows, config.learner
    champion_end = first  # the first champion: the base rows, newest holdout_rows held out
    champion = stream.logits(learner, champion_end)
    served = np.empty(stream.streamed)
    history: list[WindowHealth] = []
    triggered = promoted = 0
    last_trigger: int | None = None
    events: list[str] = []
    mapping = (1.0, 0.0)
    for index, start in enumerate(range(0, stream.streamed, WINDOW_ROWS)):
        end = min(start + WINDOW_ROWS, stream.streamed)
        known = first + max(0, start - delay)  # rows [0, known) are labelled before the window
        raw = champion[first + start : first + end]
        # The champion's own holdout starts at its_rows: the first rows it never trained on.
        its_rows = champion_end - learner.holdout_rows
        fitted = recalibrate(config.recalibration, stream, champion, its_rows, known)
        mapping = fitted or mapping  # too few rows: the offset served stays
        slope, shift = mapping
        served[start:end] = expit(slope * raw + shift)

        if config.retrain == "never" or end == stream.streamed:
            continue  # a retrain after the last window would serve nothing
        # The monitor, after the window: its rows labelled by now, as served.
        labelled_end = first + max(0, end - delay)
        labelled = slice(start, max(start, labelled_end - first))
        history.append(
            window_health(index, stream.labels[first:][labelled], served[labelled], end - start)
        )
        if config.retrain == "every":
            due = (index + 1) % config.every == 0
        else:
            state = RunState(
                training_in_flight=False,
                windows_since_retrain=None if last_trigger is None else index - last_trigger,
                labelled_rows_available=max(0, end - delay),
            )
            due = decide_retraining(history, state, config.policy).retrain
        if not due or (config.budget is not None and triggered >= config.budget):
            continue
        triggered += 1
        last_trigger = index
        candidate = stream.logits(learner, labelled_end)
        verdict = "promoted"
        if config.promotion != "always":
            verdict = gate(stream, candidate, champion, labelled_end, learner.holdout_rows, config)
        if verdict == "promoted":
            champion_end, champion = labelled_end, candidate
            # Its offset is fitted at registration: before the next window, on the newest rows.
            mapping = (1.0, 0.0)
            promoted += 1
            history = []  # the monitor judges the new champion's windows only
        events.append(f"after window {index}: {verdict}")
    quality = stream_quality(stream.labels[first:], served, WINDOW_ROWS)
    return Outcome(config, quality, triggered, promoted, events)


def recalibrate(
    recalibration: Recalibration,
    stream: Stream,
    champion: np.ndarray,
    unseen_from: int,
    known: int,
) -> tuple[float, float] | None:
    """Return the (slope, intercept) served with the champion's log-odds in the next window.

    None: too few rows to fit on (`production_only`), the mapping served stays.
    """
    if recalibration.kind == "none":
        return 1.0, 0.0
    fit_start = max(0, known - recalibration.rows)
    if recalibration.unseen_only:  # only rows the champion did not train on
        fit_start = max(fit_start, min(known - 1, unseen_from))
    if recalibration.production_only:
        if known > stream.first:  # outcomes have arrived: the monitor fits on them only
            fit_start = max(fit_start, stream.first)
        if known - fit_start < recalibration.min_rows:
            return None
        # The project's own fit, as the monitor and the training run call it.
        probabilities = expit(champion[fit_start:known])
        offset = fit_logit_offset(
            probabilities, stream.labels[fit_start:known], recalibration.max_offset
        )
        return 1.0, offset
    return fit_recalibration(
        champion[fit_start:known], stream.labels[fit_start:known], recalibration.kind
    )


def gate(
    stream: Stream,
    candidate: np.ndarray,
    champion: np.ndarray,
    labelled_end: int,
    rows: int,
    config: Config,
) -> str:
    """Return the training flow's verdict on a candidate, judged on its holdout rows.

    The Deepchecks gate as far as it refused candidates in the replay (holdout ROC AUC), then,
    with "brier", promotion on the Brier score of the raw models, which neither trained on those
    rows (`promotion.metric` and the config's `min_improvement`).
    """
    holdout = slice(labelled_end - rows, labelled_end)
    y = stream.labels[holdout]
    auc = roc_auc_score(y, candidate[holdout]) if len(np.unique(y)) == 2 else 0.5
    brier = brier_score_loss(y, expit(candidate[holdout]))
    kept = brier_score_loss(y, expit(champion[holdout]))
    figures = f"holdout AUC {auc:.2f}, Brier {brier:.4f} vs champion {kept:.4f}"
    if auc < stream.training.validation.min_roc_auc:
        return f"refused by the gate ({figures})"
    if config.promotion == "brier" and brier >= kept - config.min_improvement:
        return f"champion kept ({figures})"
    return "promoted"


def configurations(training: TrainingParams, policy: RetrainingPolicy) -> list[Config]:
    """Return the configurations compared, in table order; (f) runs `training` and `policy`."""
    hgb = Learner("HGB", BEFORE_MODEL)
    intercept = {m: Recalibration("intercept", m) for m in (1_000, 2_000, 4_000)}
    platt = {m: Recalibration("platt", m) for m in (2_000, 4_000)}
    two_k = intercept[2_000]

    def logistic(c: float) -> ModelParams:
        return ModelParams(kind="logistic_regression", C=c, max_iter=1_000, random_state=SEED)

    last_10k = replace(hgb, name="HGB last 10k", train_rows=10_000)
    regularised = replace(
        hgb,
        name="HGB l2=10 leaf>=200",
        classifier_params=(("l2_regularization", 10.0), ("min_samples_leaf", 200)),
    )
    lr_10k = Learner("LR last 10k", logistic(1.0), train_rows=10_000)
    hgb_micro = replace(hgb, name="HGB w/o macro", drop_features=FLOAT_FEATURES)
    lr_micro = {
        c: Learner(f"LR C={c} w/o macro", logistic(c), drop_features=FLOAT_FEATURES)
        for c in (0.003, 0.01, 0.03)
    }
    lr = lr_micro[0.01]
    unseen = replace(two_k, unseen_only=True)
    gated: dict[str, Any] = {"every": 2, "promotion": "gate"}
    return [
        Config("(a) never retrained", hgb),
        Config("(b) policy", hgb, "policy"),
        *(Config(f"(c) policy + {r.label}", hgb, "policy", r) for r in intercept.values()),
        Config("(c) policy + intercept M=2000, unseen rows", hgb, "policy", unseen),
        *(Config(f"(c) policy + {r.label}", hgb, "policy", r) for r in platt.values()),
        *(Config(f"(d) {r.label}", hgb, recalibration=r) for r in intercept.values()),
        *(Config(f"(d) {r.label}", hgb, recalibration=r) for r in platt.values()),
        Config("(e) HGB every 2nd window", hgb, "every", every=2),
        Config("(e) HGB every 2nd + intercept M=2000", hgb, "every", two_k, every=2),
        Config("(e) HGB every 2nd + intercept, promote on gate", hgb, "every", two_k, **gated),
        Config(f"(e) {last_10k.name}, policy + intercept M=2000", last_10k, "policy", two_k),
        Config(f"(e) {regularised.name}, policy + intercept M=2000", regularised, "policy", two_k),
        Config(f"(e) {lr_10k.name}, policy + intercept M=2000", lr_10k, "policy", two_k),
        Config(f"(e) {hgb_micro.name}, policy + intercept M=2000", hgb_micro, "policy", two_k),
        Config(
            f"(e) {hgb_micro.name}, every 2nd + intercept, promote on gate",
            hgb_micro,
            "every",
            two_k,
            **gated,
        ),
        Config(f"(e) {lr.name}, intercept M=2000, never retrained", lr, recalibration=two_k),
        Config(f"(e) {lr.name}, policy + intercept M=2000", lr, "policy", two_k),
        Config(f"(e) {lr.name}, every 2nd + intercept M=2000", lr, "every", two_k, every=2),
        Config(f"(e) {lr.name}, every 2nd, promote on gate", lr, "every", **gated),
        *(
            Config(
                f"(e) {each.name}, every 2nd + {r.label}, promote on gate",
                each,
                "every",
                r,
                **gated,
            )
            for each, r in (
                (lr, two_k),  # the recommendation; then its neighbours
                (lr, intercept[1_000]),
                (lr, intercept[4_000]),
                (lr_micro[0.003], two_k),
                (lr_micro[0.03], two_k),
            )
        ),
        Config(
            "(f) the --params file",
            Learner("replay", training.model, holdout_rows=training.split.holdout_rows),
            "policy",
            Recalibration.platform(training),
            policy=policy,
            min_improvement=training.promotion.min_improvement,
        ),
        authors("ref: HGB every window, all labels, instant (author)", hgb),
        Config("ref: HGB every window", hgb, "every", budget=None, reference=True),
        authors("ref: LR last 10k every window, instant (author)", lr_10k),
    ]


def authors(label: str, learner: Learner) -> Config:
    """The issue author's runs: a retrain before every window, on instant labels, no gate."""
    instant = replace(learner, holdout_rows=0)
    return Config(
        label, instant, "every", label_delay_rows=0, promotion="always", budget=None, reference=True
    )


def met(outcome: Outcome) -> str:
    """Return which of the issue's targets a configuration meets."""
    quality = outcome.quality
    checks = {
        "AUC": quality.pooled_roc_auc >= TARGET["auc"],
        "gap": quality.mean_calibration_gap <= TARGET["gap"],
        "lift": quality.mean_top_decile_lift >= TARGET["lift"],
        "retrains": outcome.triggered <= TARGET["retrains"],
    }
    hits = [name for name, ok in checks.items() if ok]
    return "all" if len(hits) == len(checks) else ", ".join(hits) or "none"


def print_table(outcomes: Sequence[Outcome], out: Callable[[str], None] = print) -> None:
    """Print the comparison, the issue's target last."""
    width = max(len(each.config.label) for each in outcomes) + 2
    header = f"{'configuration':<{width}}{'pooled AUC':>11}{'cal. gap':>10}{'lift':>7}"
    out(header + f"{'retrains (promoted)':>21}  meets")
    out("-" * (len(header) + 36))
    for each in outcomes:
        q = each.quality
        runs = f"{each.triggered} ({each.promoted})"
        out(
            f"{each.config.label:<{width}}{q.pooled_roc_auc:>11.3f}"
            f"{q.mean_calibration_gap:>10.3f}{q.mean_top_decile_lift:>7.2f}{runs:>21}  "
            + ("(ref) " if each.config.reference else "")
            + met(each)
        )
    out("-" * (len(header) + 36))
    target = f">={TARGET['auc']:.2f}", f"<={TARGET['gap']:.2f}", f">={TARGET['lift']:.1f}"
    out(
        f"{'target (the issue)':<{width}}{target[0]:>11}{target[1]:>10}{target[2]:>7}"
        f"{'<=' + str(TARGET['retrains']):>21}"
    )


def main() -> None:
    """Run every configuration over the stream and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="dataset; default params' path")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--windows", action="store_true", help="print per-window figures too")
    parser.add_argument("--events", action="store_true", help="print every retrain too")
    args = parser.parse_args()

    training = load_training_params(args.params)
    policy = load_monitoring_params(args.params).policy
    data = args.data or ROOT / training.data.path
    frame = pd.read_csv(data, sep=";").drop(columns=list(LEAKING_COLUMNS))
    stream = Stream(frame, training)
    started = time.perf_counter()
    outcomes = [run(config, stream) for config in configurations(training, policy)]
    print(
        f"{len(frame):,} rows: first champion on {stream.first:,}, {stream.streamed:,} streamed "
        f"in {WINDOW_ROWS:,}-row windows, labels {LABEL_DELAY_ROWS:,} rows late; policy "
        f"(before this study) gap > {BEFORE_POLICY.max_calibration_gap} or AUC < "
        f"{BEFORE_POLICY.min_roc_auc} on the window's labelled rows, cooldown "
        f"{BEFORE_POLICY.cooldown_windows}, at most {MAX_RETRAINS} runs\n"
    )
    print_table(outcomes)
    print(
        f"\n{stream.fits} fits in {stream.fit_seconds:.0f} s, "
        f"{time.perf_counter() - started:.0f} s in all; seed {SEED}"
    )
    if args.events:
        for each in outcomes:
            if each.events:
                print(f"\n{each.config.label}:\n  " + "\n  ".join(each.events))
    if args.windows:
        for each in outcomes:
            print(f"\n{each.config.label}: window  rate  score  AUC   lift")
            for w in each.quality.windows:
                auc = "  -  " if w.roc_auc is None else f"{w.roc_auc:.2f}"
                lift = "  -  " if w.top_decile_lift is None else f"{w.top_decile_lift:.2f}"
                print(
                    f"  {w.window:>6} {w.positive_rate:5.2f} {w.mean_score:6.2f} {auc:>5} {lift:>5}"
                )


if __name__ == "__main__":
    main()
