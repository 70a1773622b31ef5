"""Prefect flow `monitor-telemarketing`: evaluate a window of logged predictions, decide."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from telescore.core.monitoring import Window
from telescore.io.context import Context
from telescore.io.params_files import load_monitoring_params, resolve_params_file
from telescore.jobs import monitoring
from telescore.settings import project_root


@task(name="monitor-window", retries=2, retry_delay_seconds=5, cache_policy=NO_CACHE)
def monitor_window(
    monitor: monitoring.Monitor, window: Window, report_dir: Path
) -> monitoring.MonitorResult:
    """Read, evaluate and decide; retried whole when MongoDB or MLflow fails mid-way.

    The decision comes last, after every read succeeded, so a failed try decides nothing;
    a retry replaces the window's snapshot and figures rather than adding to them.
    """
    return monitoring.monitor_window(monitor, window, report_dir)


@flow(name="monitor-telemarketing", log_prints=True, persist_result=True)
def monitor_telemarketing(
    params_file: str = "params.yaml",
    window_start: datetime | None = None,
    window_end: datetime | None = None,
) -> dict[str, Any]:
    """Monitor the champion on a window (default: the last complete one); decide on retraining."""
    logger = get_run_logger()
    with (
        Context.from_environment() as ctx,
        tempfile.TemporaryDirectory(prefix="telescore-monitor-") as work,
    ):
        path = resolve_params_file(params_file, project_root(), ctx.state_dir)
        params = load_monitoring_params(path)
        if window_start is not None and window_end is not None:
            window = Window(window_start.astimezone(UTC), window_end.astimezone(UTC))
        else:
            window = Window.last_complete(datetime.now(UTC), params.window_minutes)
        monitor = monitoring.open_monitor(ctx, params, params_file)
        result = monitor_window(monitor, window, Path(work))
    decision = result.decision
    logger.info("Window %s: %s", result.window, "; ".join(result.evaluated))
    logger.info(
        "Decision: %s (%s)", "retrain" if decision["retrain"] else "no retrain", decision["reason"]
    )
    return {
        "window": result.window,
        "evaluated": result.evaluated,
        "retrain": decision["retrain"],
        "reason": decision["reason"],
        "decision_id": decision["_id"],
        "training_flow_run_id": decision.get("flow_run_id"),
    }
