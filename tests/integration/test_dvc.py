"""The DVC pipeline: the committed dvc.lock matches the committed inputs, and `dvc repro` works.

Each test copies what a fresh clone has (no DVC cache, no outputs) into its own git repo, so
that nothing here touches the checkout's cache, outputs or lock file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DVC = str(Path(sys.executable).with_name("dvc"))
# What a fresh clone holds that the pipeline reads; `src` is copied whole.
CLONE_FILES = (
    "dvc.yaml",
    "dvc.lock",
    "params.yaml",
    ".dvcignore",
    ".dvc/config",
    ".dvc/.gitignore",
    "data/bank-additional-full.csv.gz",
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _fresh_clone(target: Path) -> Path:
    """Copy the pipeline's files into `target` as a new git repo without DVC cache or outputs."""
    for name in CLONE_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, target / name)
    shutil.copytree(
        PROJECT_ROOT / "src", target / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    subprocess.run(["git", "init", "-q"], cwd=target, check=True)
    return target


def _dvc(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run dvc in `clone` with this environment's `python` and the copied code first on the path."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # The stages must run the copied code, not the checkout the package is installed from.
        "PYTHONPATH": str(clone / "src"),
        "OMP_NUM_THREADS": "1",
        "DVC_NO_ANALYTICS": "1",
    }
    result = subprocess.run(
        [DVC, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _status(clone: Path) -> dict[str, list[dict[str, Any]]]:
    """Return what `dvc status --json` prints, by stage name (in-process: a CLI call costs ~3 s)."""
    from dvc.repo import Repo

    # Stages are named relative to the working directory: from the root, by their bare name.
    with contextlib.chdir(clone), Repo(str(clone)) as repo:
        return dict(repo.status())


def _metrics(clone: Path) -> dict[str, Any]:
    """Return the metrics files DVC reads in the workspace, by path."""
    from dvc.repo import Repo

    with contextlib.chdir(clone), Repo(str(clone)) as repo:
        return {path: found["data"] for path, found in repo.metrics.show()[""]["data"].items()}


def _stage_outputs() -> set[str]:
    """Return every path a stage of dvc.yaml writes (outs, metrics and plots)."""
    stages = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]
    return {
        next(iter(entry)) if isinstance(entry, dict) else entry
        for stage in stages.values()
        for kind in ("outs", "metrics", "plots")
        for entry in stage.get(kind, [])
    }


def test_committed_lock_matches_committed_data_code_and_params(tmp_path: Path) -> None:
    # Given a fresh clone: data, params and code as committed, no DVC cache, no outputs
    clone = _fresh_clone(tmp_path)

    # When DVC compares them with dvc.lock
    status = _status(clone)

    # Then every dependency that is not another stage's (absent) output is unchanged
    stage_outputs = _stage_outputs()
    stale = {
        stage: change
        for stage, changes in status.items()
        for change in changes
        if "changed outs" not in change
        and not (
            "changed deps" in change
            and all(
                path in stage_outputs and state == "deleted"
                for path, state in change["changed deps"].items()
            )
        )
    }
    assert not stale, f"dvc.lock is stale, run `dvc repro` and commit dvc.lock: {stale}"


def test_repro_on_a_sample_writes_outputs_and_reruns_only_affected_stages(tmp_path: Path) -> None:
    # Given a fresh clone whose params select a small, recent sample of rows
    clone = _fresh_clone(tmp_path)
    params_path = clone / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["training"]["data"]["sample_rows"] = 8000
    params["training"]["split"]["holdout_rows"] = 2000
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    # When the whole pipeline is reproduced
    _dvc(clone, "repro")

    # Then each stage wrote its outputs, the gates passed and the lock records the sample
    for path in sorted(_stage_outputs()):
        assert (clone / path).is_file(), f"dvc repro did not write {path}"
    data_verdict = json.loads((clone / "reports/data_validation.json").read_text())
    assert data_verdict["passed"], f"GX gate failed on the sample: {data_verdict['failures']}"
    assert data_verdict["rows"] == 8000, "validate-data did not read the sampled rows"
    model_verdict = json.loads((clone / "reports/model_validation.json").read_text())
    assert model_verdict["passed"], f"Deepchecks gate failed: {model_verdict['failures']}"
    train_metrics = _metrics(clone)["reports/metrics.json"]
    assert train_metrics["holdout"]["rows"] == 2000, "holdout is not the last 2,000 rows"
    assert 0.5 < train_metrics["holdout"]["roc_auc"] <= 1, "holdout ROC AUC is not a ranking"
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    locked_data = lock["stages"]["train"]["params"]["params.yaml"]["training.data"]
    assert locked_data["sample_rows"] == 8000, "dvc.lock does not record the params it ran with"
    assert _status(clone) == {}, "the pipeline is not up to date right after dvc repro"

    # When only a validation bound changes
    params["training"]["validation"]["min_roc_auc"] += 0.01
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))

    # Then only the Deepchecks stage is out of date: the data gate and the model still stand
    assert set(_status(clone)) == {"validate-model"}, "a validation bound invalidated other stages"
