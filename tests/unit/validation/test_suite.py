"""The GX suite kept in the repo must agree with the schema the model is built from."""

import json

from telescore.core.schema import CATEGORICAL_VALUES, FEATURES, LEAKING_COLUMNS, TARGET
from telescore.validation.great_expectations import SUITE_PATH, suite_hash

SUITE = json.loads(SUITE_PATH.read_text())


def _expectations(kind: str) -> list[dict]:
    return [e for e in SUITE["expectations"] if e["type"] == kind]


def test_suite_expects_exactly_the_model_columns() -> None:
    (columns,) = _expectations("expect_table_columns_to_match_set")
    assert set(columns["kwargs"]["column_set"]) == {*FEATURES, TARGET}, (
        "columns drifted from schema"
    )
    assert columns["kwargs"]["exact_match"], "extra columns (duration) must fail"
    assert not set(LEAKING_COLUMNS) & set(columns["kwargs"]["column_set"]), "duration must not pass"


def test_suite_category_sets_match_schema() -> None:
    sets = {
        e["kwargs"]["column"]: set(e["kwargs"]["value_set"])
        for e in _expectations("expect_column_values_to_be_in_set")
        if "mostly" not in e["kwargs"]
    }
    for column, values in CATEGORICAL_VALUES.items():
        assert sets[column] == set(values), f"{column}: suite and schema disagree"


def test_positive_rate_bounds_span_the_whole_history() -> None:
    bounds = {
        tuple(e["kwargs"]["value_set"]): e["kwargs"]["mostly"]
        for e in _expectations("expect_column_values_to_be_in_set")
        if "mostly" in e["kwargs"]
    }
    lowest_rate, highest_rate = bounds[("yes",)], 1 - bounds[("no",)]
    # Measured on 2,000-row windows of 2008-2010: 2% to 53% positives.
    assert lowest_rate <= 0.02, "mid-2008 windows (2-3% positives) must pass"
    assert highest_rate >= 0.53, "late-2010 windows (about 50% positives) must pass"


def test_suite_hash_is_stable() -> None:
    assert suite_hash() == suite_hash(), "the lineage hash must be deterministic"
    assert len(suite_hash()) == 64, "sha256 hex digest"
