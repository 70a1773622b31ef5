from pathlib import Path

import pytest
from pydantic import ValidationError

from telescore.core.params import TrainingParams, load_params
from telescore.core.schema import FEATURES, FLOAT_FEATURES
from telescore.jobs.training import resolve_params

ROOT = Path(__file__).resolve().parents[3]


def test_repo_params_file_is_valid() -> None:
    params = load_params(ROOT / "params.yaml")
    assert "duration" in params.data.drop_columns, "the leaking column must be dropped by default"
    assert params.split.holdout_rows > 0, "a holdout period is required"


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(ValidationError, match="learning_rat"):
        TrainingParams.model_validate({"model": {"learning_rat": 0.1}}, strict=False)


def test_sample_must_exceed_holdout() -> None:
    with pytest.raises(ValidationError, match="sample_rows"):
        TrainingParams.model_validate(
            {"data": {"sample_rows": 100}, "split": {"holdout_rows": 200}}, strict=False
        )


def test_overrides_are_validated_again() -> None:
    base = TrainingParams()
    assert resolve_params(base, {"split": {"holdout_rows": 10}}).split.holdout_rows == 10, (
        "an override must change the value"
    )
    with pytest.raises(ValidationError):
        resolve_params(base, {"split": {"holdout_rows": -1}})
    with pytest.raises(ValueError, match="unknown params section"):
        resolve_params(base, {"nonsense": {}})


def test_params_are_frozen() -> None:
    params = TrainingParams()
    with pytest.raises(ValidationError):
        params.split.holdout_rows = 5  # type: ignore[misc]


def test_ignored_features_must_be_model_inputs() -> None:
    with pytest.raises(ValidationError, match="not model inputs"):
        TrainingParams.model_validate({"model": {"ignore_features": ["euribor"]}}, strict=False)
    with pytest.raises(ValidationError, match="at least one input"):
        TrainingParams.model_validate({"model": {"ignore_features": list(FEATURES)}}, strict=False)


def test_the_replay_params_ignore_the_macro_indicators_and_recalibrate() -> None:
    params = load_params(ROOT / "params.replay.yaml")

    assert set(params.model.ignore_features) == set(FLOAT_FEATURES), params.model
    assert params.calibration.enabled, "the replay serves a refitted log-odds offset"
    assert not load_params(ROOT / "params.yaml").calibration.enabled, "off unless asked for"
    # and they survive the JSON round trip of the registry's `params` tag
    again = TrainingParams.model_validate_json(params.model_dump_json(), strict=False)
    assert again == params, "the params tag must give the same params back"


def test_a_negative_min_improvement_lets_every_gated_candidate_through() -> None:
    params = TrainingParams.model_validate({"promotion": {"min_improvement": -1}}, strict=False)
    assert params.promotion.min_improvement == -1.0
    with pytest.raises(ValidationError, match="min_improvement"):
        TrainingParams.model_validate({"promotion": {"min_improvement": -1.5}}, strict=False)


def test_calibration_needs_at_least_its_minimum_of_rows() -> None:
    with pytest.raises(ValidationError, match="min_rows"):
        TrainingParams.model_validate({"calibration": {"rows": 400, "min_rows": 500}}, strict=False)
