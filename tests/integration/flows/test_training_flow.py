"""The training flow end to end: Prefect harness, a real MLflow server, the real data (sampled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml
from pipelines.training import train_telemarketing

from telescore.core.schema import FEATURES
from telescore.io.registry import CHALLENGER, CHAMPION, PREVIOUS, Registry
from telescore.validation.base import ValidationFailedError

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = {"data": {"sample_rows": 12000}, "split": {"holdout_rows": 3000}}


def committed_params(
    state: Path, monkeypatch: pytest.MonkeyPatch, changes: dict[str, dict[str, Any]]
) -> str:
    """Write params.yaml with `changes` into a state folder of the test's own; return its path.

    A run's overrides cannot relax a guard: a test that needs one relaxed does what an operator
    does, a params change (here in the platform's state folder, which flows may read).
    """
    document = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in changes.items():
        document["training"][section] = document["training"].get(section, {}) | values
    state.mkdir(parents=True, exist_ok=True)
    path = state / "params.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv("TELESCORE_STATE_DIR", str(state))
    return str(path)


def _run_artifacts(registry: Registry, run_id: str) -> set[str]:
    paths: set[str] = set()
    for folder in ("validation", "plots"):
        paths |= {a.path for a in registry.client.list_artifacts(run_id, folder)}
    return paths


def test_flow_registers_a_validated_champion_with_lineage(registry: Registry) -> None:
    # given a fresh registry, when the flow runs on a sample of the real data
    result = train_telemarketing(overrides=SAMPLE)

    # then a version is registered and holds both aliases
    assert result["promoted"], f"the first model must become champion: {result['reason']}"
    champion = registry.alias_version(CHAMPION)
    challenger = registry.alias_version(CHALLENGER)
    assert champion is not None and champion.version == result["version"], "champion alias missing"
    assert challenger is not None and challenger.version == result["version"], "challenger missing"

    # and the version carries its lineage
    tags = registry.version_tags(champion)
    for key in ("git_commit", "data_fingerprint", "gx_suite_sha256", "params"):
        assert tags.get(key), f"lineage tag {key} missing"
    assert len(tags["data_fingerprint"]) == 64, "the data fingerprint is a sha256"

    # and its validation verdicts and counts are those the gates logged on the same run
    run = registry.client.get_run(result["run_id"])
    metrics = run.data.metrics
    passed, failed = (
        int(metrics["deepchecks_passed_conditions"]),
        int(metrics["deepchecks_failed_conditions"]),
    )
    assert passed > 0 and failed == 0, f"the run logged {passed} passed, {failed} failed conditions"
    assert tags.get("deepchecks_verdict") == "passed", "the version must record the Deepchecks pass"
    conditions = f"{passed} of {passed + failed} conditions passed"
    assert tags.get("deepchecks_conditions") == conditions, (
        "the version's Deepchecks counts disagree with the report logged on its run"
    )
    successful, evaluated = (
        int(metrics["gx_successful_expectations"]),
        int(metrics["gx_evaluated_expectations"]),
    )
    assert tags.get("gx_verdict") == "passed", "the version must record the GX pass"
    expectations = f"{successful} of {evaluated} expectations passed"
    assert tags.get("gx_expectations") == expectations, (
        "the version's GX counts disagree with the report logged on its run"
    )

    # and the run holds the GX and Deepchecks reports and the plots, and the decision
    artifacts = _run_artifacts(registry, result["run_id"])
    for name in ("great_expectations.html", "deepchecks.html", "roc.png", "calibration.png"):
        assert any(path.endswith(name) for path in artifacts), f"{name} not logged: {artifacts}"
    assert run.data.tags["promotion.decision"] == "promoted", "decision not recorded on the run"
    assert {"holdout_roc_auc", "holdout_pr_auc", "holdout_lift_top_decile", "holdout_brier"} <= set(
        run.data.metrics
    ), "holdout metrics missing"

    # and the model loads through pyfunc with a signature and returns probabilities
    model = mlflow.pyfunc.load_model(f"models:/{registry.model_name}@{CHAMPION}")
    assert model.metadata.signature is not None, "the model must carry a signature"
    rows = pd.read_csv(ROOT / "data" / "bank-additional-full.csv.gz", sep=";").tail(20)
    scores = np.asarray(model.predict(rows.loc[:, list(FEATURES)]))
    assert scores.shape == (20, 2), "predict_proba output: two columns per row"
    assert ((scores >= 0) & (scores <= 1)).all(), "probabilities must lie in [0, 1]"
    assert "feature_ranges" in model.metadata.metadata, "serving needs the training ranges"


def test_second_run_that_does_not_beat_champion_leaves_it(registry: Registry) -> None:
    # given a champion
    first = train_telemarketing(overrides=SAMPLE)
    # when the same training runs again (same data, same seed: no improvement)
    second = train_telemarketing(overrides=SAMPLE)
    # then it fails the gate: registered for the record, but neither champion nor challenger,
    # and no release starts (no MongoDB is configured here: none is needed)
    assert not second["promoted"], f"an equal model must not be promoted: {second['reason']}"
    assert not second["released"], f"an equal model must not be released: {second['reason']}"
    assert "does not beat" in second["reason"], "the reason must say why"
    assert "no significant difference" in second["reason"], "the paired test must be reported"
    assert registry.alias_version(CHAMPION).version == first["version"], "champion moved"
    assert registry.alias_version(CHALLENGER).version == first["version"], "challenger moved"
    run = registry.client.get_run(second["run_id"])
    assert run.data.tags["promotion.decision"] == "kept champion", "decision not recorded"


def test_corrupted_data_fails_at_gx_and_registers_nothing(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given data with a wrong dtype (text in `age`)
    rows = pd.read_csv(ROOT / "data" / "bank-additional-full.csv.gz", sep=";").tail(6000)
    rows["age"] = rows["age"].astype(str) + " years"
    path = tmp_path / "corrupted.csv"
    rows.to_csv(path, sep=";", index=False)

    # when the flow runs on it, then it stops at the GX step naming the column
    with pytest.raises(ValidationFailedError, match="age") as failure:
        train_telemarketing(
            params_file=committed_params(
                tmp_path / "state", monkeypatch, {"data": {"path": str(path)}}
            ),
            overrides={"split": {"holdout_rows": 2000}},
        )
    assert failure.value.report.tool == "great_expectations", "must fail at the GX step"

    # and nothing is registered, and the run is marked failed
    assert registry.client.search_registered_models(f"name='{registry.model_name}'") == [], (
        "a model was registered from invalid data"
    )
    runs = mlflow.search_runs(
        experiment_names=["telemarketing-tests"], filter_string="tags.`gx.passed` = 'False'"
    )
    assert len(runs) >= 1 and (runs["status"] == "FAILED").all(), "failed run not recorded"


def test_model_failing_a_deepchecks_condition_is_not_registered(registry: Registry) -> None:
    # given an unreachable AUC bound, when the flow runs
    overrides = SAMPLE | {"validation": {"min_roc_auc": 0.99}}
    with pytest.raises(ValidationFailedError, match="AUC") as failure:
        train_telemarketing(overrides=overrides)
    # then Deepchecks blocks registration
    assert failure.value.report.tool == "deepchecks", "must fail at the Deepchecks step"
    assert registry.client.search_registered_models(f"name='{registry.model_name}'") == [], (
        "a model that failed Deepchecks was registered"
    )


def test_a_direct_release_promotes_at_once_and_keeps_the_champion_as_previous(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a champion, and params committed to release without an online test and to let
    # any candidate that passes the gates through the point comparison
    first = train_telemarketing(overrides=SAMPLE)["version"]
    direct = committed_params(
        tmp_path,
        monkeypatch,
        {"promotion": {"min_improvement": -1.0}, "release": {"mode": "direct"}},
    )
    # when a candidate no worse than the champion is trained
    second = train_telemarketing(params_file=direct, overrides=SAMPLE)
    # then it is champion at once, and the champion it replaces becomes `previous`
    assert second["promoted"] and not second["released"], second
    assert registry.alias_version(CHAMPION).version == second["version"]  # type: ignore[union-attr]
    assert registry.alias_version(PREVIOUS).version == first  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("params_file", "overrides", "refusal"),
    [
        ("/etc/passwd", None, "params_file '/etc/passwd'"),
        ("../../../../etc/hosts", None, "outside the project root"),
        ("params.yaml", {"promotion": {"min_improvement": -1.0}}, "promotion.min_improvement"),
        ("params.yaml", {"release": {"mode": "direct"}}, "release.mode"),
        ("params.yaml", {"validation": {"min_roc_auc": 0.0}}, "validation.min_roc_auc"),
        ("params.yaml", {"data": {"drop_columns": []}}, "data.drop_columns"),
        ("params.yaml", {"deploy": {"command": "sh -c id"}}, "unknown params fields: deploy"),
    ],
)
def test_a_run_cannot_choose_a_file_outside_or_relax_a_guard(
    registry: Registry, params_file: str, overrides: dict[str, Any] | None, refusal: str
) -> None:
    # given a flow run's parameters, as anyone who can create a run may choose them
    # when the flow runs, then it refuses before training, naming what was refused
    with pytest.raises(ValueError, match="") as refused:
        train_telemarketing(params_file=params_file, overrides=overrides)
    assert refusal in str(refused.value), f"the refusal must name {refusal!r}: {refused.value}"
    # and nothing was registered or logged as a run
    assert registry.client.search_registered_models(f"name='{registry.model_name}'") == [], (
        "a refused run registered a model"
    )
