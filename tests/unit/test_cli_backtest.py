"""`telescore backtest` from the command line: no service, a table, a patch; a bad grid named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from telescore.cli import app

ROOT = Path(__file__).resolve().parents[2]
GRID = """
candidates:
  - name: loose
    overrides:
      training:
        split: {holdout_rows: 500}
        validation: {min_roc_auc: 0.5, min_gain_over_constant: 0.0, max_auc_degradation: 0.5}
  - name: offset
    extends: loose
    overrides:
      training:
        calibration: {enabled: true}
variants:
  window_rows: [1000]
  label_delay_rows: [500]
  first_champion_fraction: [0.3]
selection:
  folds: 2
"""


@pytest.mark.slow
def test_the_command_prints_the_evidence_and_writes_the_patch_with_no_service(
    tmp_path: Path,
) -> None:
    # given a two-candidate grid and no service running
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID)
    patch = tmp_path / "recommended.yaml"

    # when the command runs on the first 5,000 rows, MLflow left out
    result = CliRunner().invoke(
        app,
        [
            "backtest",
            "--grid", str(grid),
            "--params-file", str(ROOT / "params.yaml"),
            "--rows", "5000",
            "--workers", "1",
            "--out", str(tmp_path / "out"),
            "--write-patch", str(patch),
            "--no-mlflow",
        ],
        env={"COLUMNS": "160"},
    )  # fmt: skip

    # then it prints both candidates' periods and its recommendation, and writes the patch
    assert result.exit_code == 0, result.output
    assert "Recommended:" in result.output, result.output
    for name in ("loose", "offset"):
        assert name in result.output, f"{name} is in the table"
    assert "--no-mlflow: nothing logged" in result.output, "it says MLflow was left out"
    written = yaml.safe_load(patch.read_text())
    assert written["training"]["split"] == {"holdout_rows": 500}, f"the patch: {written}"


def test_a_bad_grid_stops_the_command_naming_the_field(tmp_path: Path) -> None:
    # given a grid whose candidate sets a negative regularisation
    grid = tmp_path / "grid.yaml"
    grid.write_text("candidates: [{name: a, overrides: {training: {model: {C: -1}}}}]")

    # when the command runs
    result = CliRunner().invoke(
        app,
        ["backtest", "--grid", str(grid), "--params-file", str(ROOT / "params.yaml")],
        env={"COLUMNS": "200"},
    )

    # then it stops before reading any history, naming the field
    assert result.exit_code == 2, result.output
    assert "candidates.a.training.model.C" in result.output, result.output
