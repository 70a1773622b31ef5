"""The DVC stages in-process: the training steps write their files, and train refuses rows the
data gate did not pass. (`tests/integration/test_dvc.py` runs them through `dvc repro`.)"""

from __future__ import annotations

import json
from pathlib import Path

import joblib  # type: ignore[import-untyped]
import pytest

from telescore.core.params import TrainingParams
from telescore.jobs import stages

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]


def _params(sample_rows: int) -> TrainingParams:
    return TrainingParams.model_validate(
        {"data": {"sample_rows": sample_rows}, "split": {"holdout_rows": 2000}}, strict=False
    )


def test_stages_write_their_outputs_and_train_refuses_rows_not_validated(tmp_path: Path) -> None:
    # given the newest 6,000 rows, and outputs written under a folder of this test's own
    params = _params(6000)
    paths = stages.StagePaths(reports=tmp_path / "reports", models=tmp_path / "models")

    # when the three stages run in order
    data_report = stages.validate_data(params, ROOT, paths)
    metrics = stages.train(params, ROOT, paths)
    model_report = stages.validate_model(params, ROOT, paths)

    # then both gates passed and wrote their verdicts, and the model is the one evaluated
    assert data_report.passed and model_report.passed, (data_report.failures, model_report)
    verdict = json.loads(paths.data_validation.read_text())
    assert verdict["rows"] == 6000 and verdict["passed"], verdict
    assert json.loads(paths.model_validation.read_text())["passed"], "model verdict not written"
    assert json.loads(paths.metrics.read_text()) == metrics, "metrics.json differs from the run"
    assert metrics["holdout"]["rows"] == 2000, "the holdout is not the last 2,000 rows"
    assert hasattr(joblib.load(paths.model), "predict_proba"), "model.joblib is not the model"
    for name in ("roc.png", "precision_recall.png", "calibration.png", "calibration.csv"):
        assert (paths.plots / name).is_file(), f"train did not write {name}"

    # when the params select other rows than the data gate validated
    # then train refuses them before fitting
    with pytest.raises(stages.StageInputError, match="validated other rows"):
        stages.train(_params(7000), ROOT, paths)
