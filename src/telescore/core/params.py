"""Training parameters: the `training` section of params.yaml, as frozen, strict models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from telescore.core.models import FrozenModel
from telescore.core.schema import FEATURES


class ProductionDataParams(FrozenModel):
    """Labelled production rows: logged predictions whose call outcome is known.

    The rule: the base rows (`data.path`, cut to `sample_rows`), then the most recent
    `max_rows` labelled production rows in the order they were scored. The split then holds out
    the last `split.holdout_rows` of the whole, so that with production rows the model is judged
    on the most recent outcomes, which no model trained on.
    """

    enabled: bool = False
    """Add labelled production rows from MongoDB to the base rows."""
    max_rows: int | None = Field(default=None, gt=0)
    """Keep only the most recent N labelled production rows; None keeps all."""


class DataParams(FrozenModel):
    """Which rows to use."""

    path: str = "data/bank-additional-full.csv.gz"
    """Dataset file, `;`-separated, rows in time order."""
    sample_rows: int | None = Field(default=None, gt=0)
    """Keep only the last N rows (most recent); None keeps all."""
    drop_columns: tuple[str, ...] = ("duration",)
    """Raw columns that must not reach the model: `duration` is known only after the call."""
    production: ProductionDataParams = ProductionDataParams()
    """Labelled production rows added after the base rows (the monitor's retraining turns it on)."""


class SplitParams(FrozenModel):
    """Time-aware split: fit on earlier rows, evaluate on the most recent ones."""

    holdout_rows: int = Field(default=4000, gt=0)
    """The most recent rows, held out as the evaluation period."""
    train_window_rows: int | None = Field(default=None, gt=0)
    """Fit on only the last N rows before the holdout; None fits on all of them."""


class ModelParams(FrozenModel):
    """The classifier and its hyper-parameters."""

    kind: Literal["logistic_regression", "hist_gradient_boosting"] = "logistic_regression"
    """Classifier family."""
    C: float = Field(default=1.0, gt=0)  # noqa: N815 - scikit-learn's own name
    """Inverse regularisation strength (logistic regression)."""
    max_iter: int = Field(default=1000, gt=0)
    """Iteration cap (both families)."""
    learning_rate: float = Field(default=0.1, gt=0)
    """Shrinkage (gradient boosting)."""
    max_leaf_nodes: int = Field(default=31, gt=1)
    """Tree size (gradient boosting)."""
    random_state: int = 0
    """Seed, so that a rerun gives the same model."""
    ignore_features: tuple[str, ...] = ()
    """Inputs the pipeline drops before the classifier. They are still required, validated and
    logged, so the schema and serving's inputs stay the same. In this data, leaving out the
    five macro indicators stops a model extrapolating one period's economy into the next; a
    log-odds offset (`calibration`) follows the period's base rate instead."""

    @field_validator("ignore_features")
    @classmethod
    def _known_features(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(names) - set(FEATURES))
        if unknown:
            raise ValueError(f"ignore_features: not model inputs: {unknown}")
        if set(FEATURES) <= set(names):
            raise ValueError("ignore_features: the model needs at least one input")
        return tuple(dict.fromkeys(names))  # one of each, in the order given


class ValidationParams(FrozenModel):
    """Bounds that gate registration."""

    min_roc_auc: float = Field(default=0.55, ge=0, le=1)
    """Minimum ROC AUC on the holdout period."""
    min_gain_over_constant: float = Field(default=0.1, ge=0)
    """Minimum relative ROC AUC gain over a constant (most frequent class) model."""
    max_auc_degradation: float = Field(default=0.35, gt=0)
    """Maximum relative ROC AUC drop from train to holdout (overfitting)."""
    max_categorical_drift: float = Field(default=0.7, gt=0)
    """Maximum Cramer's V drift of a categorical input, train vs holdout."""
    max_numeric_drift: float = Field(default=0.5, gt=0)
    """Maximum Kolmogorov-Smirnov drift of a numeric input, train vs holdout."""
    drifting_features_allowed: int = Field(default=5, ge=0)
    """Inputs allowed over the drift bounds: the five macro indicators move with the economy."""
    max_new_category_ratio: float = Field(default=0.2, ge=0, le=1)
    """Maximum share of holdout rows with a category unseen in training (a new month, say)."""
    max_samples_mix: float = Field(default=0.1, ge=0, le=1)
    """Maximum share of holdout rows also present in training: more means a broken split."""


class PromotionParams(FrozenModel):
    """The offline gate: whether a new model may be released against the champion.

    Passing it does not make the candidate champion (but for the first model ever): it makes
    it `challenger` in a release (`release`) that live outcomes decide. See `core.promotion`.
    """

    metric: Literal["roc_auc", "pr_auc", "lift_top_decile", "brier"] = "roc_auc"
    """Holdout metric of the point comparison (`brier`: lower wins, and it weighs calibration)."""
    min_improvement: float = Field(default=0.002, ge=-1)
    """The candidate must beat the champion by more than this on the same holdout (at 0: be
    better, an equal one is refused).

    Negative: a candidate may be that much worse and still pass. Every metric lies in [0, 1],
    so -1 lets every candidate that passed the validation gates through this comparison; the
    paired test below still stops one that is significantly worse."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    """Two-sided confidence of the paired DeLong test of ROC AUC, candidate against champion
    on the same fresh holdout rows: a candidate significantly worse is not released. Lower is
    stricter (a narrower interval finds "worse" sooner)."""
    min_test_rows_per_class: int = Field(default=20, ge=2)
    """Subscriptions, and non-subscriptions, the fresh rows need for the paired test to be
    taken; with fewer the point comparison alone decides (the reason says so)."""

    @model_validator(mode="before")
    @classmethod
    def _forget_auto_promote(cls, values: Any) -> Any:
        # Versions registered before releases were automatic keep `auto_promote` in their
        # lineage params, which the monitor and `reproduce` read back: accepted, and unused
        # (`release.mode` says how a candidate is released now).
        if isinstance(values, dict) and "auto_promote" in values:
            return {key: value for key, value in values.items() if key != "auto_promote"}
        return values


ReleaseMode = Literal["shadow", "canary", "direct"]
RELEASE_MODE_CAUTION: dict[str, int] = {"direct": 0, "canary": 1, "shadow": 2}
"""How cautious each release mode is: shadow shows callers nothing new, a canary shows some
of them the candidate, direct makes it champion with no online test."""


class ReleaseParams(FrozenModel):
    """How a candidate that passed the offline gate is released (`jobs.releases.start_release`).

    `shadow` and `canary` make it `challenger` and set the routing, as `telescore routing set`
    does; the `promote-telemarketing` deployment then promotes or rolls it back on live
    outcomes (`core.release`, the `release` section of params.yaml). A challenger still
    undecided when the next candidate passes the gate is superseded: the new one replaces it
    and the release starts again.
    """

    mode: ReleaseMode = "shadow"
    """shadow: the challenger scores every request too, unseen (paired evidence, no caller
    risk); canary: `canary_weight` percent of prospects are shown its answers; direct: it
    becomes champion at once, with no online test (for deployments whose traffic does not
    pass through the web app's routing, where no release could gather evidence)."""
    canary_weight: float = Field(default=10.0, ge=0.01, le=99.99)
    """Percent of prospects shown the challenger in a canary release."""


class CalibrationParams(FrozenModel):
    """A log-odds offset b served with the model: score = sigmoid(logit(p) + b).

    b makes the mean served score equal the positive rate of the most recent `rows` labelled
    rows, rescored by the model: it is fitted when a model is registered (on the newest rows of
    its training data) and again by the monitor after every window (on the newest labelled
    predictions), so the served scores follow the period's base rate between retrains.
    """

    enabled: bool = False
    """Fit and serve the offset (off: scores are the model's own)."""
    rows: int = Field(default=2000, gt=0)
    """N: the most recent labelled rows the offset is fitted on."""
    min_rows: int = Field(default=500, gt=0)
    """Fewer labelled rows than this: no new offset, the one served stays."""
    max_offset: float = Field(default=4.0, gt=0)
    """Cap on |b| (4: odds multiplied or divided by 55 at most), against a freak sample."""

    @model_validator(mode="after")
    def _min_within_rows(self) -> CalibrationParams:
        if self.min_rows > self.rows:
            raise ValueError("calibration.min_rows cannot exceed calibration.rows")
        return self


class TrainingParams(FrozenModel):
    """All parameters of one training run."""

    data: DataParams = DataParams()
    split: SplitParams = SplitParams()
    model: ModelParams = ModelParams()
    validation: ValidationParams = ValidationParams()
    promotion: PromotionParams = PromotionParams()
    calibration: CalibrationParams = CalibrationParams()
    release: ReleaseParams = ReleaseParams()

    @model_validator(mode="after")
    def _holdout_leaves_training_rows(self) -> TrainingParams:
        if self.data.sample_rows is not None and self.data.sample_rows <= self.split.holdout_rows:
            raise ValueError("data.sample_rows must exceed split.holdout_rows")
        return self

    def flat(self) -> dict[str, Any]:
        """Return the parameters as flat `section.name` keys, for MLflow."""
        return {
            f"{section}.{key}": value
            for section, values in self.model_dump().items()
            for key, value in values.items()
        }


class GuardLoweredError(ValueError):
    """A run's overrides that would relax a guard, or name a field the params do not have."""


# The guards a retrain must respect, each with the direction that makes it stricter. A flow
# run's `overrides` (anyone who can create a flow run chooses them) may only tighten these;
# relaxing one takes a committed params.yaml change, which review and DVC see.
#   "higher": a larger value is stricter; "lower": a smaller value is stricter;
#   "superset": the new value must keep every item of the committed one;
#   "false": may only be turned off; "pinned": may not change at all;
#   "caution": a release mode at least as cautious (`RELEASE_MODE_CAUTION`).
GUARDS: dict[tuple[str, str], str] = {
    # The data gate: what the model may see. Dropping fewer columns lets `duration` (known only
    # after the call) leak the label; another data file trains on rows nobody reviewed.
    ("data", "drop_columns"): "superset",
    ("data", "path"): "pinned",
    # The model gate (Deepchecks and the holdout bounds) a candidate must pass to be registered.
    ("validation", "min_roc_auc"): "higher",
    ("validation", "min_gain_over_constant"): "higher",
    ("validation", "max_auc_degradation"): "lower",
    ("validation", "max_categorical_drift"): "lower",
    ("validation", "max_numeric_drift"): "lower",
    ("validation", "drifting_features_allowed"): "lower",
    ("validation", "max_new_category_ratio"): "lower",
    ("validation", "max_samples_mix"): "lower",
    # The offline gate: how much better a candidate must be before it is released, on which
    # metric, and how readily the paired test finds it worse.
    ("promotion", "min_improvement"): "higher",
    ("promotion", "metric"): "pinned",
    ("promotion", "confidence"): "lower",
    ("promotion", "min_test_rows_per_class"): "lower",
    # The release: a run may ask for a more cautious one (shadow over canary over direct, a
    # smaller canary), never skip or widen the online test.
    ("release", "mode"): "caution",
    ("release", "canary_weight"): "lower",
}


def _stricter_or_equal(rule: str, committed: Any, proposed: Any) -> bool:
    if rule == "higher":
        return bool(proposed >= committed)
    if rule == "lower":
        return bool(proposed <= committed)
    if rule == "superset":
        return set(proposed) >= set(committed)
    if rule == "false":
        return bool(proposed is False or proposed == committed)
    if rule == "caution":
        return RELEASE_MODE_CAUTION[proposed] >= RELEASE_MODE_CAUTION[committed]
    return bool(proposed == committed)


def _unknown_keys(schema: dict[str, Any], values: dict[str, Any], prefix: str) -> list[str]:
    unknown = []
    for key, value in values.items():
        if key not in schema:
            unknown.append(f"{prefix}{key}")
        elif isinstance(schema[key], dict):
            if not isinstance(value, dict):
                unknown.append(f"{prefix}{key} (a section, not a value)")
            else:
                unknown.extend(_unknown_keys(schema[key], value, f"{prefix}{key}."))
    return unknown


def _merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return `base` with `overrides` laid over it, section by section, field by field."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged


def apply_overrides(base: TrainingParams, overrides: dict[str, Any] | None) -> TrainingParams:
    """Return `base` with a run's per-section overrides applied, refused if they relax a guard.

    Every key must be a field of the params (unknown keys are refused, not ignored), the result
    must validate, and each guard in `GUARDS` may only become stricter.
    """
    if not overrides:
        return base
    committed = base.model_dump()
    unknown = _unknown_keys(committed, overrides, "")
    if unknown:
        raise GuardLoweredError(f"overrides: unknown params fields: {', '.join(sorted(unknown))}")
    params = TrainingParams.model_validate(_merged(committed, overrides), strict=False)
    proposed = params.model_dump()
    relaxed = [
        f"{section}.{name} ({rule}: {committed[section][name]!r} -> {proposed[section][name]!r})"
        for (section, name), rule in GUARDS.items()
        if not _stricter_or_equal(rule, committed[section][name], proposed[section][name])
    ]
    if relaxed:
        raise GuardLoweredError(
            "overrides may only make a guard stricter; relaxing one needs a committed params "
            f"change: {'; '.join(relaxed)}"
        )
    return params
