"""Prefect: work pool, deployments and deployment runs, through Prefect's own CLI and client."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

TRAINING_DEPLOYMENT = "train-telemarketing/default"
MONITOR_DEPLOYMENT = "monitor-telemarketing/default"
PROMOTION_DEPLOYMENT = "promote-telemarketing/default"
IN_FLIGHT_STATES = ("SCHEDULED", "PENDING", "RUNNING")
"""States of a flow run that will still do work (a late or paused run is SCHEDULED or PAUSED)."""


class OrchestratorError(RuntimeError):
    """A Prefect command failed."""


def _prefect(args: list[str], env: Mapping[str, str], cwd: Path) -> str:
    command = [str(Path(sys.executable).with_name("prefect")), "--no-prompt", *args]
    done = subprocess.run(
        command, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise OrchestratorError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def ensure_work_pool(pool: str, env: Mapping[str, str], cwd: Path) -> None:
    """Create the process work pool unless it exists."""
    try:
        _prefect(["work-pool", "inspect", pool], env, cwd)
    except OrchestratorError:
        _prefect(["work-pool", "create", pool, "--type", "process"], env, cwd)


def deploy_all(prefect_file: Path, env: Mapping[str, str], cwd: Path) -> str:
    """Register every deployment in `prefect_file`; return Prefect's summary."""
    return _prefect(["deploy", "--all", "--prefect-file", str(prefect_file)], env, cwd)


@contextmanager
def _prefect_api(api_url: str) -> Iterator[None]:
    """Point Prefect's client at `api_url` for the block, whatever settings it loaded before.

    Prefect reads its settings once per process: an environment variable set later (by a
    replay, or a test) would be ignored, so the setting is overridden for the block too.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    os.environ["PREFECT_API_URL"] = api_url  # for processes started from here
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        yield


def run_deployment(
    name: str, api_url: str, parameters: dict[str, Any] | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run a deployment on its work pool, wait for it, and return its final state and result."""
    with _prefect_api(api_url):
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment as prefect_run_deployment

        # Called from sync code, run_deployment returns the flow run (not a coroutine).
        flow_run = cast(
            FlowRun, prefect_run_deployment(name, parameters=parameters, timeout=timeout)
        )
        state = flow_run.state
        result: Any = None
        if state is not None and state.is_completed():
            result = state.result(raise_on_failure=False)
        return {
            "flow_run_id": str(flow_run.id),
            "flow_run_name": flow_run.name,
            "state": state.name if state else "unknown",
            "completed": bool(state and state.is_completed()),
            "result": result,
        }


def trigger_deployment(
    name: str, api_url: str, parameters: dict[str, Any], idempotency_key: str
) -> dict[str, Any]:
    """Create a run of a deployment without waiting; the same key gives back the same run.

    Prefect deduplicates flow runs on (deployment, idempotency key): a monitor that decides
    twice for one episode gets the run it created the first time.
    """
    with _prefect_api(api_url):
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment as prefect_run_deployment

        flow_run = cast(
            FlowRun,
            prefect_run_deployment(
                name, parameters=parameters, timeout=0, idempotency_key=idempotency_key
            ),
        )
        return {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name}


def runs_in_flight(name: str, api_url: str) -> list[str]:
    """Return the ids of the deployment's runs that are scheduled, pending or running."""
    with _prefect_api(api_url):
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType(s) for s in IN_FLIGHT_STATES])
                    )
                ),
            )
        return [str(run.id) for run in runs]


def flow_run_state(flow_run_id: str, api_url: str) -> dict[str, Any]:
    """Return a flow run's state name, whether it is final, and its result when completed."""
    with _prefect_api(api_url):
        from uuid import UUID

        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(UUID(flow_run_id))
        state = flow_run.state
        final = bool(state and state.is_final())
        result: Any = None
        if state is not None and state.is_completed():
            result = state.result(raise_on_failure=False)
        return {
            "state": state.name if state else "unknown",
            "final": final,
            "completed": bool(state and state.is_completed()),
            "message": state.message if state else None,
            "result": result,
        }


def set_schedules_active(name: str, api_url: str, active: bool) -> int:
    """Turn a deployment's schedules on or off; return how many it has."""
    with _prefect_api(api_url):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
            schedules = client.read_deployment_schedules(deployment.id)
            for schedule in schedules:
                client.update_deployment_schedule(deployment.id, schedule.id, active=active)
        return len(schedules)
