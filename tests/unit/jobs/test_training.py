"""The training job: its composition, its fit, and the lineage tags it sets on a version."""

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest

from telescore.core.params import TrainingParams
from telescore.core.scoring import shift_log_odds
from telescore.io.datasets import Dataset
from telescore.jobs import training
from telescore.jobs.training import registration_offset, validation_lineage
from telescore.validation.base import ValidationFailedError, ValidationReport

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


class _Registry:
    """The two registry calls `run_training` makes itself: start and end of the MLflow run."""

    tracking_uri = "http://mlflow.test"

    def __init__(self) -> None:
        self.started: dict[str, str] = {}
        self.ended: list[bool] = []

    def start_run(self, run_name: str, tags: dict[str, str]) -> str:
        self.started = {"name": run_name, **tags}
        return "run-1"

    def end_run(self, run_id: str, succeeded: bool) -> None:
        self.ended.append(succeeded)


def _recording_steps(calls: list[str], failing: str = "") -> training.TrainingSteps:
    """Steps that record their name and return a stand-in; the one named `failing` raises."""

    def step(name: str, returned: Any) -> Any:
        def call(*args: Any) -> Any:
            calls.append(name)
            if name == failing:
                raise ValidationFailedError(ValidationReport(tool=name, passed=False))
            return returned

        return call

    result = training.TrainingResult("run-1", None, promoted=False, reason="kept champion")
    return training.TrainingSteps(
        ingest=step("ingest", "dataset"),
        validate_data=step("validate_data", "data report"),
        train=step("train", "trained"),
        validate_model=step("validate_model", "model report"),
        register=step("register", result),
    )


def test_run_training_runs_the_steps_in_order_in_one_run_tagged_with_its_trigger() -> None:
    # given a registry and steps that record their calls
    registry, calls = _Registry(), list[str]()
    ctx: Any = SimpleNamespace(registry=registry)

    # when a training run composes them, triggered by the monitor
    result = training.run_training(
        ctx,
        TrainingParams(),
        Path(),
        trigger={"source": "monitor"},
        steps=_recording_steps(calls),
    )

    # then each step ran once, in order, inside one run that ended as succeeded
    assert calls == ["ingest", "validate_data", "train", "validate_model", "register"], calls
    assert registry.started == {"name": "train-telemarketing", "trigger.source": "monitor"}, (
        "the run must be named and tagged with its trigger"
    )
    assert registry.ended == [True], "the run must end once, as succeeded"
    assert result.reason == "kept champion", "the result must be what register decided"


def test_a_failed_gate_stops_the_run_before_registration_and_marks_it_failed() -> None:
    # given steps whose model gate fails
    registry, calls = _Registry(), list[str]()
    ctx: Any = SimpleNamespace(registry=registry)

    # when a training run composes them, then the gate's error comes out
    with pytest.raises(ValidationFailedError):
        training.run_training(
            ctx, TrainingParams(), Path(), steps=_recording_steps(calls, failing="validate_model")
        )

    # and nothing after the gate ran, and the run ended as failed
    assert calls == ["ingest", "validate_data", "train", "validate_model"], calls
    assert registry.ended == [False], "a run stopped by a gate must be recorded as failed"


def test_fit_evaluates_on_the_most_recent_rows_and_logs_each_metric_by_part() -> None:
    # given the first 3,000 rows of the data, the last 1,000 held out
    frame = pd.read_csv(DATASET, sep=";", nrows=3000).drop(columns=["duration"])
    dataset = Dataset(frame=frame, fingerprint="f", source="test")
    params = TrainingParams.model_validate({"split": {"holdout_rows": 1000}}, strict=False)

    # when the model is fitted
    trained = training.fit(dataset, params)

    # then it is evaluated on exactly the newest 1,000 rows, which it did not train on
    assert trained.evaluation["holdout"]["rows"] == 1000, "the holdout is not the last 1,000 rows"
    assert trained.evaluation["train"]["rows"] == 2000, "the train rows are not the earlier ones"
    assert trained.holdout[0].index.min() == 2000, "the holdout must be the most recent rows"
    assert len(trained.holdout_scores) == 1000, "one holdout score per holdout row"
    # and a run logs each part's metrics under its prefix, with the fit's time
    metrics = trained.metrics
    assert metrics["holdout_roc_auc"] == trained.evaluation["holdout"]["roc_auc"], metrics
    assert metrics["train_brier"] == trained.evaluation["train"]["brier"], metrics
    assert metrics["fit_seconds"] == trained.fit_seconds > 0, metrics


def test_production_rows_need_the_outcome_store() -> None:
    # given params that ask for production rows
    params = TrainingParams.model_validate(
        {
            "data": {"path": str(DATASET), "sample_rows": 100, "production": {"enabled": True}},
            "split": {"holdout_rows": 50},
        },
        strict=False,
    )
    # when the rows are ingested without an outcome store, then it says what is missing
    with pytest.raises(ValueError, match="outcome store"):
        training.ingest(params, Path())
