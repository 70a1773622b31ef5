"""What the serving benchmarks share: the real model registered in MLflow, and the servers.

Every service runs on free ports under a temporary state folder, as the integration tests do,
through telescore's own `ServiceProcess` definitions (so stopping one stops its process group).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATASET = PROJECT_ROOT / "data" / "bank-additional-full.csv.gz"
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
REGISTERED_MODEL = "telemarketing"
HOST = "127.0.0.1"
# Every server process gets this, whatever the caller's environment says.
SERVER_ENV = {"OMP_NUM_THREADS": "1"}


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so `with` blocks stop their services either way."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def load_features() -> tuple[Any, Any]:
    """Return all 41,188 rows of the dataset as model inputs and 0/1 labels."""
    import pandas as pd

    from telescore.core.features import split_features_label

    return split_features_label(pd.read_csv(DATASET, sep=";"))


def prospect(features: Any, index: int = -1) -> dict[str, Any]:
    """Return one row of the dataset as a JSON-ready dict of plain Python values."""
    return dict(features.iloc[[index]].to_dict(orient="records")[0])


@dataclass(frozen=True)
class RegisteredVersion:
    """A fitted pipeline and the registry version it was logged as."""

    version: str
    pipeline: Any
    fit_seconds: float


def register_version(
    tracking_uri: str, features: Any, labels: Any, **model_params: Any
) -> RegisteredVersion:
    """Fit build_pipeline(ModelParams(**model_params)) and register it as training does."""
    from telescore.core.features import build_pipeline, feature_ranges
    from telescore.core.params import ModelParams
    from telescore.io.registry import Registry

    started = time.perf_counter()
    pipeline = build_pipeline(ModelParams(**model_params)).fit(features, labels)
    fit_seconds = time.perf_counter() - started
    registry = Registry(tracking_uri, REGISTERED_MODEL, "serving-benchmark")
    run_id = registry.start_run("serving-benchmark")
    model_uri = registry.log_model(
        run_id, pipeline, features.head(1000), {"feature_ranges": feature_ranges(features)}
    )
    reference = registry.register(model_uri, run_id, tags={"benchmark": "serving"})
    registry.end_run(run_id, succeeded=True)
    return RegisteredVersion(reference.version, pipeline, fit_seconds)


def set_champion(tracking_uri: str, version: str) -> None:
    """Point the `champion` alias at `version`."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri).set_registered_model_alias(REGISTERED_MODEL, "champion", version)


def mlflow_service(state_dir: Path) -> tuple[Any, str]:
    """Return the MLflow server (not started) on a free port and its URI."""
    from telescore.services.embedded import mlflow_server
    from telescore.services.processes import free_port

    port = free_port()
    return mlflow_server(state_dir, port, HOST), f"http://{HOST}:{port}"


def mongodb_service(state_dir: Path) -> tuple[Any, str]:
    """Return nx-27017 (not started) on a free port and its URI."""
    from telescore.services.embedded import mongodb_server
    from telescore.services.processes import free_port

    port = free_port()
    return mongodb_server(state_dir, port, HOST), f"mongodb://{HOST}:{port}"


@dataclass(frozen=True)
class MLServerService:
    """One MLServer (not started yet) and where to reach it."""

    label: str
    process: Any
    rest_url: str
    grpc_target: str
    repository: Path


def mlserver_service(
    state_dir: Path,
    label: str,
    tracking_uri: str,
    runtime: dict[str, Any],
    server: dict[str, Any] | None = None,
) -> MLServerService:
    """Write a repository serving `champion` and return the MLServer for it, on free ports."""
    from mlflow import MlflowClient

    from telescore.services.mlserver import mlserver_process
    from telescore.services.processes import free_port
    from telescore.serving.model_repository import ServerOptions, write_registry_repository
    from telescore.serving.runtime import RuntimeOptions

    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    home = state_dir / label
    repository = home / "repository"
    write_registry_repository(
        repository,
        ServerOptions(
            host=HOST,
            http_port=http_port,
            grpc_port=grpc_port,
            metrics_port=metrics_port,
            **(server or {}),
        ),
        RuntimeOptions(spool_dir=home / "spool", **runtime),
        client=MlflowClient(tracking_uri),
    )
    process = mlserver_process(
        home,
        repository,
        http_port,
        grpc_port,
        metrics_port,
        tracking_uri,
        host=HOST,
        env=SERVER_ENV,
    )
    return MLServerService(
        label, process, f"http://{HOST}:{http_port}", f"{HOST}:{grpc_port}", repository
    )


