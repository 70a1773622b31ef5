"""Write the MLServer model repository: server settings and one folder per served alias.

    <root>/settings.json                               server: ports, workers, performance
    <root>/telemarketing/model-settings.json             models:/telemarketing@champion
    <root>/telemarketing-challenger/model-settings.json  models:/telemarketing@challenger

The challenger folder exists only while the registry has a `challenger` alias: MLServer refuses
to start when a model at start-up cannot be loaded. With no `champion` alias (no model has passed
the gates yet, or the champion was removed) the repository holds no model: MLServer runs empty,
and its reconciler loads the first champion as soon as the alias appears. A `challenger` slot
(the Kubernetes canary) serves @challenger alone, under the champion's name.

    <root>/runtime-options.json                        what a new model folder gets (journal,
                                                       shipping, batch limit), kept while empty

The champion's folder may carry a log-odds offset (`logit_offset`) and the version it was fitted
for. The registry holds the one to serve, per version: the monitor's latest refit (version tag
`logit_offset_recalibrated`), else the one fitted at registration (tag `logit_offset`). Every
replica's reconciler (`jobs.reconciler`) writes it here, so that all replicas serve the same
one; an offset written into a folder by hand (`write_logit_offset`) lasts until the next
rewrite. The runtime also ignores an offset fitted for another version than the one it loads.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from telescore.core.predictions import Route
from telescore.core.scoring import LOGIT_OFFSET_TAG
from telescore.io.registry import ModelVersionRef, Registry
from telescore.serving.options import RUNTIME, RuntimeOptions

SERVER_SETTINGS: Final = "settings.json"
RUNTIME_OPTIONS: Final = "runtime-options.json"
"""The runtime options of the repository's models, kept at its root: a repository with no
model (no champion yet) still knows them when the first one is written."""
MODEL_SETTINGS: Final = "model-settings.json"
CHAMPION_MODEL: Final = "telemarketing"
"""MLServer name of the model serving the `champion` alias."""
CHALLENGER_MODEL: Final = "telemarketing-challenger"
"""MLServer name of the model serving the `challenger` alias."""
ALIAS_MODELS: Final[Mapping[str, str]] = {
    "champion": CHAMPION_MODEL,
    "challenger": CHALLENGER_MODEL,
}
"""Registry alias -> MLServer model name, in the order they are written."""
RECALIBRATED_OFFSET_TAG: Final = f"{LOGIT_OFFSET_TAG}_recalibrated"
"""Version tag: the log-odds offset the monitor refitted last for this version, to be served.

