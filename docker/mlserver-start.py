#!/usr/bin/env python3
"""Start MLServer in the foreground on the registry's aliases, as `telescore serve start` does.

`telescore serve start` writes the model repository (jobs.model_repository) and starts
MLServer as a background process; a container needs MLServer as its main process instead.
This writes the same repository, waiting until the registry answers (and, for the challenger
slot, until it has a challenger), then replaces itself with MLServer
(`telescore.serving.server`). A fresh platform has no champion until a training run passes its
gates: MLServer then starts with no model, and the reconciler loads the first champion as soon
as its alias appears.
From then on the reconciler next to it (`telescore serve reconcile`, a sidecar container on the
same repository volume) keeps it serving the registry's aliases and offsets.

TELESCORE_MLSERVER_SLOT chooses what this server answers for:
  all         `telemarketing` (@champion) and `telemarketing-challenger` (@challenger, when it
              exists): what the app's router calls, and the only server of docker-compose;
  challenger  the @challenger version under the champion's name `telemarketing`, route
              `challenger`: the Kubernetes canary Deployment that the ingress sends a share of
              direct clients' requests to on the same path.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from telescore.io.registry import Registry
from telescore.jobs.model_repository import ServerOptions, write_registry_repository
from telescore.serving.options import RuntimeOptions
from telescore.settings import load_settings

RETRY_SECONDS = 15.0


def write_repository(root: Path, slot: str) -> str:
    """Write the repository for `slot` and return the registry URI it read.

    Raises LookupError while the challenger slot's alias does not exist, RegistryError while
    MLflow does not answer.
    """
    settings = load_settings()
    registry = Registry.from_settings(settings.mlflow, settings.project.host)
    uri = registry.tracking_uri
    serving = settings.serving
    server = ServerOptions(
        host="0.0.0.0",  # noqa: S104 - a container's port is reached through its network
        http_port=serving.http_port,
        grpc_port=serving.grpc_port,
        metrics_port=serving.metrics_port,
    )
    runtime = RuntimeOptions(prediction_log=serving.prediction_log)
    write_registry_repository(
        root, registry, server, runtime, slot="challenger" if slot == "challenger" else "all"
    )
    return uri


def main() -> None:
    """Wait for the alias, write the repository, exec MLServer on it."""
    slot = os.environ.get("TELESCORE_MLSERVER_SLOT", "all")
    if slot not in {"all", "challenger"}:
        sys.exit(f"TELESCORE_MLSERVER_SLOT must be 'all' or 'challenger', not {slot!r}")
    root = Path(os.environ.get("TELESCORE_STATE_DIR", "/var/lib/telescore")) / "mlserver"
    while True:
        try:
            uri = write_repository(root, slot)
            break
        except Exception as error:  # noqa: BLE001 - MLflow not up yet, or no challenger: wait
            print(f"not serving yet ({error}); retrying in {RETRY_SECONDS:.0f} s", flush=True)
            time.sleep(RETRY_SECONDS)
    # The runtime resolves the alias through MLflow's own variables: the registry too, as
    # services.mlserver sets them for the embedded MLServer.
    os.environ["MLFLOW_TRACKING_URI"] = os.environ["MLFLOW_REGISTRY_URI"] = uri
    # `mlserver start`, guarded: the repository API needs TELESCORE_SERVING_CONTROL_TOKEN.
    os.execv(sys.executable, [sys.executable, "-m", "telescore.serving.server", str(root)])  # noqa: S606


if __name__ == "__main__":
    main()
