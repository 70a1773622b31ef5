"""Training parameters: the rules of our own that a params file must meet."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from telescore.core.params import TrainingParams
from telescore.core.schema import FEATURES
from telescore.jobs.training import resolve_params


def _params(values: dict[str, object]) -> TrainingParams:
    # As a params file is read: lax, so that YAML's numbers are taken.
    return TrainingParams.model_validate(values, strict=False)


def test_unknown_field_is_rejected() -> None:
    # Given a misspelt hyper-parameter / When validated / Then it is refused by name
    with pytest.raises(ValidationError, match="learning_rat"):
        _params({"model": {"learning_rat": 0.1}})


def test_sample_must_exceed_holdout() -> None:
    # Given a sample no larger than the holdout / When validated / Then nothing is left to fit on
    with pytest.raises(ValidationError, match="sample_rows must exceed split.holdout_rows"):
        _params({"data": {"sample_rows": 200}, "split": {"holdout_rows": 200}})
    # And one row more is enough
    assert _params({"data": {"sample_rows": 201}, "split": {"holdout_rows": 200}}).data.sample_rows


def test_overrides_are_validated_again() -> None:
    # Given the defaults
    base = TrainingParams()

    # When overridden / Then the override changes the value, and a bad one is refused
    assert resolve_params(base, {"split": {"holdout_rows": 10}}).split.holdout_rows == 10, (
        "an override must change the value"
    )
    with pytest.raises(ValidationError):
        resolve_params(base, {"split": {"holdout_rows": -1}})
    with pytest.raises(ValueError, match="unknown params fields: nonsense"):
        resolve_params(base, {"nonsense": {}})


def test_ignored_features_must_be_model_inputs() -> None:
    # Given names that are not inputs, or every input / When validated / Then refused
    with pytest.raises(ValidationError, match="not model inputs"):
        _params({"model": {"ignore_features": ["euribor"]}})
    with pytest.raises(ValidationError, match="at least one input"):
        _params({"model": {"ignore_features": list(FEATURES)}})


def test_ignored_features_keep_one_of_each_in_the_order_given() -> None:
    # Given a list naming an input twice
    params = _params({"model": {"ignore_features": ["euribor3m", "age", "euribor3m"]}})

    # When validated / Then each input is kept once, where it first appears
    assert params.model.ignore_features == ("euribor3m", "age"), params.model.ignore_features


def test_a_negative_min_improvement_lets_every_gated_candidate_through() -> None:
    # Given -1, the lowest a metric in [0, 1] can fall / Then it is taken, and below it refused
    assert _params({"promotion": {"min_improvement": -1}}).promotion.min_improvement == -1.0
    with pytest.raises(ValidationError, match="min_improvement"):
        _params({"promotion": {"min_improvement": -1.5}})


def test_calibration_needs_at_least_its_minimum_of_rows() -> None:
    # Given a minimum above the rows the offset is fitted on / Then refused
    with pytest.raises(ValidationError, match="min_rows cannot exceed calibration.rows"):
        _params({"calibration": {"rows": 400, "min_rows": 500}})


def test_flat_params_name_each_value_by_its_section() -> None:
    # Given params with one value changed
    params = _params({"model": {"C": 0.5}})

    # When flattened for MLflow
    flat = params.flat()

    # Then each value is under `section.name`, one key per field of every section
    assert flat["model.C"] == 0.5, flat
    assert flat["split.holdout_rows"] == 4000, flat
    sections = TrainingParams.model_fields
    expected = sum(len(type(getattr(params, name)).model_fields) for name in sections)
    assert len(flat) == expected, f"{len(flat)} keys for {expected} fields"


def test_a_gated_candidate_is_released_in_the_shadow_unless_the_params_say_otherwise() -> None:
    # Given no release section / When validated / Then candidates go to a shadow release, and
    # the offline gate neither waves every candidate through nor skips its paired test
    params = _params({})
    assert params.release.mode == "shadow", "a retrained model must be tested on live traffic"
    assert params.promotion.min_improvement >= 0, "every candidate passing is not the default"
    assert 0.5 < params.promotion.confidence < 1, params.promotion
    # And a canary with its weight is taken, an unknown mode or an empty canary refused
    canary = _params({"release": {"mode": "canary", "canary_weight": 25}})
    assert (canary.release.mode, canary.release.canary_weight) == ("canary", 25.0), canary
    with pytest.raises(ValidationError, match="release.mode"):
        _params({"release": {"mode": "everyone"}})
    with pytest.raises(ValidationError, match="release.canary_weight"):
        _params({"release": {"mode": "canary", "canary_weight": 0}})


def test_the_shipped_params_test_every_retrained_model_online_behind_a_guard() -> None:
    # Given the params.yaml a user deploys / When read / Then a retrained model that passes
    # the gates goes to an online test (shadow or canary, issue 19), and the offline gate
    # refuses one below the champion on the fresh holdout: never "promote every candidate"
    from pathlib import Path

    from telescore.io.params_files import load_training_params

    shipped = load_training_params(Path(__file__).resolve().parents[3] / "params.yaml")
    assert shipped.release.mode in {"shadow", "canary"}, shipped.release
    assert shipped.promotion.metric == "roc_auc", shipped.promotion
    assert shipped.promotion.min_improvement >= 0, "a candidate below the champion passes"
