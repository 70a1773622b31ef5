"""Lineage tags the training job sets on a registered model version."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from telescore.core.params import TrainingParams
from telescore.core.scoring import shift_log_odds
from telescore.io.datasets import Dataset
from telescore.jobs.training import registration_offset, validation_lineage
from telescore.validation.base import ValidationReport

DATASET = Path(__file__).resolve().parents[3] / "data" / "bank-additional-full.csv.gz"


def _reports(
    *, successful: int, evaluated: int, passed: int, failed: int
) -> tuple[ValidationReport, ValidationReport]:
    data_report = ValidationReport(
        tool="great_expectations",
        passed=successful == evaluated,
        metrics={
            "gx_evaluated_expectations": float(evaluated),
            "gx_successful_expectations": float(successful),
            "gx_success_percent": 100.0 * successful / evaluated,
        },
    )
    model_report = ValidationReport(
        tool="deepchecks",
        passed=failed == 0,
        metrics={
            "deepchecks_failed_conditions": float(failed),
            "deepchecks_passed_conditions": float(passed),
        },
    )
    return data_report, model_report


def test_lineage_counts_what_each_gate_checked() -> None:
    # given reports of two gates that passed
    data_report, model_report = _reports(successful=41, evaluated=41, passed=8, failed=0)
    # when the lineage tags are built
    tags = validation_lineage(data_report, model_report)
    # then each verdict comes with its count, read from the report's figures
    assert tags["gx_verdict"] == "passed", "the GX verdict must follow the report"
    assert tags["gx_expectations"] == "41 of 41 expectations passed", "GX counts are wrong"
    assert tags["deepchecks_verdict"] == "passed", "the Deepchecks verdict must follow the report"
    assert tags["deepchecks_conditions"] == "8 of 8 conditions passed", "Deepchecks counts wrong"


@pytest.mark.parametrize(("passed", "failed"), [(6, 2), (0, 1)])
def test_failed_conditions_show_in_verdict_and_count(passed: int, failed: int) -> None:
    # given a Deepchecks report with failed conditions (or an errored check)
    data_report, model_report = _reports(successful=41, evaluated=41, passed=passed, failed=failed)
    # when the lineage tags are built
    tags = validation_lineage(data_report, model_report)
    # then the verdict says failed and the count includes the failures in the total
    assert tags["deepchecks_verdict"] == "failed", "a failed report must not read passed"
    assert tags["deepchecks_conditions"] == f"{passed} of {passed + failed} conditions passed", (
        "failed conditions must count in the total"
    )


def test_failed_expectations_show_in_verdict_and_count() -> None:
    # given a GX report with two failed expectations
    data_report, model_report = _reports(successful=39, evaluated=41, passed=8, failed=0)
    # when the lineage tags are built
    tags = validation_lineage(data_report, model_report)
    # then the GX verdict says failed and the count shows the shortfall
    assert tags["gx_verdict"] == "failed", "a failed GX report must not read passed"
    assert tags["gx_expectations"] == "39 of 41 expectations passed", "GX counts are wrong"


def test_a_new_model_gets_an_offset_fitted_on_the_newest_rows_when_calibration_is_on() -> None:
    # given a model that predicts 10% for everyone, and data whose newest 1,000 rows are 30% yes
    frame = pd.read_csv(DATASET, sep=";", nrows=3000).drop(columns=["duration"])
    frame["y"] = ["no"] * 2000 + (["yes"] * 3 + ["no"] * 7) * 100
    dataset = Dataset(frame=frame, fingerprint="f", source="test")
    pipeline = SimpleNamespace(predict_proba=lambda rows: np.tile([0.9, 0.1], (len(rows), 1)))
    params = TrainingParams.model_validate(
        {"calibration": {"enabled": True, "rows": 1000, "min_rows": 500}}, strict=False
    )

    # when the registration tags are built, with calibration on and off
    tags = registration_offset(pipeline, dataset, params)
    off = registration_offset(pipeline, dataset, TrainingParams())

    # then the offset moves 10% to 30%, on exactly the newest 1,000 rows
    offset = float(tags["logit_offset"])
    assert shift_log_odds([0.1], offset)[0] == pytest.approx(0.3, abs=1e-9), tags
    assert tags["logit_offset_rows"] == "1000", tags
    assert off == {}, "no offset unless the params ask for one"
