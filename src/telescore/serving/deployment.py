"""Run the embedded MLServer on the registry's champion (and challenger), and reload it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from telescore.io.serving_client import ServingClient
from telescore.jobs import platform
from telescore.jobs.serving import Reloaded
from telescore.services.mlserver import mlserver_process
from telescore.services.processes import ServiceProcess
from telescore.serving.model_repository import (
    ServerOptions,
    sync_served_models,
    write_registry_repository,
)
from telescore.serving.runtime import RuntimeOptions
from telescore.settings import Settings


@dataclass(frozen=True)
class ServingStatus:
    """What the embedded MLServer serves and where."""

    url: str
    grpc: str
    metrics: str
    models: dict[str, str | None]
    """MLServer model name -> registry version it serves."""


def repository_dir(settings: Settings) -> Path:
    """Return the model repository folder of the embedded MLServer."""
    return settings.project.state_dir / "mlserver"


def _registry_client(settings: Settings) -> MlflowClient:
    uri = settings.mlflow.resolved_tracking_uri(settings.project.host)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _process(settings: Settings, ready_models: list[str]) -> ServiceProcess:
    host, serving = settings.project.host, settings.serving
    return mlserver_process(
        settings.project.state_dir,
        repository_dir(settings),
        serving.http_port,
        serving.grpc_port,
        serving.metrics_port,
        settings.mlflow.resolved_tracking_uri(host),
        host=host,
        ready_models=ready_models,
        env={"TELESCORE_MONGODB_URI": settings.mongodb.resolved_uri(host)},
    )


def status(settings: Settings) -> ServingStatus:
    """Return the served models and their versions (empty when MLServer is not up)."""
    host, serving = settings.project.host, settings.serving
    url = serving.resolved_url(host)
    with ServingClient(url, timeout=2.0) as client:
        models = (
            {
                m.name: client.served_version(m.name)
                for m in client.repository_index()
                if m.state == "READY"
            }
            if client.ready()
            else {}
        )
    return ServingStatus(
        url, f"{host}:{serving.grpc_port}", f"http://{host}:{serving.metrics_port}/metrics", models
    )


def start_serving(settings: Settings) -> ServingStatus:
    """Start MLServer on the current aliases, or reload it if it already runs.

    Raises LookupError when the registry has no champion yet (train first).
    """
    url = settings.serving.resolved_url(settings.project.host)
    with ServingClient(url, timeout=2.0) as client:
        if client.ready():
            reload_serving(settings)
            return status(settings)
    runtime = RuntimeOptions(prediction_log=settings.serving.prediction_log)
    server = ServerOptions(
        host=settings.project.host,
        http_port=settings.serving.http_port,
        grpc_port=settings.serving.grpc_port,
        metrics_port=settings.serving.metrics_port,
    )
    models = write_registry_repository(
        repository_dir(settings),
        server,
        runtime,
        settings.mlflow.model_name,
        _registry_client(settings),
    )
    process = _process(settings, [m.name for m in models])
    process.start()
    platform.record_pid(settings, process)
    return status(settings)


def reload_serving(settings: Settings) -> list[Reloaded]:
    """Make the running MLServer serve the aliases as they are now (after a promotion)."""
    with ServingClient(
        settings.serving.resolved_url(settings.project.host), timeout=120.0
    ) as client:
        return sync_served_models(
            repository_dir(settings),
            client,
            registered_model=settings.mlflow.model_name,
            client=_registry_client(settings),
        )
