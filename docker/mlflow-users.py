#!/usr/bin/env python3
"""Create MLflow's users for the platform's services, and their permissions, then exit.

Usage: telescore-mlflow-users.  Run once per deployment, after MLflow is up (compose: the
one-shot service `mlflow-users`; Kubernetes: the Job `mlflow-users`). Signed in as MLflow's
administrator (`admin`, MLFLOW_ADMIN_PASSWORD), it creates or updates:
  telescore-writer  MLFLOW_WRITER_PASSWORD: the flow runs (training, monitor, promotion); EDIT
                    on the experiment, MANAGE on the registered model (a promotion deletes
                    the `challenger` alias), so it may move `champion`;
  telescore-reader  MLFLOW_READER_PASSWORD: MLServer, its reconciler, the web app; READ only.
The registered model and the experiment are TELESCORE_MLFLOW_MODEL_NAME and
TELESCORE_MLFLOW_EXPERIMENT (telescore's defaults otherwise), at MLFLOW_TRACKING_URI. It waits
for MLflow's /health for TELESCORE_MLFLOW_WAIT_SECONDS (300) first. Idempotent: a second run
sets the passwords given now. Refuses (exit 1) a password missing, short or a placeholder.
"""

import os
import sys

from pydantic import SecretStr

from telescore.services.mlflow_auth import MlflowUser, provision
from telescore.services.processes import http_ok, wait_until
from telescore.settings import (
    MLFLOW_ADMIN,
    MLFLOW_READER,
    MLFLOW_WRITER,
    MlflowSettings,
    ProductionSecret,
    refuse_weak_secrets,
)

PASSWORDS = {
    MLFLOW_ADMIN: "MLFLOW_ADMIN_PASSWORD",
    MLFLOW_WRITER: "MLFLOW_WRITER_PASSWORD",
    MLFLOW_READER: "MLFLOW_READER_PASSWORD",
}


def main() -> None:
    """Check the passwords, wait for MLflow, create the users and grant the writer its rights."""
    try:
        refuse_weak_secrets(
            ProductionSecret(name, SecretStr(os.environ.get(name, "")))
            for name in PASSWORDS.values()
        )
    except ValueError as refused:
        sys.exit(f"refused: {refused}")
    users = {user: MlflowUser(user, os.environ[name]) for user, name in PASSWORDS.items()}
    # Not the environment's own MLflow user (this job has none): only the URI and the names.
    settings = MlflowSettings(username=None, password=None)
    url = settings.resolved_tracking_uri()
    wait = float(os.environ.get("TELESCORE_MLFLOW_WAIT_SECONDS", "300"))
    wait_until(http_ok(f"{url}/health"), wait, what=f"MLflow at {url}", interval=2.0)
    provision(
        url,
        users[MLFLOW_ADMIN],
        users[MLFLOW_WRITER],
        users[MLFLOW_READER],
        settings.model_name,
        settings.experiment,
    )
    print(f"MLflow users {MLFLOW_WRITER} (MANAGE on {settings.model_name}) and {MLFLOW_READER} set")


if __name__ == "__main__":
    main()
