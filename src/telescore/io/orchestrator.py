"""Prefect: work pool, deployments and deployment runs, through Prefect's own CLI and client."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

TRAINING_DEPLOYMENT = "train-telemarketing/default"
MONITOR_DEPLOYMENT = "monitor-telemarketing/default"
PROMOTION_DEPLOYMENT = "promote-telemarketing/default"
IN_FLIGHT_STATES = ("SCHEDULED", "PENDING", "RUNNING")
"""States of a flow run that will still do work (a late or paused run is SCHEDULED or PAUSED)."""


AUTH_FILE = "prefect-auth"
"""The embedded Prefect server's `user:password`, under the state folder."""
AUTH_USER = "telescore"


class OrchestratorError(RuntimeError):
    """A Prefect command failed."""


@dataclass(frozen=True)
class PrefectApi:
    """Where Prefect's API is, and the `user:password` its server asks of clients (or None)."""

    url: str
    auth_string: str | None = field(default=None, repr=False)

    def client_env(self) -> dict[str, str]:
        """Prefect's own client variables for a process that talks to this API."""
        auth = {"PREFECT_API_AUTH_STRING": self.auth_string} if self.auth_string else {}
        return {"PREFECT_API_URL": self.url} | auth


def embedded_auth_string(state_dir: Path) -> str:
    """Return the embedded server's `user:password`, created (owner-only) on first use."""
    path = state_dir / AUTH_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Created 0600 from the start: never readable by others, not even for an instant.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(f"{AUTH_USER}:{secrets.token_urlsafe(32)}")
    return path.read_text().strip()


def _prefect(args: list[str], env: Mapping[str, str], cwd: Path) -> str:
    command = [str(Path(sys.executable).with_name("prefect")), "--no-prompt", *args]
    done = subprocess.run(
        command, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise OrchestratorError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


LOCKED_JOB_VARIABLES = ("command", "env", "working_dir")
"""Job variables a run may not set: what the worker runs, with which environment, from where.

A run's `job_variables` (anyone who may create a run chooses them) could otherwise replace the
command, or set `TELESCORE_PROJECT_ROOT` (the pull step's folder: where the flow's code is
loaded from) or `PYTHONPATH`, and run code of their choosing with the worker's secrets."""


def locked_job_template(template: dict[str, Any]) -> dict[str, Any]:
    """Return a base job template without the locked variables, refusing unknown ones."""
    variables = dict(template["variables"])
    variables["properties"] = {
        name: schema
        for name, schema in variables["properties"].items()
        if name not in LOCKED_JOB_VARIABLES
    }
    variables["required"] = [
        name for name in variables.get("required", []) if name not in LOCKED_JOB_VARIABLES
    ]
    # Prefect's server validates a run's job variables against this schema: an unknown (or
    # locked) one is refused with 422 rather than silently ignored.
    variables["additionalProperties"] = False
    configuration = {
        key: value
        for key, value in template["job_configuration"].items()
        if key not in LOCKED_JOB_VARIABLES
    }
    return {"variables": variables, "job_configuration": configuration}


def ensure_work_pool(pool: str, env: Mapping[str, str], cwd: Path) -> None:
    """Create or update the process work pool, with a job template a run cannot redirect."""
    from prefect.workers.process import ProcessWorker

    template = locked_job_template(ProcessWorker.get_default_base_job_template())
    with tempfile.TemporaryDirectory(prefix="telescore-pool-") as folder:
        path = Path(folder) / "base-job-template.json"
        path.write_text(json.dumps(template))
        _prefect(
            ["work-pool", "create", pool, "--type", "process"]
            + ["--base-job-template", str(path), "--overwrite"],
            env,
            cwd,
        )


def deploy_all(prefect_file: Path, env: Mapping[str, str], cwd: Path) -> str:
    """Register every deployment in `prefect_file`; return Prefect's summary."""
    return _prefect(["deploy", "--all", "--prefect-file", str(prefect_file)], env, cwd)


@contextmanager
def _prefect_api(api: PrefectApi | str) -> Iterator[None]:
    """Point Prefect's client at `api` for the block, whatever settings it loaded before.

    Prefect reads its settings once per process: an environment variable set later (by a
    replay, or a test) would be ignored, so the settings are overridden for the block too. A
    bare URL sends the credentials Prefect's own settings hold, if any.
    """
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    if isinstance(api, str):
        api = PrefectApi(api)
    os.environ.update(api.client_env())  # for processes started from here
    updates: dict[Any, Any] = {PREFECT_API_URL: api.url}
    if api.auth_string:
        updates[PREFECT_API_AUTH_STRING] = api.auth_string
    with temporary_settings(updates=updates):
        yield


def run_deployment(
    name: str, api: PrefectApi | str, parameters: dict[str, Any] | None = None, timeout: float = 900
) -> dict[str, Any]:
    """Run a deployment on its work pool, wait for it, and return its final state and result."""
    with _prefect_api(api):
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
    name: str, api: PrefectApi | str, parameters: dict[str, Any], idempotency_key: str
) -> dict[str, Any]:
    """Create a run of a deployment without waiting; the same key gives back the same run.

    Prefect deduplicates flow runs on (deployment, idempotency key): a monitor that decides
    twice for one episode gets the run it created the first time.
    """
    with _prefect_api(api):
        from prefect.client.schemas.objects import FlowRun
        from prefect.deployments import run_deployment as prefect_run_deployment

        flow_run = cast(
            FlowRun,
            prefect_run_deployment(
                name, parameters=parameters, timeout=0, idempotency_key=idempotency_key
            ),
        )
        return {"flow_run_id": str(flow_run.id), "flow_run_name": flow_run.name}


def runs_in_flight(name: str, api: PrefectApi | str) -> list[str]:
    """Return the ids of the deployment's runs that are scheduled, pending or running."""
    with _prefect_api(api):
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


def flow_run_state(flow_run_id: str, api: PrefectApi | str) -> dict[str, Any]:
    """Return a flow run's state name, whether it is final, and its result when completed."""
    with _prefect_api(api):
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


def set_schedules_active(name: str, api: PrefectApi | str, active: bool) -> int:
    """Turn a deployment's schedules on or off; return how many it has."""
    with _prefect_api(api):
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
            schedules = client.read_deployment_schedules(deployment.id)
            for schedule in schedules:
                client.update_deployment_schedule(deployment.id, schedule.id, active=active)
        return len(schedules)
