"""`telescore reproduce`: a version trained by the flow is re-run from its lineage, and caught
when its data or its parameters are not what the lineage says."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pipelines.training import train_telemarketing

from telescore.io.registry import Registry
from telescore.jobs.reproduce import ReproduceError, reproduce_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
SAMPLE = {"data": {"sample_rows": 8000}, "split": {"holdout_rows": 2000}}


def test_a_version_is_reproduced_and_tampering_is_caught(registry: Registry) -> None:
    # given a version the training flow registered, with its lineage
    version = train_telemarketing(overrides=SAMPLE)["version"]

    # when it is re-run from that lineage
    report = reproduce_version(registry, version, ROOT)

    # then every holdout metric comes back within the tolerance
    assert {check.name for check in report.checks} >= {"holdout_roc_auc", "holdout_brier"}, report
    assert report.passed, f"not reproduced: {report.checks}"

    # when the lineage's parameters no longer say what trained it, the metrics differ
    params = json.loads(
        registry.client.get_model_version(registry.model_name, version).tags["params"]
    )
    params["model"]["C"] = params["model"].get("C", 1.0) * 1e-3
    params["model"]["kind"] = "logistic_regression"
    registry.client.set_model_version_tag(
        registry.model_name, version, "params", json.dumps(params)
    )
    assert not reproduce_version(registry, version, ROOT).passed, "other params, same metrics?"

    # and when the fingerprint does not match the snapshot's rows, it refuses to re-run
    registry.client.set_model_version_tag(
        registry.model_name, version, "data_fingerprint", "0" * 64
    )
    with pytest.raises(ReproduceError, match="snapshot"):
        reproduce_version(registry, version, ROOT)


def test_an_unknown_commit_is_a_clear_error(registry: Registry) -> None:
    version = train_telemarketing(overrides=SAMPLE)["version"]
    registry.client.set_model_version_tag(registry.model_name, version, "git_commit", "f" * 40)
    with pytest.raises(ReproduceError, match="not in this repository"):
        reproduce_version(registry, version, ROOT)
