"""The GX suite kept in the repo must agree with the schema the model is built from."""

import copy
import hashlib
import json
from pathlib import Path

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


def _write_suite(path: Path, suite: dict) -> Path:
    path.write_text(json.dumps(suite, indent=2))
    return path


def test_suite_hash_is_the_sha256_of_the_committed_file() -> None:
    # given the suite file as committed, when its lineage hash is taken
    digest = suite_hash()
    # then it is the sha256 of the file's bytes, so `sha256sum` on a checkout finds the suite
    assert digest == hashlib.sha256(SUITE_PATH.read_bytes()).hexdigest(), (
        "the lineage hash must be the sha256 of the suite file as committed"
    )


def test_suite_hash_follows_the_content_not_the_path(tmp_path: Path) -> None:
    # given a byte-for-byte copy of the suite under another name
    copy = tmp_path / "copy.json"
    copy.write_bytes(SUITE_PATH.read_bytes())
    # when both are hashed, then they agree
    assert suite_hash(copy) == suite_hash(), "the same suite must hash the same wherever it lies"


def test_suite_hash_changes_when_an_expectation_changes(tmp_path: Path) -> None:
    # given two copies of the suite written alike, one with a loosened positive-rate bound
    loosened = copy.deepcopy(SUITE)
    bound = next(e for e in loosened["expectations"] if "mostly" in e["kwargs"])
    bound["kwargs"]["mostly"] /= 2
    original = _write_suite(tmp_path / "original.json", SUITE)
    edited = _write_suite(tmp_path / "edited.json", loosened)
    # when both are hashed, then the edited suite gets a hash of its own
    assert suite_hash(edited) != suite_hash(original), (
        "a changed expectation must change the lineage hash recorded on the model"
    )
