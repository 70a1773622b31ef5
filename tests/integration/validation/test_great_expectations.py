"""The GX gate on corrupted data: each corruption fails and the report names the column."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from telescore.validation.great_expectations import GreatExpectationsValidator

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    frame = pd.read_csv(ROOT / "data" / "bank-additional-full.csv.gz", sep=";")
    return frame.drop(columns=["duration"]).iloc[-5000:].reset_index(drop=True)


def _with(column: str, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def corrupt(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame[column] = frame[column].astype(object)
        frame.loc[7, column] = value
        return frame

    return corrupt


def test_clean_rows_pass(rows: pd.DataFrame, tmp_path: Path) -> None:
    # Given the most recent rows as they are / When validated
    report = GreatExpectationsValidator().validate(rows, report_dir=tmp_path)

    # Then they pass, and the HTML report is written
    assert report.passed, report.summary()
    assert report.artifact_path is not None and report.artifact_path.exists(), "HTML report missing"


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda f: f.assign(age=f["age"].astype(float)), "column 'age'"),
        (_with("job", "astronaut"), "column 'job'"),
        (_with("euribor3m", 42.0), "column 'euribor3m'"),
        (lambda f: f.assign(duration=100), "duration"),
        (lambda f: f.head(500), "expect_table_row_count_to_be_between"),
        (_with("marital", None), "column 'marital'"),
        (lambda f: f.assign(y="no"), "column 'y'"),
    ],
    ids=[
        "wrong-dtype",
        "unknown-category",
        "out-of-range",
        "duration-as-feature",
        "too-few-rows",
        "null",
        "no-positives",
    ],
)
def test_corruption_fails_naming_the_column(
    rows: pd.DataFrame,
    tmp_path: Path,
    corrupt: Callable[[pd.DataFrame], pd.DataFrame],
    expected: str,
) -> None:
    # Given rows with one corruption / When validated
    report = GreatExpectationsValidator().validate(corrupt(rows), report_dir=tmp_path)

    # Then they fail, and a failure names the column at fault
    assert not report.passed, "corrupted rows must fail"
    assert any(expected in failure for failure in report.failures), report.summary()
