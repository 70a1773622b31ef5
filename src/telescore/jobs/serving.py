"""Serving control: start MLServer on the registry's aliases, reload it, say what it serves.

This is the control plane. What runs inside MLServer (the runtime, the prediction journal and
its shipper) is `telescore.serving`, which never imports the jobs. A release is served by each
MLServer's own reconciler (`jobs.reconciler`), which follows the registry: promoting, rolling
back and recalibrating only move aliases and tags; waking the local reconciler (or, where none
runs, reloading the local MLServer) just makes it quicker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient

from telescore.io.serving_client import ServingClient, ServingError, read_metrics
from telescore.jobs import platform
from telescore.jobs.model_repository import (
    CHAMPION_MODEL,
    RECALIBRATED_OFFSET_TAG,
    LogitOffset,
    ServerOptions,
    write_logit_offset,
    write_registry_repository,
)
from telescore.services.mlserver import mlserver_process, reconciler_process
from telescore.services.processes import ServiceProcess
from telescore.serving.options import RuntimeOptions
from telescore.settings import ENV_FILE_VARIABLE, Settings, env_file


@dataclass(frozen=True)
class Reloaded:
    """One served model after a reload."""

    model: str
    """MLServer model name."""
    previous_version: str | None
    """Registry version served before the reload (None: not loaded)."""
    version: str | None
    """Registry version served now."""

    @property
    def changed(self) -> bool:
        """Whether the reload switched to another registry version."""
        return self.previous_version != self.version


def reload_models(client: ServingClient, models: Sequence[str] | None = None) -> list[Reloaded]:
    """Reload served models so each re-resolves its alias; all of the repository by default."""
    names = list(models) if models is not None else [m.name for m in client.repository_index()]
    results = []
    for name in names:
        previous = client.served_version(name) if client.model_ready(name) else None
        # MLServer's `load` on a loaded model is a reload: the runtime resolves the alias again,
        # the new instance loads while the old one keeps answering, then the old one unloads.
        try:
            client.load_model(name)
        except ServingError as error:
            # MLServer loads the new instance before it swaps: the old one keeps answering.
            raise ServingError(
                error.status_code,
                f"reloading model {name} failed ({error.message}); "
                f"version {previous} keeps serving. MLServer's log says why",
            ) from error
        results.append(
            Reloaded(model=name, previous_version=previous, version=client.served_version(name))
        )
    return results


def sync_served_models(
    root: Path,
    serving: ServingClient,
    runtime: RuntimeOptions | None = None,
    registered_model: str = CHAMPION_MODEL,
    client: MlflowClient | None = None,
) -> list[Reloaded]:
    """Make a running MLServer serve the registry's aliases as they are now.

    Rewrites the model folders (a challenger alias may have appeared or gone), unloads models
    whose alias is gone and reloads the others, which re-resolves each alias to its version.
    """
    loaded = {model.name for model in serving.repository_index() if model.state == "READY"}
    models = write_registry_repository(root, None, runtime, registered_model, client)
    names = [model.name for model in models]
    for name in sorted(loaded - set(names)):
        serving.unload_model(name)
    return reload_models(serving, names)


@dataclass(frozen=True)
class ServingStatus:
    """What the embedded MLServer serves and where."""

    url: str
    grpc: str
    metrics: str
    models: dict[str, str | None]
    """MLServer model name -> registry version it serves."""
    prediction_log: dict[str, float]
    """The prediction log's metrics (journaled_total, spooled, written_total, ...)."""


def repository_dir(settings: Settings) -> Path:
    """Return the model repository folder of the embedded MLServer."""
    return settings.project.state_dir / "mlserver"


def reconciler_status_file(settings: Settings) -> Path:
    """Return the file the embedded MLServer's reconciler rewrites after every tick."""
    return settings.project.state_dir / "run" / "mlserver-reconciler.json"


def local_serving_url(settings: Settings) -> str:
    """Return the embedded MLServer's own URL (never `serving.url`, which may balance replicas)."""
    return f"http://{settings.project.host}:{settings.serving.http_port}"


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
        # MLServer runs in the state folder: point it at the env file this process read, so
        # that the runtime and its shipper read the same settings (the database included).
        env={ENV_FILE_VARIABLE: str(env_file())},
    )


