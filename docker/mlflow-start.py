#!/usr/bin/env python3
"""Start MLflow's tracking server with its basic-auth app, as compose and Kubernetes run it.

Usage: telescore-mlflow [mlflow server option]...  It writes the basic-auth app's config (its
users' database, MLFLOW_AUTH_DATABASE_URI, in a file only this user may read), then replaces
itself with `mlflow server --app-name basic-auth` and the options given. Anonymous requests are
then refused, and the administrator is created from MLFLOW_AUTH_ADMIN_PASSWORD on the first
start; `telescore-mlflow-users` (docker/mlflow-users.py) creates the services' users.

It refuses to start (exit 1), naming each, while a secret it is given is missing, short or a
placeholder: the same rules as the telescore services' own settings in production.
"""

import os
import sys
import tempfile
from pathlib import Path

from pydantic import SecretStr

from telescore.services.embedded import MLFLOW_ORIGIN_CHECKS
from telescore.services.mlflow_auth import write_auth_config
from telescore.settings import MIN_SECRET_LENGTH, ProductionSecret, refuse_weak_secrets

SECRETS = {
    "MLFLOW_AUTH_ADMIN_PASSWORD": {},
    "MLFLOW_FLASK_SERVER_SECRET_KEY": {"min_length": MIN_SECRET_LENGTH},
    "MLFLOW_BACKEND_STORE_URI": {"in_uri": True},
    "MLFLOW_AUTH_DATABASE_URI": {"in_uri": True},
    "AWS_SECRET_ACCESS_KEY": {},
}
"""What the server reads from the environment (the Secret, .env), and how each is checked."""


def main(options: list[str]) -> None:
    """Check the secrets, write the auth config, exec `mlflow server --app-name basic-auth`."""
    try:
        refuse_weak_secrets(
            ProductionSecret(name, SecretStr(os.environ.get(name, "")), **rules)
            for name, rules in SECRETS.items()
            # A SQLite store (a single-host try-out) has no password to check.
            if not os.environ.get(name, "").startswith("sqlite:")
        )
    except ValueError as refused:
        sys.exit(f"refused: {refused}")
    folder = Path(tempfile.mkdtemp(prefix="mlflow-auth-"))  # 0700: this user's only
    config = write_auth_config(folder / "basic_auth.ini", os.environ["MLFLOW_AUTH_DATABASE_URI"])
    # MLflow's host and origin checks stay on whatever else the environment says.
    os.environ.update(MLFLOW_ORIGIN_CHECKS | {"MLFLOW_AUTH_CONFIG_PATH": str(config)})
    command = ["mlflow", "server", "--app-name", "basic-auth", *options]
    os.execvp(command[0], command)  # noqa: S606 - the image's mlflow, options from compose/k8s


if __name__ == "__main__":
    main(sys.argv[1:])
