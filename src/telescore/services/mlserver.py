"""The embedded MLServer: serves the model repository over V2 REST, gRPC and metrics."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from telescore.services.processes import HealthCheck, ServiceProcess, console_script, http_ok

DEFAULT_READY_MODELS = ("telemarketing",)
MLSERVER_SERVICE = "mlserver"
"""The embedded MLServer's service name: its pid file and its log are named after it."""
CONTROL_TOKEN_VARIABLE = "TELESCORE_SERVING_CONTROL_TOKEN"  # noqa: S105 - a variable's name


def mlserver_process(
    state_dir: Path,
    repository_dir: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    tracking_uri: str,
    *,
    control_token: str,
    host: str = "127.0.0.1",
    ready_models: Sequence[str] = DEFAULT_READY_MODELS,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 120.0,
) -> ServiceProcess:
    """MLServer on a repository written by `jobs.model_repository`, healthy once models load.

    Its model repository API answers only requests bearing `control_token`
    (`telescore.serving.server` says what else it refuses).
    """
    _check_ports(repository_dir, host, http_port, grpc_port, metrics_port)
    state_dir = state_dir.resolve()
    base = f"http://{host}:{http_port}"
    return ServiceProcess(
        name=MLSERVER_SERVICE,
        # Absolute: the process runs in the state folder, not the caller's working directory.
        # `mlserver start`, guarded: MLServer itself has no authentication.
        command=[sys.executable, "-m", "telescore.serving.server", str(repository_dir.resolve())],
        health=_all_ok(
            [http_ok(f"{base}/v2/health/ready")]
            + [http_ok(f"{base}/v2/models/{name}/ready") for name in ready_models]
        ),
        log_path=state_dir / "logs" / "mlserver.log",
        env={
            # One BLAS/OpenMP thread: scoring is one small batch at a time, and thread start-up
            # cost 30 ms per call for a boosted model on two cores.
            "OMP_NUM_THREADS": "1",
            "MLFLOW_TRACKING_URI": tracking_uri,
            # The registry too: `mlflow.set_registry_uri` exports its URI to every process
            # started after it, which could otherwise point MLServer at another server.
            "MLFLOW_REGISTRY_URI": tracking_uri,
            # Progress bars would fill the log with carriage returns on every (re)load.
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
            # The runtime's default prediction spool lives under the state folder.
            "TELESCORE_STATE_DIR": str(state_dir),
            **(env or {}),
            CONTROL_TOKEN_VARIABLE: control_token,
        },
        cwd=state_dir,
        startup_timeout=startup_timeout,
    )


def reconciler_process(
    state_dir: Path,
    repository_dir: Path,
    serving_url: str,
    status_file: Path,
    *,
    control_token: str,
    slot: str = "all",
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 60.0,
) -> ServiceProcess:
    """The MLServer's reconciler (`telescore serve reconcile`), healthy once it has looked.

    It loads and unloads with `control_token`, the one its MLServer was started with.
    """
    state_dir = state_dir.resolve()
    return ServiceProcess(
        name="mlserver-reconciler",
        command=[
            console_script("telescore"),
            "serve",
            "reconcile",
            "--repository",
            str(repository_dir.resolve()),
            "--url",
            serving_url,
            "--slot",
            slot,
            "--status-file",
            str(status_file.resolve()),
        ],
        health=status_file.exists,
        log_path=state_dir / "logs" / "mlserver-reconciler.log",
        env={
            "TELESCORE_STATE_DIR": str(state_dir),
            **(env or {}),
            CONTROL_TOKEN_VARIABLE: control_token,
        },
        cwd=state_dir,
        startup_timeout=startup_timeout,
    )


def _check_ports(
    repository_dir: Path, host: str, http_port: int, grpc_port: int, metrics_port: int
) -> None:
    """Refuse a repository whose settings.json disagrees with the ports health is checked on."""
    # MLServer reads settings.json over its MLSERVER_* environment variables, so the file is
    # the one source of truth: a mismatch would only show as a start-up timeout.
    path = repository_dir / "settings.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: write the repository first")
    settings = json.loads(path.read_text())
    expected = {
        "host": host,
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
    }
    wrong = {
        key: settings.get(key) for key, value in expected.items() if settings.get(key) != value
    }
    if wrong:
        raise ValueError(f"{path} disagrees with the requested {expected}: it has {wrong}")


def _all_ok(checks: Sequence[HealthCheck]) -> HealthCheck:
    """Return a check that passes when every check passes (in order, stopping at a failure)."""

    def check() -> bool:
        return all(each() for each in checks)

    return check
