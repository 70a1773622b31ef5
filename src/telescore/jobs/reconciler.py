"""Reconcile one MLServer with the registry: serve what the aliases and offset tags say, alone.

Every MLServer replica runs one reconciler next to it (the embedded `telescore serve start`, a
sidecar container in compose and Kubernetes). Each tick it reads the desired state, where every
replica can read it: the registry's `champion`/`challenger` aliases and the champion version's
log-odds offset (its `logit_offset_recalibrated` tag, else `logit_offset`). It compares that
with what its own MLServer serves (the repository index and each model's metadata: version,
route, offset), and only when they differ rewrites its model repository and loads, reloads or
unloads through the local repository API. A promotion, a rollback or a recalibration therefore
only moves aliases and tags; no control plane needs to know the replicas.

With no `champion` alias MLServer serves no model: the first champion is loaded as soon as its
alias appears, and a champion whose alias (or version) is removed stops answering.

Idempotent: a tick with nothing to change writes and loads nothing. A tick that fails (MLflow
or MLServer unreachable, a version that does not load) changes nothing more and is retried on
the next one; MLServer keeps serving what it has loaded meanwhile.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from telescore.io.registry import Registry
from telescore.io.serving_client import ServingClient
from telescore.jobs.model_repository import (
    DesiredModel,
    Slot,
    registry_desired_models,
    write_desired_repository,
)
from telescore.jobs.serving import reload_models

logger = logging.getLogger(__name__)

OFFSET_TOLERANCE = 1e-12
"""Offsets closer than this are the same one (they travel as decimal text in tags and JSON)."""


@dataclass(frozen=True)
class ServedState:
    """What one loaded model of an MLServer serves, from its metadata."""

    version: str | None
    route: str | None
    logit_offset: float | None
    """None: the runtime did not say (then the offset is not compared)."""


@dataclass(frozen=True)
class Plan:
    """What one tick has to do to make MLServer serve the desired state."""

    load: list[str] = field(default_factory=list)
    """Models to load, or reload (MLServer swaps a loaded model without a gap)."""
    unload: list[str] = field(default_factory=list)
    """Loaded models whose alias is gone."""

    @property
    def empty(self) -> bool:
        """Whether MLServer already serves the desired state."""
        return not self.load and not self.unload


def plan(desired: Sequence[DesiredModel], served: Mapping[str, ServedState]) -> Plan:
    """Return the loads and unloads that take `served` to `desired` (nothing when they agree)."""
    load = [each.model.name for each in desired if _differs(each, served.get(each.model.name))]
    wanted = {each.model.name for each in desired}
    return Plan(load=load, unload=sorted(set(served) - wanted))


def _differs(desired: DesiredModel, served: ServedState | None) -> bool:
    if served is None or served.version != desired.version or served.route != desired.model.route:
        return True
    if served.logit_offset is None:
        return False
    return not math.isclose(
        served.logit_offset, desired.served_offset, rel_tol=0.0, abs_tol=OFFSET_TOLERANCE
    )


def served_state(serving: ServingClient) -> dict[str, ServedState]:
    """Return what each ready model of an MLServer serves."""
    state = {}
    for model in serving.repository_index():
        if model.state != "READY":
            continue
        metadata = serving.model_metadata(model.name)
        versions = metadata.get("versions") or []
        parameters = metadata.get("parameters") or {}
        offset = parameters.get("logit_offset")
        state[model.name] = ServedState(
            version=str(versions[0]) if versions else None,
            route=parameters.get("route"),
            logit_offset=None if offset is None else float(offset),
        )
    return state


@dataclass(frozen=True)
class Tick:
    """What one reconciliation found and did."""

    desired: dict[str, str]
    """MLServer model name -> registry version it should serve."""
    loaded: list[str]
    unloaded: list[str]
    served: dict[str, ServedState]
    """What MLServer serves after the tick."""


def reconcile(
    root: Path,
    serving: ServingClient,
    registry: Registry,
    slot: Slot = "all",
    *,
    rewrite: bool = False,
) -> Tick:
    """Make one MLServer serve the registry's desired state; a no-op when it already does.

    `rewrite`: write the repository even if nothing is to be loaded (a reconciler's first tick,
    so that the files a restarted MLServer reads are the registry's too).
    With no champion alias (none passed the gates yet, or it was removed) the `all` slot
    serves nothing: every model is unloaded, and the app says no model serves. Raises
    LookupError when the `challenger` slot has no challenger alias (MLServer keeps serving),
    RegistryError or httpx errors when MLflow or MLServer cannot be reached, ServingError
    when a version fails to load (the old one keeps answering).
    """
    desired = registry_desired_models(registry, slot)
    served = served_state(serving)
    todo = plan(desired, served)
    if todo.empty and not rewrite:
        return Tick(_versions(desired), [], [], served)
    # Files first: the runtime reads its options (the offset) from them on load.
    write_desired_repository(root, desired)
    for name in todo.unload:
        serving.unload_model(name)
    for each in reload_models(serving, todo.load):
        logger.info(
            "%s: version %s -> %s", each.model, each.previous_version or "(none)", each.version
        )
    for name in todo.unload:
        logger.info("%s: unloaded (its alias is gone)", name)
    after = served_state(serving) if not todo.empty else served
    return Tick(_versions(desired), todo.load, todo.unload, after)


def wait_reconciled(
    serving: ServingClient,
    registry: Registry,
    slot: Slot = "all",
    *,
    timeout: float = 120.0,
    interval: float = 0.2,
) -> dict[str, ServedState]:
    """Wait until an MLServer serves the registry's desired state, as a rollout status does.

    For a caller that must not score with what a release replaced (the replay's next window).
    Returns what it serves; raises TimeoutError naming both sides after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        desired = registry_desired_models(registry, slot)
        served = served_state(serving)
        if plan(desired, served).empty:
            return served
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"after {timeout:.0f} s MLServer serves {served}, not the registry's "
                f"{_versions(desired)} (with their offsets): its reconciler's log says why"
            )
        time.sleep(interval)


def _versions(desired: Sequence[DesiredModel]) -> dict[str, str]:
    return {each.model.name: each.version for each in desired}


@dataclass(frozen=True)
class ReconcilerConfig:
    """Where one reconciler looks and how often (the registry is the caller's, opened)."""

    repository: Path
    """The local MLServer's model repository (written by `telescore serve start` or the
    container's entry point: the server settings in it are kept)."""
    serving_url: str
    """The local MLServer's V2 REST URL: this replica's, never a load-balanced Service."""
    slot: Slot = "all"
    interval: float = 2.0
    """Seconds between ticks (`ServingSettings.reconcile_interval`)."""
    status_file: Path | None = None
    """Rewritten after every tick: when, what is desired and served, the last error."""
    load_timeout: float = 120.0
    """Seconds a (re)load through the repository API may take."""
    control_token: str | None = None
    """The bearer token the local MLServer's repository API requires."""


def run(
    config: ReconcilerConfig,
    registry: Registry,
    stop: threading.Event,
    wake: threading.Event | None = None,
    on_tick: Callable[[Tick | None, str | None], None] | None = None,
) -> None:
    """Reconcile every `config.interval` seconds (or when `wake` is set) until `stop` is set."""
    wake = wake or threading.Event()
    rewrite, last_error = True, None
    logger.info(
        "reconciling %s (slot %s) with %s every %.1f s",
        config.serving_url,
        config.slot,
        registry.model_name,
        config.interval,
    )
    # This replica's own MLServer, never the context's `serving_url` (which may balance).
    with ServingClient(
        config.serving_url, timeout=config.load_timeout, control_token=config.control_token
    ) as serving:
        while not stop.is_set():
            wake.clear()
            tick, error = _tick(config, serving, registry, rewrite=rewrite)
            rewrite = rewrite and tick is None
            if error != last_error:
                # Once per new error, not every tick: "no challenger alias" may last for days.
                if error is not None:
                    logger.warning(
                        "not reconciled, keeps serving what is loaded (retried every %.1f s): %s",
                        config.interval,
                        error,
                    )
                else:
                    logger.info("reconciled again")
                last_error = error
            _write_status(config.status_file, tick, error)
            if on_tick is not None:
                on_tick(tick, error)
            wake.wait(config.interval)


def _tick(
    config: ReconcilerConfig, serving: ServingClient, registry: Registry, *, rewrite: bool
) -> tuple[Tick | None, str | None]:
    if not serving.live():
        return None, "MLServer is not up (yet)"
    try:
        return reconcile(config.repository, serving, registry, config.slot, rewrite=rewrite), None
    except Exception as error:  # noqa: BLE001 - whatever failed, MLServer keeps serving; retry
        return None, f"{type(error).__name__}: {error}"


def _write_status(path: Path | None, tick: Tick | None, error: str | None) -> None:
    if path is None:
        return
    status = {
        "pid": os.getpid(),
        "at": time.time(),
        "error": error,
        "desired": tick.desired if tick else None,
        "served": {name: asdict(each) for name, each in tick.served.items()} if tick else None,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(status, indent=2) + "\n")
    temporary.replace(path)


def run_until_signalled(config: ReconcilerConfig, registry: Registry) -> None:
    """Run in the foreground: SIGTERM or SIGINT stop it, SIGUSR1 makes it look at once."""
    stop, wake = threading.Event(), threading.Event()

    def on_stop(_signal: int, _frame: FrameType | None) -> None:
        stop.set()
        wake.set()

    def on_wake(_signal: int, _frame: FrameType | None) -> None:
        wake.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_wake)
    # A tick must not hang on an unreachable registry for MLflow's default minutes of retries:
    # the next tick retries anyway.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    run(config, registry, stop, wake)
