"""k8s/base/minio-users.sh: the buckets, and MLflow's MinIO user limited to its bucket.

No MinIO server runs here (no Docker engine), so the script runs under sh with a stand-in for
`mc` that records every call: what the tests read is what the script would ask of MinIO.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from deploy_checks import MINIO_USERS_SCRIPT

MLFLOW_PASSWORD = "m" * 24
# Records each call's arguments, one line each; keeps the policy file it is given; fails the
# attach with $ATTACH_ERROR when set, as MinIO does when the policy is attached already.
FAKE_MC = """#!/bin/sh
echo "$*" >> "$MC_LOG"
if [ "$1 $2 $3" = "admin policy create" ]; then cp "$6" "$MC_LOG.policy.json"; fi
if [ "$1 $2 $3" = "admin policy attach" ] && [ -n "${ATTACH_ERROR:-}" ]; then
    echo "mc: <ERROR> $ATTACH_ERROR" >&2
    exit 1
fi
"""


def run_script(tmp_path: Path, attach_error: str = "") -> tuple[int, list[str], dict]:
    """Run the script with the stand-in `mc`; return its exit status, the calls, the policy."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    mc = bin_dir / "mc"
    mc.write_text(FAKE_MC)
    mc.chmod(0o755)
    log = tmp_path / "mc.log"
    log.unlink(missing_ok=True)
    done = subprocess.run(
        ["sh", str(MINIO_USERS_SCRIPT)],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "MC_LOG": str(log),
            "TMPDIR": str(tmp_path),
            "MINIO_ROOT_USER": "telescore",
            "MINIO_ROOT_PASSWORD": "r" * 24,
            "MINIO_MLFLOW_PASSWORD": MLFLOW_PASSWORD,
            "ATTACH_ERROR": attach_error,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    policy_file = Path(f"{log}.policy.json")
    policy = json.loads(policy_file.read_text()) if policy_file.exists() else {}
    return done.returncode, calls, policy


def test_mlflow_gets_a_user_whose_policy_reaches_its_bucket_only(tmp_path: Path) -> None:
    # given the script and MinIO's root / when it runs
    status, calls, policy = run_script(tmp_path)
    # then it makes the buckets, MLflow's user with its password, and attaches the policy
    assert status == 0, f"the script failed: {calls}"
    assert "mb --ignore-existing minio/mlflow minio/dvc" in calls, calls
    assert f"admin user add minio telescore-mlflow {MLFLOW_PASSWORD}" in calls, calls
    assert "admin policy attach minio mlflow-artifacts --user telescore-mlflow" in calls, calls
    # and the policy reaches bucket `mlflow` and its objects only, with no wildcard action
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert resources == {"arn:aws:s3:::mlflow", "arn:aws:s3:::mlflow/*"}, resources
    assert all(a.startswith("s3:") and "*" not in a for a in actions), actions
    assert all(s["Effect"] == "Allow" for s in policy["Statement"]), policy


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        ("The specified policy change is already in effect.", 0),
        ("Unable to make user/group policy association. Access Denied.", 1),
    ],
    ids=["already-attached", "refused"],
)
def test_a_second_run_passes_and_a_real_failure_does_not(
    tmp_path: Path, error: str, expected: int
) -> None:
    # given MinIO answering the attach with an error / when the script runs
    status, _, _ = run_script(tmp_path, attach_error=error)
    # then "already attached" (a second start) is success, anything else fails the set-up
    assert status == expected, f"the script exited {status} on {error!r}"
