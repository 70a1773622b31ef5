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

from telescore.io.context import Context
from telescore.io.registry import Registry
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
from telescore.services.mlserver import MLSERVER_SERVICE, mlserver_process, reconciler_process
from telescore.services.processes import ServiceProcess
from telescore.serving.options import RuntimeOptions
from telescore.settings import ENV_FILE_VARIABLE, MLFLOW_READER, env_file

PROBE_TIMEOUT = 2.0
"""Seconds to wait for MLServer to say whether it runs (it answers at once when it does)."""
RELOAD_TIMEOUT = 120.0
"""Seconds a (re)load through MLServer's repository API may take."""


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
    root: Path, serving: ServingClient, registry: Registry, runtime: RuntimeOptions | None = None
) -> list[Reloaded]:
    """Make a running MLServer serve the registry's aliases as they are now.

    Rewrites the model folders (a challenger alias may have appeared or gone), unloads models
    whose alias is gone and reloads the others, which re-resolves each alias to its version.
    """
    loaded = {model.name for model in serving.repository_index() if model.state == "READY"}
    models = write_registry_repository(root, registry, None, runtime)
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
    answering: bool = True
    """MLServer answers (with no model at all while there is no champion)."""


def repository_dir(ctx: Context) -> Path:
    """Return the model repository folder of the embedded MLServer."""
    return ctx.state_dir / "mlserver"


def reconciler_status_file(ctx: Context) -> Path:
    """Return the file the embedded MLServer's reconciler rewrites after every tick."""
    return ctx.state_dir / "run" / "mlserver-reconciler.json"


def local_serving_url(ctx: Context) -> str:
    """Return the embedded MLServer's own URL (never `serving.url`, which may balance replicas)."""
    return f"http://{ctx.host}:{ctx.settings.serving.http_port}"


def _process(ctx: Context, ready_models: list[str]) -> ServiceProcess:
    serving = ctx.settings.serving
    return mlserver_process(
        ctx.state_dir,
        repository_dir(ctx),
        serving.http_port,
        serving.grpc_port,
        serving.metrics_port,
        ctx.tracking_uri,
        control_token=ctx.serving_control_token,
        host=ctx.host,
        ready_models=ready_models,
        # MLServer runs in the state folder: point it at the env file this process read, so
        # that the runtime and its shipper read the same settings (the database included).
        # It only loads models from the registry: it signs in as the reader.
        env={ENV_FILE_VARIABLE: str(env_file())} | ctx.mlflow_env(MLFLOW_READER),
    )


def _reconciler(ctx: Context) -> ServiceProcess:
    return reconciler_process(
        ctx.state_dir,
        repository_dir(ctx),
        local_serving_url(ctx),
        reconciler_status_file(ctx),
        control_token=ctx.serving_control_token,
        env={ENV_FILE_VARIABLE: str(env_file())} | ctx.mlflow_env(MLFLOW_READER),
    )


def start_reconciler(ctx: Context) -> bool:
    """Start the embedded MLServer's reconciler unless it runs; False when it already ran."""
    reconciler = _reconciler(ctx)
    if platform.is_running(ctx, reconciler):
        return False
    reconciler_status_file(ctx).unlink(missing_ok=True)  # its health: written once it looked
    reconciler.start()
    platform.record_pid(ctx, reconciler)
    return True


def wake_reconciler(ctx: Context) -> bool:
    """Have the embedded MLServer's reconciler look at the registry now; False if none runs."""
    pid = platform.running_pid(ctx, _reconciler(ctx).name)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGUSR1)
        return True
    return False


def reconciler_report(ctx: Context) -> str | None:
    """Say what the embedded reconciler saw last (None: none runs here)."""
    path = reconciler_status_file(ctx)
    if platform.running_pid(ctx, _reconciler(ctx).name) is None or not path.exists():
        return None
    last = json.loads(path.read_text())
    age = max(0.0, time.time() - float(last.get("at", 0.0)))
    wanted = ", ".join(
        f"{name} v{version}" for name, version in (last.get("desired") or {}).items()
    )
    problem = f"; last look failed: {last['error']}" if last.get("error") else ""
    return f"reconciler: looked {age:.0f} s ago, registry wants {wanted or '(unknown)'}{problem}"