def _reconciler(settings: Settings) -> ServiceProcess:
    return reconciler_process(
        settings.project.state_dir,
        repository_dir(settings),
        local_serving_url(settings),
        reconciler_status_file(settings),
        env={ENV_FILE_VARIABLE: str(env_file())},
    )


def start_reconciler(settings: Settings) -> bool:
    """Start the embedded MLServer's reconciler unless it runs; False when it already ran."""
    reconciler = _reconciler(settings)
    if platform.is_running(settings, reconciler):
        return False
    reconciler_status_file(settings).unlink(missing_ok=True)  # its health: written once it looked
    reconciler.start()
    platform.record_pid(settings, reconciler)
    return True


def wake_reconciler(settings: Settings) -> bool:
    """Have the embedded MLServer's reconciler look at the registry now; False if none runs."""
    pid = platform.running_pid(settings, _reconciler(settings).name)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)
        return True
    return False


def reconciler_report(settings: Settings) -> str | None:
    """Say what the embedded reconciler saw last (None: none runs here)."""
    path = reconciler_status_file(settings)
    if platform.running_pid(settings, _reconciler(settings).name) is None or not path.exists():
        return None
    last = json.loads(path.read_text())
    age = max(0.0, time.time() - float(last.get("at", 0.0)))
    wanted = ", ".join(
        f"{name} v{version}" for name, version in (last.get("desired") or {}).items()
    )
    problem = f"; last look failed: {last['error']}" if last.get("error") else ""
    return f"reconciler: looked {age:.0f} s ago, registry wants {wanted or '(unknown)'}{problem}"


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
    metrics = f"http://{host}:{serving.metrics_port}/metrics"
    log = read_metrics(metrics, "telescore_prediction_log_") if models else {}
    return ServingStatus(url, f"{host}:{serving.grpc_port}", metrics, models, log)


def start_serving(settings: Settings, runtime: RuntimeOptions | None = None) -> ServingStatus:
    """Start MLServer on the current aliases and its reconciler, or reload it if it runs.

    The reconciler keeps it serving the registry's aliases and offsets from then on.
    Raises LookupError when the registry has no champion yet (train first).
    """
    url = settings.serving.resolved_url(settings.project.host)
    with ServingClient(url, timeout=2.0) as client:
        running = client.ready()
    if running:
        if settings.serving.url is not None:
            reload_serving(settings)  # a server of its own, with its own reconciler
        elif not start_reconciler(settings):  # a new one has reconciled once when it returns
            wake_reconciler(settings)  # it alone loads models here: no reload beside it
        return status(settings)
    runtime = runtime or RuntimeOptions(prediction_log=settings.serving.prediction_log)
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
    start_reconciler(settings)
    return status(settings)


def serve_new_champion(settings: Settings) -> list[Reloaded]:
    """Serve the registry's new aliases here at once; every replica's reconciler does anyway.

    Wakes the local reconciler if one runs (an empty list: it reloads, alone); else reloads
    the MLServer at `serving.url` if it runs and `serving.reload_on_release` says so.
    """
    if wake_reconciler(settings) or not settings.serving.reload_on_release:
        return []
    with ServingClient(settings.serving.resolved_url(settings.project.host), timeout=2.0) as client:
        if not client.ready():
            return []
    return reload_serving(settings)


def serve_logit_offset(settings: Settings, offset: LogitOffset) -> Reloaded | None:
    """Have the champion served with a new log-odds offset: tag its version, then serve it here.

    The tag in the registry is what every MLServer's reconciler serves. Returns the local
    reload; None when the local reconciler was woken to do it, or nothing is served here.
    """
    _registry_client(settings).set_model_version_tag(
        settings.mlflow.model_name, offset.version, RECALIBRATED_OFFSET_TAG, repr(offset.offset)
    )
    if wake_reconciler(settings) or not settings.serving.reload_on_release:
        return None
    if not write_logit_offset(repository_dir(settings), CHAMPION_MODEL, offset):
        return None
    url = settings.serving.resolved_url(settings.project.host)
    with ServingClient(url, timeout=2.0) as client:
        if not client.ready():
            return None
    with ServingClient(url, timeout=120.0) as client:
        # The challenger, if any, keeps answering untouched; the champion's old instance
        # answers until the new one, with the new offset, has loaded.
        return reload_models(client, [CHAMPION_MODEL])[0]


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