Kept apart from `logit_offset`, the offset fitted at registration (the replay reports it)."""
Slot = Literal["all", "challenger"]
"""What one MLServer answers for: `all` (champion, and challenger while it exists) or
`challenger` (@challenger alone, under the champion's name: the Kubernetes canary)."""


class ServerOptions(BaseModel):
    """MLServer server settings; the performance levers are fields with measured defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    """Address the REST, gRPC and metrics servers bind to."""
    http_port: int = Field(default=8080, gt=0, lt=65536)
    """V2 REST port."""
    grpc_port: int = Field(default=8081, gt=0, lt=65536)
    """V2 gRPC port."""
    metrics_port: int = Field(default=8082, gt=0, lt=65536)
    """Prometheus metrics port."""
    parallel_workers: int = Field(default=0, ge=0)
    """Inference worker processes; 0 scores in the server process itself.

    With the NumPy scorer a prediction costs tens of microseconds, far less than the
    inter-process hop a worker adds (measured with wrk on two cores: 0 workers gives 1.4-2.2x
    the throughput of 1).
    """
    load_models_at_startup: bool = True
    """Load every model folder when the server starts (else only through the repository API)."""
    access_log: bool = False
    """Per-request access logs (MLServer's `debug`): a log line per request costs latency."""
    gzip: bool = False
    """Gzip responses: a few hundred bytes of scores gain nothing from compression."""
    metrics: bool = True
    """Prometheus request metrics on `metrics_port` (a small per-request cost)."""


class ServedModel(BaseModel):
    """One model folder: which registry alias it serves and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    """MLServer model name (the folder name and the `/v2/models/<name>` path)."""
    uri: str
    """Registry URI the runtime resolves on every (re)load, e.g. models:/telemarketing@champion."""
    route: Route
    """Deployment slot reported with each prediction."""


def served_models(
    aliases: Collection[str], registered_model: str = CHAMPION_MODEL
) -> list[ServedModel]:
    """Return the models to serve for the aliases that exist (champion first)."""
    return [
        ServedModel(
            name=served_name,
            uri=f"models:/{registered_model}@{alias}",
            route="champion" if alias == "champion" else "challenger",
        )
        for alias, served_name in ALIAS_MODELS.items()
        if alias in aliases
    ]


@dataclass(frozen=True)
class LogitOffset:
    """A log-odds offset served with one model, and the registry version it was fitted for."""

    offset: float
    version: str


@dataclass(frozen=True)
class DesiredModel:
    """One model as the registry says it should be served now."""

    model: ServedModel
    version: str
    """Registry version its alias points at."""
    offset: LogitOffset | None
    """Log-odds offset to write in its folder."""

    @property
    def served_offset(self) -> float:
        """The offset the runtime applies once it loads `version` (0 if fitted for another)."""
        return self.offset.offset if self.offset and self.offset.version == self.version else 0.0


def registry_desired_models(registry: Registry, slot: Slot = "all") -> list[DesiredModel]:
    """Return what a server of `slot` should serve per the registry's aliases now.

    Raises RegistryError when the registry cannot say (nothing is then taken for gone),
    LookupError when the `challenger` slot has no challenger alias. No champion: nothing.
    """
    versions = registry.alias_versions(ALIAS_MODELS)
    return desired_models(versions, slot, registry.model_name)


def desired_models(
    versions: Mapping[str, ModelVersionRef],
    slot: Slot = "all",
    registered_model: str = CHAMPION_MODEL,
) -> list[DesiredModel]:
    """Return what a server of `slot` should serve for these alias versions (champion first).

    Only the registry decides: every replica that reads it gets the same answer. With no
    champion the `all` slot serves nothing, not even a challenger: the app shows only the
    champion's answers, and a champion whose alias was removed must stop answering.
    Raises LookupError when the `challenger` slot has no challenger alias.
    """
    if slot == "challenger":
        if "challenger" not in versions:
            raise LookupError(f"registered model {registered_model!r} has no 'challenger' alias")
        canary = ServedModel(
            name=CHAMPION_MODEL, uri=f"models:/{registered_model}@challenger", route="challenger"
        )
        # Judged on its own scores, as the challenger is in the `all` slot.
        return [DesiredModel(canary, versions["challenger"].version, None)]
    if "champion" not in versions:
        return []
    models = served_models(set(versions), registered_model)
    return [
        DesiredModel(
            model,
            versions[model.route].version,
            # The challenger is judged on its own scores.
            champion_offset(versions["champion"]) if model.route == "champion" else None,
        )
        for model in models
    ]


def write_model_repository(
    root: Path,
    models: Sequence[ServedModel],
    server: ServerOptions | None = None,
    runtime: RuntimeOptions | None = None,
    offsets: Mapping[str, LogitOffset | None] | None = None,
) -> Path:
    """Write one model-settings.json per model and remove stale model folders.

    With no `server` (or `runtime`), the settings already written are kept, so a running
    server's ports and options stay as they are; the defaults apply only to a new repository.
    A model's log-odds offset is its own: `offsets` sets (or, None, removes) it per model name;
    a model missing from `offsets` keeps the one its folder holds.
    """
    runtime = runtime or existing_runtime_options(root) or RuntimeOptions()
    offsets = offsets or {}
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    if server is not None or not (root / SERVER_SETTINGS).exists():
        _write_json(root / SERVER_SETTINGS, server_settings(root, server or ServerOptions()))
    _write_json(root / RUNTIME_OPTIONS, _shared_options(runtime).model_dump(mode="json"))
    names = {model.name for model in models}
    for folder in root.iterdir():
        # A folder left from an alias that is gone would make the next start fail to load it.
        if folder.is_dir() and (folder / MODEL_SETTINGS).exists() and folder.name not in names:
            shutil.rmtree(folder)
    for model in models:
        offset = offsets[model.name] if model.name in offsets else served_offset(root, model.name)
        folder = root / model.name
        folder.mkdir(exist_ok=True)
        _write_json(folder / MODEL_SETTINGS, model_settings(model, _with_offset(runtime, offset)))
    return root


def write_registry_repository(
    root: Path,
    registry: Registry,
    server: ServerOptions | None = None,
    runtime: RuntimeOptions | None = None,
    slot: Slot = "all",
) -> list[ServedModel]:
    """Write the repository for the aliases the registry has now; return the models written."""
    desired = registry_desired_models(registry, slot)
    write_desired_repository(root, desired, server, runtime)
    return [each.model for each in desired]


def write_desired_repository(
    root: Path,
    desired: Sequence[DesiredModel],
    server: ServerOptions | None = None,
    runtime: RuntimeOptions | None = None,
) -> Path:
    """Write the repository for these models and offsets (see `write_model_repository`)."""
    offsets = {each.model.name: each.offset for each in desired}
    return write_model_repository(root, [each.model for each in desired], server, runtime, offsets)


def champion_offset(champion: ModelVersionRef) -> LogitOffset | None:
    """Return the offset to serve the champion version with.

    The monitor's latest refit for this version (its `logit_offset_recalibrated` tag), else
    the one fitted at its registration (its `logit_offset` tag), else none. Always this
    version's own: an offset fitted for the previous champion says nothing about this one.
    """
    version, tags = champion.version, champion.tags
    refit = _finite_offset(tags.get(RECALIBRATED_OFFSET_TAG), version)
    return refit if refit is not None else _finite_offset(tags.get(LOGIT_OFFSET_TAG), version)


def _finite_offset(tag: str | None, version: str) -> LogitOffset | None:
    if tag is None:
        return None
    try:
        offset = float(tag)
    except ValueError:
        return None
    return LogitOffset(offset, version) if math.isfinite(offset) else None


def served_offset(root: Path, model_name: str) -> LogitOffset | None:
    """Return the log-odds offset a model's folder holds, if any."""
    path = root / model_name / MODEL_SETTINGS
    if not path.exists():
        return None
    extra = json.loads(path.read_text()).get("parameters", {}).get("extra") or {}
    version = extra.get("logit_offset_version")
    return None if version is None else LogitOffset(float(extra.get("logit_offset", 0.0)), version)


def write_logit_offset(root: Path, model_name: str, offset: LogitOffset) -> bool:
    """Set the log-odds offset in a model's settings; False when the model has no folder.

    Only that model's file changes, atomically: reload that model to serve it.
    """
    path = root / model_name / MODEL_SETTINGS
    if not path.exists():
        return False
    content = json.loads(path.read_text())
    extra = dict(content.get("parameters", {}).get("extra") or {})
    extra |= {"logit_offset": offset.offset, "logit_offset_version": offset.version}
    RuntimeOptions.from_extra(extra)  # refuse to write what the runtime would refuse to load
    content.setdefault("parameters", {})["extra"] = extra
    _write_json(path, content)
    return True


def existing_runtime_options(root: Path) -> RuntimeOptions | None:
    """Return the runtime options the repository was written with, if it was.

    From its `runtime-options.json`, else (a repository written before it existed) the
    champion's model-settings.json. Without the options that belong to one model: its route
    and its log-odds offset.
    """
    shared = root / RUNTIME_OPTIONS
    if shared.exists():
        return _shared_options(RuntimeOptions.from_extra(json.loads(shared.read_text())))
    path = root / CHAMPION_MODEL / MODEL_SETTINGS
    if not path.exists():
        return None
    extra = dict(json.loads(path.read_text()).get("parameters", {}).get("extra") or {})
    return _shared_options(RuntimeOptions.from_extra(extra))


def _shared_options(runtime: RuntimeOptions) -> RuntimeOptions:
    """Return `runtime` without the options set per model (route, log-odds offset)."""
    return runtime.model_copy(
        update={"route": None, "logit_offset": 0.0, "logit_offset_version": None}
    )


def server_settings(root: Path, server: ServerOptions) -> dict[str, Any]:
    """Return the content of MLServer's settings.json."""
    return {
        "server_name": "telescore",
        "host": server.host,
        "http_port": server.http_port,
        "grpc_port": server.grpc_port,
        "metrics_port": server.metrics_port,
        "metrics_endpoint": "/metrics" if server.metrics else None,
        # MLServer defaults both folders to its working directory: keep them with the repository.
        "metrics_dir": str(root / ".metrics"),
        "environments_dir": str(root / ".envs"),
        "parallel_workers": server.parallel_workers,
        "load_models_at_startup": server.load_models_at_startup,
        "model_repository_root": str(root),
        "debug": server.access_log,
        "gzip_enabled": server.gzip,
    }


def model_settings(model: ServedModel, runtime: RuntimeOptions) -> dict[str, Any]:
    """Return the content of one model's model-settings.json."""
    extra = runtime.model_dump(mode="json", exclude_defaults=True) | {"route": model.route}
    return {
        "name": model.name,
        "implementation": RUNTIME,
        # No `parameters.version`: versions are the registry's, pinned by the runtime on load;
        # an MLServer version would make a reload load a second model beside the first.
        "parameters": {"uri": model.uri, "extra": extra},
    }


def _with_offset(runtime: RuntimeOptions, offset: LogitOffset | None) -> RuntimeOptions:
    if offset is None:
        return runtime.model_copy(update={"logit_offset": 0.0, "logit_offset_version": None})
    return RuntimeOptions.from_extra(
        runtime.model_dump()
        | {"logit_offset": offset.offset, "logit_offset_version": offset.version}
    )


def _write_json(path: Path, content: Mapping[str, Any]) -> None:
    """Write JSON atomically: MLServer may read the file while a reload rewrites it."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    temporary.replace(path)