@contextlib.contextmanager
def registered_champion(state_dir: Path) -> Iterator[tuple[str, Any]]:
    """Run MLflow with a version registered as champion; yield its URI and the features."""
    mlflow_server, tracking_uri = mlflow_service(state_dir)
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    with mlflow_server.running():
        features, labels = load_features()
        set_champion(tracking_uri, register_version(tracking_uri, features, labels).version)
        yield tracking_uri, features


@dataclass(frozen=True)
class LoggingPair:
    """nx-27017 and two MLServers serving the champion, log off and on (into it); not started."""

    mongodb: Any
    mongodb_uri: str
    off: MLServerService
    on: MLServerService


def logging_pair(state_dir: Path, tracking_uri: str) -> LoggingPair:
    """Define the servers that compare logging off and on (database "bench")."""
    mongodb, mongodb_uri = mongodb_service(state_dir)
    logged = {"prediction_log": True, "mongodb_uri": mongodb_uri, "mongodb_database": "bench"}
    return LoggingPair(
        mongodb,
        mongodb_uri,
        mlserver_service(state_dir, "off", tracking_uri, {"prediction_log": False}),
        mlserver_service(state_dir, "on", tracking_uri, logged),
    )


def fastapi_peer_service(state_dir: Path, tracking_uri: str, model_uri: str) -> tuple[Any, str]:
    """Return the plain FastAPI + scikit-learn peer (benchmarks/fastapi_peer.py) and its URL."""
    from telescore.services.processes import ServiceProcess, console_script, free_port, http_ok

    port = free_port()
    base = f"http://{HOST}:{port}"
    service = ServiceProcess(
        name="fastapi-peer",
        command=[
            console_script("uvicorn"),
            "benchmarks.fastapi_peer:app",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            # Off, as in telescore's MLServer: a log line per request is a cost neither should pay.
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        health=http_ok(f"{base}/health"),
        log_path=state_dir / "logs" / "fastapi-peer.log",
        env={
            **SERVER_ENV,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PEER_MODEL_URI": model_uri,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(PROJECT_ROOT), os.getenv("PYTHONPATH")])
            ),
        },
        cwd=PROJECT_ROOT,
    )
    return service, base


def mlflow_serve_service(state_dir: Path, tracking_uri: str, model_uri: str) -> tuple[Any, str]:
    """Return `mlflow models serve` of the same registered version, and its URL."""
    from telescore.services.processes import ServiceProcess, console_script, free_port, http_ok

    port = free_port()
    base = f"http://{HOST}:{port}"
    service = ServiceProcess(
        name="mlflow-models-serve",
        command=[
            console_script("mlflow"),
            "models",
            "serve",
            "--model-uri",
            model_uri,
            "--env-manager",
            "local",
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        health=http_ok(f"{base}/health"),
        log_path=state_dir / "logs" / "mlflow-models-serve.log",
        env={
            **SERVER_ENV,
            "MLFLOW_TRACKING_URI": tracking_uri,
            # MLflow starts `uvicorn` without --no-access-log; uvicorn reads UVICORN_* options.
            "UVICORN_ACCESS_LOG": "false",
            # The PATH lookup of `uvicorn` must find this environment's.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        },
        cwd=state_dir,
    )
    return service, base


def process_group_cpu_seconds(leader_pid: int) -> float:
    """Return the user+system CPU seconds used so far by every live process in a group."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        # After "pid (comm) ": state ppid pgrp ... utime is field 14, stime 15 of stat(5).
        if int(fields[2]) == leader_pid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def machine_busy_seconds() -> float:
    """Return the CPU seconds all processes on the machine have used since boot."""
    with Path("/proc/stat").open() as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait.
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")
