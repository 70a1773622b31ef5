"""Two MLServer replicas, each with its reconciler, follow the registry without being told.

Each replica is a real MLServer process on its own ports and model repository, with a real
`telescore serve reconcile` process next to it. The control plane only moves aliases and tags
(as the promotion, the rollback and the monitor's recalibration do); nothing reloads a replica.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mlflow import MlflowClient

from telescore.io.context import Context
from telescore.io.registry import CHALLENGER, CHAMPION, PREVIOUS, Registry, RegistryError
from telescore.io.serving_client import ServingClient
from telescore.jobs.model_repository import (
    CHALLENGER_MODEL,
    CHAMPION_MODEL,
    RECALIBRATED_OFFSET_TAG,
    LogitOffset,
    ServerOptions,
    write_registry_repository,
)
from telescore.jobs.reconciler import reconcile
from telescore.jobs.releases import rollback_to_previous
from telescore.jobs.serving import serve_logit_offset
from telescore.services.mlserver import mlserver_process, reconciler_process
from telescore.services.processes import ServiceProcess, free_port, wait_until
from telescore.serving.options import RuntimeOptions
from telescore.settings import (
    MlflowSettings,
    MongoSettings,
    ProjectSettings,
    ServingSettings,
    Settings,
)

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from tests.integration.serving_fixtures import RegisteredVersions

pytestmark = pytest.mark.integration

CONVERGENCE = 15.0
"""What the reconcilers promise: a release reaches every replica within this."""
MARGIN = 45.0
"""Extra wait on a loaded test machine (two cores shared with other test sessions): a broken
reconciler never converges, a slow one converges late, and waiting costs nothing if quick."""
REPLICAS = 2


@dataclass(frozen=True)
class Replica:
    """One MLServer and its reconciler."""

    name: str
    url: str
    repository: Path
    mlserver: ServiceProcess
    reconciler: ServiceProcess
    control_token: str
    """What its model repository API requires (its reconciler has it)."""


@dataclass(frozen=True)
class Replicas:
    """The replicas and the registered model they serve."""

    model_name: str
    champion: str
    challenger: str
    replicas: list[Replica]
    tracking_uri: str


@pytest.fixture(scope="module")
def replicas(
    services_dir: Path,
    mlflow_tracking_uri: str,
    registered_versions: RegisteredVersions,
) -> Iterator[Replicas]:
    """Two replicas serving a registered model of their own (copies of the session's versions)."""
    client = MlflowClient(mlflow_tracking_uri)
    name = f"telemarketing-replicas-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    champion, challenger = (
        _copy_version(client, registered_versions.name, version, name)
        for version in (registered_versions.champion, registered_versions.challenger)
    )
    client.set_registered_model_alias(name, CHAMPION, champion)
    client.set_registered_model_alias(name, CHALLENGER, challenger)
    started: list[Replica] = []
    with contextlib.ExitStack() as stack:
        for number in range(REPLICAS):
            replica = _replica(services_dir / f"replica-{number}", mlflow_tracking_uri, name)
            stack.callback(replica.mlserver.stop)
            replica.mlserver.launch()
            started.append(replica)
        for replica in started:
            replica.mlserver.wait_healthy()
            stack.callback(replica.reconciler.stop)
            replica.reconciler.start()
        yield Replicas(name, champion, challenger, started, mlflow_tracking_uri)


def _copy_version(client: MlflowClient, source_model: str, version: str, name: str) -> str:
    # The same model under another name: what it scores does not matter, only which it is.
    copied = client.create_model_version(name, source=f"models:/{source_model}/{version}")
    return str(copied.version)


def _replica(root: Path, tracking_uri: str, model_name: str) -> Replica:
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    repository = root / "mlserver"
    write_registry_repository(
        repository,
        Registry(tracking_uri, model_name, "reconciler-tests"),
        ServerOptions(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port),
        RuntimeOptions(prediction_log=False),
    )
    url = f"http://127.0.0.1:{http_port}"
    settings_env = {
        "TELESCORE_MLFLOW_TRACKING_URI": tracking_uri,
        "TELESCORE_MLFLOW_MODEL_NAME": model_name,
        # No developer's .env: the named file does not exist.
        "TELESCORE_ENV_FILE": str(root / "no.env"),
    }
    control_token = secrets.token_urlsafe(32)
    mlserver = mlserver_process(
        root,
        repository,
        http_port,
        grpc_port,
        metrics_port,
        tracking_uri,
        control_token=control_token,
        ready_models=[CHAMPION_MODEL, CHALLENGER_MODEL],
        env=settings_env,
    )
    reconciler = reconciler_process(
        root,
        repository,
        url,
        root / "run" / "reconciler.json",
        control_token=control_token,
        env=settings_env,
    )
    return Replica(root.name, url, repository, mlserver, reconciler, control_token)


def _control_plane(replicas: Replicas, mongodb_uri: str, state_dir: Path) -> Context:
    """The control plane's context: it knows the registry, and no MLServer at all."""
    settings = Settings(
        project=ProjectSettings(state_dir=state_dir),
        mongodb=MongoSettings(uri=mongodb_uri, database="reconciler_tests"),
        mlflow=MlflowSettings(tracking_uri=replicas.tracking_uri, model_name=replicas.model_name),
        # Nothing reloads a replica: correctness must come from the reconcilers alone.
        serving=ServingSettings(reload_on_release=False, http_port=free_port()),
    )
    return Context(settings)


