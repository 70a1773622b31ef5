"""Prefect flow `promote-telemarketing`: judge the canary or shadow release under way.

It promotes the challenger, rolls it back, or waits. Scheduled by `telescore up`, and run by
hand with `prefect deployment run 'promote-telemarketing/default'` or `telescore promote`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from telescore.core.release import ReleaseRules, load_release_rules
from telescore.jobs import releases
from telescore.settings import load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@task(name="judge-release", cache_policy=NO_CACHE)
def judge_release(rules: ReleaseRules) -> releases.ReleaseOutcome:
    """Gather the release's evidence, decide, record and act (not retried: it acts once)."""
    return releases.run_promotion(load_settings(), rules)


@flow(name="promote-telemarketing", log_prints=True, persist_result=True)
def promote_telemarketing(params_file: str = "params.yaml") -> dict[str, Any]:
    """Promote the challenger, roll it back, or wait for more outcomes."""
    outcome = judge_release(load_release_rules(PROJECT_ROOT / params_file))
    get_run_logger().info("Release: %s (%s)", outcome.action, outcome.reason)
    return asdict(outcome)
