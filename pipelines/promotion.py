"""Prefect flow `promote-telemarketing`: judge the canary or shadow release under way.

It promotes the challenger, rolls it back, or waits. Scheduled by `telescore up`, and run by
hand with `prefect deployment run 'promote-telemarketing/default'` or `telescore promote`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from telescore.core.release import ReleaseRules
from telescore.io.context import Context
from telescore.io.params_files import load_release_rules, resolve_params_file
from telescore.jobs import releases
from telescore.settings import project_root


@task(name="judge-release", cache_policy=NO_CACHE)
def judge_release(ctx: Context, rules: ReleaseRules) -> releases.ReleaseOutcome:
    """Gather the release's evidence, decide, record and act (not retried: it acts once)."""
    return releases.run_promotion(ctx, rules)


@flow(name="promote-telemarketing", log_prints=True, persist_result=True)
def promote_telemarketing(params_file: str = "params.yaml") -> dict[str, Any]:
    """Promote the challenger, roll it back, or wait for more outcomes."""
    with Context.from_environment() as ctx:
        rules = load_release_rules(resolve_params_file(params_file, project_root(), ctx.state_dir))
        outcome = judge_release(ctx, rules)
    get_run_logger().info("Release: %s (%s)", outcome.action, outcome.reason)
    return asdict(outcome)