def status(ctx: Context) -> ServingStatus:
    """Return the served models and their versions (empty when MLServer is not up)."""
    client = ctx.serving_client(PROBE_TIMEOUT)
    answering = client.ready()
    models = (
        {
            m.name: client.served_version(m.name)
            for m in client.repository_index()
            if m.state == "READY"
        }
        if answering
        else {}
    )
    host, serving = ctx.host, ctx.settings.serving
    metrics = f"http://{host}:{serving.metrics_port}/metrics"
    log = read_metrics(metrics, "telescore_prediction_log_") if models else {}
    return ServingStatus(
        ctx.serving_url, f"{host}:{serving.grpc_port}", metrics, models, log, answering
    )


def start_serving(ctx: Context, runtime: RuntimeOptions | None = None) -> ServingStatus:
    """Start MLServer on the current aliases and its reconciler, or reload it if it runs.

    The reconciler keeps it serving the registry's aliases and offsets from then on. With no
    champion yet MLServer starts with no model, and the reconciler loads the first one that
    passes its gates as soon as training sets the alias: nobody has to start serving then.
    """
    settings = ctx.settings.serving
    if ctx.serving_client(PROBE_TIMEOUT).ready():
        if settings.url is not None:
            reload_serving(ctx)  # a server of its own, with its own reconciler
        elif not start_reconciler(ctx):  # a new one has reconciled once when it returns
            wake_reconciler(ctx)  # it alone loads models here: no reload beside it
        return status(ctx)
    runtime = runtime or RuntimeOptions(prediction_log=settings.prediction_log)
    server = ServerOptions(
        host=ctx.host,
        http_port=settings.http_port,
        grpc_port=settings.grpc_port,
        metrics_port=settings.metrics_port,
    )
    models = write_registry_repository(repository_dir(ctx), ctx.registry, server, runtime)
    process = _process(ctx, [m.name for m in models])
    process.start()
    platform.record_pid(ctx, process)
    start_reconciler(ctx)
    return status(ctx)


def stop_serving(ctx: Context) -> bool:
    """Stop the embedded MLServer, as `telescore down` does, its reconciler left running.

    False when none ran. `start_serving` starts it again on the registry's aliases.
    """
    return platform.stop_service(ctx, MLSERVER_SERVICE)


def serve_new_champion(ctx: Context) -> list[Reloaded]:
    """Serve the registry's new aliases here at once; every replica's reconciler does anyway.

    Wakes the local reconciler if one runs (an empty list: it reloads, alone); else reloads
    the MLServer at `serving.url` if it runs and `serving.reload_on_release` says so.
    """
    if wake_reconciler(ctx) or not ctx.settings.serving.reload_on_release:
        return []
    if not ctx.serving_client(PROBE_TIMEOUT).ready():
        return []
    return reload_serving(ctx)


def serve_logit_offset(ctx: Context, offset: LogitOffset) -> Reloaded | None:
    """Have the champion served with a new log-odds offset: tag its version, then serve it here.

    The tag in the registry is what every MLServer's reconciler serves. Returns the local
    reload; None when the local reconciler was woken to do it, or nothing is served here.
    """
    ctx.registry.tag_version(offset.version, RECALIBRATED_OFFSET_TAG, repr(offset.offset))
    if wake_reconciler(ctx) or not ctx.settings.serving.reload_on_release:
        return None
    if not write_logit_offset(repository_dir(ctx), CHAMPION_MODEL, offset):
        return None
    if not ctx.serving_client(PROBE_TIMEOUT).ready():
        return None
    # The challenger, if any, keeps answering untouched; the champion's old instance
    # answers until the new one, with the new offset, has loaded.
    return reload_models(ctx.serving_client(RELOAD_TIMEOUT), [CHAMPION_MODEL])[0]


def reload_serving(ctx: Context) -> list[Reloaded]:
    """Make the running MLServer serve the aliases as they are now (after a promotion)."""
    client = ctx.serving_client(RELOAD_TIMEOUT)
    return sync_served_models(repository_dir(ctx), client, ctx.registry)