def _served(replica: Replica) -> dict[str, tuple[str | None, float | None]]:
    """Model name -> (version, log-odds offset) one replica serves now."""
    with ServingClient(replica.url, timeout=5.0, control_token=replica.control_token) as client:
        served = {}
        for model in client.repository_index():
            if model.state == "READY":
                metadata = client.model_metadata(model.name)
                offset = (metadata.get("parameters") or {}).get("logit_offset")
                served[model.name] = (
                    str((metadata.get("versions") or [None])[0]),
                    None if offset is None else float(offset),
                )
        return served


def _wait_for_all(
    replicas: Replicas, wanted: dict[str, tuple[str, float]], what: str
) -> dict[str, dict[str, tuple[str | None, float | None]]]:
    """Poll every replica until each serves `wanted` exactly; fail naming what each serves."""
    last: dict[str, dict[str, tuple[str | None, float | None]]] = {}

    def converged() -> bool:
        for replica in replicas.replicas:
            last[replica.name] = _served(replica)
        return all(_agrees(served, wanted) for served in last.values())

    try:
        wait_until(converged, CONVERGENCE + MARGIN, what=what, interval=0.25)
    except TimeoutError:
        pytest.fail(f"{what}: the replicas serve {last}, not {wanted}")
    return last


def _agrees(
    served: dict[str, tuple[str | None, float | None]], wanted: dict[str, tuple[str, float]]
) -> bool:
    return set(served) == set(wanted) and all(
        served[name][0] == version
        and served[name][1] is not None
        and math.isclose(served[name][1], offset, abs_tol=1e-9)  # type: ignore[arg-type]
        for name, (version, offset) in wanted.items()
    )


@pytest.fixture
def initial_state(replicas: Replicas) -> Iterator[Replicas]:
    """Start from champion + challenger served everywhere; put them back afterwards."""
    registry = MlflowClient(replicas.tracking_uri)

    def restore() -> None:
        registry.set_registered_model_alias(replicas.model_name, CHAMPION, replicas.champion)
        registry.set_registered_model_alias(replicas.model_name, CHALLENGER, replicas.challenger)
        for version in (replicas.champion, replicas.challenger):
            with contextlib.suppress(Exception):
                registry.delete_model_version_tag(
                    replicas.model_name, version, RECALIBRATED_OFFSET_TAG
                )
        _wait_for_all(
            replicas,
            {
                CHAMPION_MODEL: (replicas.champion, 0.0),
                CHALLENGER_MODEL: (replicas.challenger, 0.0),
            },
            "the initial state",
        )

    restore()
    yield replicas
    restore()


def test_a_promotion_and_its_rollback_reach_every_replica(
    initial_state: Replicas, mongodb: ServiceProcess, tmp_path: Path
) -> None:
    replicas = initial_state
    old, new = replicas.champion, replicas.challenger
    registry = Registry(replicas.tracking_uri, replicas.model_name, "reconciler-tests")

    # when the challenger is promoted as the promotion job does it: aliases only
    registry.set_alias(PREVIOUS, old)
    registry.set_alias(CHAMPION, new)
    registry.delete_alias(CHALLENGER)

    # then every replica serves the new champion, and no challenger any more
    _wait_for_all(replicas, {CHAMPION_MODEL: (new, 0.0)}, "the promoted champion")

    # when it is rolled back (`telescore rollback`), by a control plane that knows no MLServer
    with _control_plane(replicas, mongodb.uri, tmp_path) as ctx:  # type: ignore[attr-defined]
        assert rollback_to_previous(ctx, "tests") == (new, old), "the rollback's versions"

    # then every replica serves the previous champion again
    _wait_for_all(replicas, {CHAMPION_MODEL: (old, 0.0)}, "the rolled-back champion")


def test_a_refitted_offset_reaches_every_replica(
    initial_state: Replicas,
    registered_versions: RegisteredVersions,
    mongodb: ServiceProcess,
    tmp_path: Path,
) -> None:
    replicas = initial_state
    champion = replicas.champion
    rows = registered_versions.features.head(5)
    with ServingClient(replicas.replicas[0].url) as client:
        own = client.infer(rows).scores

    # when the monitor's recalibration serves an offset of log(3) for the champion version
    with _control_plane(replicas, mongodb.uri, tmp_path) as ctx:  # type: ignore[attr-defined]
        published = serve_logit_offset(ctx, LogitOffset(math.log(3.0), champion))

    # then nothing was reloaded by it, yet every replica serves it: tripled odds, same version
    assert published is None, "the control plane must not have reloaded anything itself"
    _wait_for_all(
        replicas,
        {CHAMPION_MODEL: (champion, math.log(3.0)), CHALLENGER_MODEL: (replicas.challenger, 0.0)},
        "the refitted offset",
    )
    expected = [p * 3.0 / (p * 3.0 + 1.0 - p) for p in own]
    for replica in replicas.replicas:
        with ServingClient(replica.url) as client:
            scored = client.infer(rows)
        assert scored.model_version == champion, f"{replica.name} serves another version"
        assert scored.scores == pytest.approx(expected, rel=1e-9), f"{replica.name}'s scores"


def test_an_unreachable_registry_leaves_the_replica_serving_what_it_has(
    initial_state: Replicas, monkeypatch: pytest.MonkeyPatch, mlflow_uris_restored: None
) -> None:
    replicas = initial_state
    replica = replicas.replicas[0]
    before = _served(replica)
    # given a registry that does not answer (no retries: the reconciler's next tick retries)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = Registry(nowhere, replicas.model_name, "reconciler-tests")

    # when a reconciliation runs against it, then it fails and changes nothing
    with (
        ServingClient(replica.url, timeout=30.0, control_token=replica.control_token) as serving,
        pytest.raises(RegistryError),
    ):
        reconcile(replica.repository, serving, unreachable)
    assert _served(replica) == before, "a replica must keep serving what it has loaded"
