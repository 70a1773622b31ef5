"""`telescore reproduce <version>`: re-run a registered version's training from its lineage.

The lineage on the version names the code (`git_commit`), the exact rows (`data_snapshot`,
checked against `data_fingerprint`) and the parameters (`params`). The rows are downloaded and
their hash checked; the fit and the holdout evaluation are run again by the code of that commit
(this checkout when it is at that commit, else a temporary `git worktree` of it, imported first
through PYTHONPATH); the holdout metrics must match those logged on the version's run within
`tolerance`. Registration and the validation gates are not re-run: they decide, they do not
compute the model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from telescore.io.datasets import read_snapshot
from telescore.io.registry import Registry, git_commit

DEFAULT_TOLERANCE: Final = 1e-6
"""Absolute difference allowed per holdout metric: the fit is seeded and single-threaded."""
COMPARED: Final = ("holdout_roc_auc", "holdout_pr_auc", "holdout_lift_top_decile", "holdout_brier")

# Run by the version's own code: only functions every commit since lineage began has.
REFIT: Final = """
import json, sys
import pandas as pd
from telescore.core.features import build_pipeline, split_features_label
from telescore.core.metrics import classification_metrics
from telescore.core.params import TrainingParams
from telescore.core.splits import chronological_split

snapshot, params_json = sys.argv[1], sys.argv[2]
params = TrainingParams.model_validate(json.loads(params_json), strict=False)
frame = pd.read_csv(snapshot, sep=";")
train_rows, holdout_rows = chronological_split(frame, params.split)
features, labels = split_features_label(holdout_rows)
pipeline = build_pipeline(params.model).fit(*split_features_label(train_rows))
scores = pipeline.predict_proba(features)[:, 1]
metrics = classification_metrics(labels, scores)
print(json.dumps({f"holdout_{name}": value for name, value in metrics.items()}))
"""


class ReproduceError(RuntimeError):
    """The version cannot be re-run: lineage missing, commit unknown, or rows changed."""


@dataclass(frozen=True)
class MetricCheck:
    """One holdout metric: as registered, as reproduced."""

    name: str
    registered: float
    reproduced: float

    @property
    def difference(self) -> float:
        """Return the absolute difference."""
        return abs(self.reproduced - self.registered)


@dataclass(frozen=True)
class ReproduceReport:
    """What re-running a version gave."""

    version: str
    commit: str
    code: str
    """Where the code ran from: this checkout, or a worktree of the commit."""
    fingerprint: str
    tolerance: float
    checks: list[MetricCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Tell whether every metric is within the tolerance."""
        return bool(self.checks) and all(c.difference <= self.tolerance for c in self.checks)


def reproduce_version(
    registry: Registry,
    version: str,
    project_root: Path = Path(),
    tolerance: float = DEFAULT_TOLERANCE,
) -> ReproduceReport:
    """Re-run a registered version from its lineage and compare its holdout metrics."""
    details = registry.version(version)
    tags = details.tags
    missing = [
        key
        for key in ("git_commit", "data_snapshot", "data_fingerprint", "params")
        if not tags.get(key)
    ]
    if missing:
        raise ReproduceError(f"version {version} has no lineage tag {', '.join(missing)}")
    if not details.run_id:
        raise ReproduceError(f"version {version} has no run: its metrics are unknown")
    registered = registry.run_metrics(details.run_id)
    with tempfile.TemporaryDirectory(prefix="telescore-reproduce-") as work:
        snapshot = registry.download(tags["data_snapshot"], Path(work) / "data")
        try:
            # Raises unless the rows hash to the fingerprint on the version.
            read_snapshot(snapshot, tags["data_fingerprint"])
        except ValueError as error:
            raise ReproduceError(f"data snapshot does not match its lineage: {error}") from None
        with code_at(tags["git_commit"], project_root, Path(work) / "code") as code:
            reproduced = _refit(code, snapshot, tags["params"])
    checks = [
        MetricCheck(name, float(registered[name]), float(reproduced[name]))
        for name in COMPARED
        if name in registered and name in reproduced
    ]
    return ReproduceReport(
        version=version,
        commit=tags["git_commit"],
        code=str(code),
        fingerprint=tags["data_fingerprint"],
        tolerance=tolerance,
        checks=checks,
    )


@contextmanager
def code_at(commit: str, project_root: Path, scratch: Path) -> Iterator[Path]:
    """Yield a folder holding the project's code at `commit` (this checkout if it is there)."""
    if git_commit(project_root) == commit:
        yield project_root.resolve()
        return
    added = subprocess.run(
        ["git", "worktree", "add", "--detach", str(scratch), commit],
        cwd=project_root,
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        raise ReproduceError(f"commit {commit} is not in this repository: {added.stderr.strip()}")
    try:
        yield scratch
    finally:
        subprocess.run(
            ["git", "worktree", "remove", "--force", str(scratch)],
            cwd=project_root,
            capture_output=True,
        )


def _refit(code: Path, snapshot: Path, params_json: str) -> dict[str, float]:
    env = os.environ | {"PYTHONPATH": str(code / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", REFIT, str(snapshot), params_json],
        cwd=code,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ReproduceError(f"the refit failed at that commit:\n{done.stderr[-2000:]}")
    metrics: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return metrics
