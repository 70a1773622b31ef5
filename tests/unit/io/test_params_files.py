"""Params files: the shipped ones validate, and a bad one is refused naming its file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from telescore.core.release import ReleaseRules
from telescore.core.schema import FLOAT_FEATURES
from telescore.io.params_files import (
    ParamsFileError,
    load_monitoring_params,
    load_release_rules,
    load_training_params,
)

ROOT = Path(__file__).resolve().parents[3]


def _write(folder: Path, text: str) -> Path:
    path = folder / "params.yaml"
    path.write_text(text)
    return path


def test_the_shipped_params_file_keeps_the_leaking_column_out_and_holds_out_a_period() -> None:
    # Given the repository's params.yaml / When its sections are read
    training = load_training_params(ROOT / "params.yaml")
    monitoring = load_monitoring_params(ROOT / "params.yaml")

    # Then the training section drops `duration`, holds out a period and refits an offset
    assert "duration" in training.data.drop_columns, "the leaking column must be dropped"
    assert training.split.holdout_rows > 0, "a holdout period is required"
    assert training.calibration.enabled, "the loop serves a refitted log-odds offset"
    # And a retraining run adds the labelled production rows
    assert monitoring.retrain_overrides["data"]["production"]["enabled"], "retrain overrides"
    # And the `release` section promotes a non-inferior challenger, other rules the defaults
    rules = load_release_rules(ROOT / "params.yaml")
    assert rules.min_auc_gain < 0, f"a non-inferiority margin: {rules.min_auc_gain}"
    assert rules.model_copy(update={"min_auc_gain": 0.0}) == ReleaseRules(), "release defaults"


def test_the_shipped_params_guard_against_a_worse_model_and_ignore_the_macro_indicators() -> None:
    # Given the repository's params.yaml (what the platform runs and the replay measures)
    params = load_training_params(ROOT / "params.yaml")

    # Then the model leaves out the macro indicators
    assert set(params.model.ignore_features) == set(FLOAT_FEATURES), params.model
    # And a candidate below the champion, or significantly worse, is refused (issue 19)
    assert params.promotion.metric == "roc_auc", params.promotion
    assert params.promotion.min_improvement >= 0, "promoting every candidate is not a default"
    assert params.validation.min_roc_auc >= 0.5, "a model worse than chance never passes"
    # And they survive the JSON round trip of the registry's `params` tag
    again = type(params).model_validate_json(params.model_dump_json(), strict=False)
    assert again == params, "the params tag must give the same params back"


def test_values_are_read_as_yaml_gives_them(tmp_path: Path) -> None:
    # Given a file whose floats are written as integers and whose sections are partial
    path = _write(
        tmp_path,
        "training:\n  model:\n    C: 2\nmonitoring:\n  drift:\n    drift_share: 1\n"
        "release:\n  confidence: 0.9\n",
    )

    # When each section is read
    training = load_training_params(path)
    monitoring = load_monitoring_params(path)
    rules = load_release_rules(path)

    # Then the values are taken, as floats, and every other field keeps its default
    assert training.model.C == 2.0, training.model
    assert isinstance(training.model.C, float), "an integer C must become a float"
    assert monitoring.drift.drift_share == 1.0, monitoring.drift
    assert rules.confidence == 0.9, rules
    assert training.split.holdout_rows == 4000, "an absent field keeps its default"


def test_a_file_without_a_training_section_is_the_training_section(tmp_path: Path) -> None:
    # Given a file holding only training fields, at the top
    path = _write(tmp_path, "split:\n  holdout_rows: 10\n")

    # When read / Then they are the training params
    assert load_training_params(path).split.holdout_rows == 10, "top-level training fields"


def test_a_bad_value_is_refused_naming_the_file_and_the_fields_path(tmp_path: Path) -> None:
    # Given a file with a negative holdout and an unknown model field
    path = _write(
        tmp_path, "training:\n  split:\n    holdout_rows: -1\n  model:\n    learning_rat: 1\n"
    )

    # When read / Then the error names the file and each field by its path in the file
    with pytest.raises(ParamsFileError) as raised:
        load_training_params(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: "), message
    assert "training.split.holdout_rows: Input should be greater than 0" in message, message
    assert "training.model.learning_rat: Extra inputs are not permitted" in message, message


def test_a_rule_across_fields_is_refused_naming_its_section(tmp_path: Path) -> None:
    # Given release rules that decide before their own minimum of rows
    path = _write(tmp_path, "release:\n  min_labelled_rows: 500\n  decide_after_rows: 100\n")

    # When read / Then the error names the file, the section and the rule
    with pytest.raises(ParamsFileError, match="release: decide_after_rows cannot be below"):
        load_release_rules(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("training: [1\n", "not valid YAML"), ("- 1\n- 2\n", "expected a mapping of sections")],
    ids=["broken-yaml", "not-a-mapping"],
)
def test_a_file_that_is_not_a_mapping_of_sections_is_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    # Given a file that is not YAML, or not a mapping
    path = _write(tmp_path, text)

    # When read / Then the error names the file and says what is wrong
    with pytest.raises(ParamsFileError, match=message) as raised:
        load_monitoring_params(path)
    assert str(path) in str(raised.value), raised.value


@pytest.mark.parametrize(
    "text",
    ["s3cret-token-0123456789abcdefghijklmnopqrstuv\n", "s3cret-token-01234: [unclosed\n"],
    ids=["a-scalar", "broken-yaml"],
)
def test_the_error_does_not_echo_the_files_text(tmp_path: Path, text: str) -> None:
    # Given a file that is not a mapping of sections (a flow run's params_file may name any
    # file of the project: its text must not reach the run's state, which Prefect shows)
    path = _write(tmp_path, text)

    # When read / Then it is refused without quoting it
    with pytest.raises(ParamsFileError) as raised:
        load_training_params(path)
    assert "s3cret" not in str(raised.value), f"the file's text leaked: {raised.value}"
