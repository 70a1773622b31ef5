"""Lineage tags the training job sets on a registered model version."""

import pytest

from telescore.jobs.training import validation_lineage
from telescore.validation.base import ValidationReport


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
