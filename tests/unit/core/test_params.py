from pathlib import Path

import pytest
from pydantic import ValidationError

from telescore.core.params import TrainingParams, load_params
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
