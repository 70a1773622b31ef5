"""docker-compose.yml: the compose spec's schema, and the platform's rules (hygiene)."""

from __future__ import annotations

import re

from deploy_checks import (
    CHECK_JSONSCHEMA,
    COMPOSE_FILE,
    FIXTURES,
    MINIO_USERS_SCRIPT,
    MLFLOW_READER,
    MLFLOW_WRITER,
    MONGODB_USERS_SCRIPT,
    POSTGRES_ROLES_SCRIPT,
    POSTGRES_URI,
    PUBLISHING_SERVICES,
    REPO,
    compose_problems,
    compose_session_key_holders,
    load_compose,
    minio_user_problems,
    mlflow_user_problems,
    mlserver_network_problems,
    postgres_role_problems,
    uri_user_problems,
)

BROKEN_COMPOSE = FIXTURES / "broken-compose.yml"
# What issue 12 asks docker-compose to run (the outcomes API is the web app).
REQUIRED_SERVICES = {
    "mongodb",
    "postgres",
    "minio",
    "minio-init",
    "mlflow",
    "prefect-server",
    "prefect-worker",
    "mlserver",
    "app",
    "evidently",
}


def test_the_compose_file_follows_the_compose_spec():
    # given docker-compose.yml / when checked against the compose spec's schema
    result = CHECK_JSONSCHEMA.run("--builtin-schema", "vendor.compose-spec", COMPOSE_FILE)
    # then it is valid
    assert result.passed, f"docker-compose.yml breaks the compose spec:\n{result.output}"


def test_the_compose_schema_rejects_the_broken_file():
    # given a compose file with a key the spec does not have / when checked
    result = CHECK_JSONSCHEMA.run("--builtin-schema", "vendor.compose-spec", BROKEN_COMPOSE)
    # then the check fails on that key
    assert not result.passed, f"the broken compose file passed:\n{result.output}"
    assert "restart_policy" in result.output, f"the error does not name the key:\n{result.output}"


def test_the_compose_file_runs_the_whole_platform():
    services = set(load_compose(COMPOSE_FILE)["services"])
    assert services >= REQUIRED_SERVICES, f"missing services: {REQUIRED_SERVICES - services}"


def test_the_compose_file_keeps_the_platform_rules():
    # given docker-compose.yml / when its services are read
    problems = compose_problems(load_compose(COMPOSE_FILE), REPO)
    # then every rule holds: health checks, non-root users, ports, start order, secrets
    assert problems == [], "docker-compose.yml breaks the rules:\n" + "\n".join(problems)


def test_only_the_app_and_the_operator_uis_publish_ports():
    services = load_compose(COMPOSE_FILE)["services"]
    publishing = {name for name, service in services.items() if service.get("ports")}
    assert publishing == PUBLISHING_SERVICES, f"services publishing ports: {sorted(publishing)}"


def test_the_hygiene_check_catches_each_broken_rule():
    # given a compose file that breaks every rule / when the hygiene check reads it
    problems = "\n".join(compose_problems(load_compose(BROKEN_COMPOSE), FIXTURES))
    # then each fault is reported
    for expected in (
        "mongodb: no healthcheck",
        "mongodb: runs as root",
        "mongodb: internal service publishes port 27017:27017",
        "mongodb: port 27017:27017 not bound to ${TELESCORE_BIND:-127.0.0.1}",
        "app: port 0.0.0.0:8000:8000 not bound",
        "app: depends_on without a condition",
        "secret ${MONGO_ROOT_PASSWORD} has a default or none",
    ):
        assert expected in problems, f"the hygiene check missed {expected!r}:\n{problems}"


def test_the_platform_settings_are_production_settings():
    # given the environment the telescore services share
    services = load_compose(COMPOSE_FILE)["services"]
    for name in ("app", "prefect-worker", "mlserver"):
        environment = services[name]["environment"]
        # then they run as production, which refuses placeholder secrets and embedded MongoDB
        assert environment["TELESCORE_ENVIRONMENT"] == "production", f"{name} is not production"
        assert re.match(r"mongodb://[\w-]+:\$\{\w+:\?", environment["TELESCORE_MONGODB_URI"]), (
            f"{name} does not reach the compose MongoDB with a password required from .env"
        )
    assert services["app"]["environment"]["TELESCORE_API_SECRET_KEY"].startswith(
        "${TELESCORE_API_SECRET_KEY:?"
    ), "the app does not require TELESCORE_API_SECRET_KEY"


def test_prefect_asks_every_write_for_a_csrf_token():
    # given Prefect's server in compose / then its CSRF protection is on (its clients, the
    # worker's and the UI, fetch a token with the auth string)
    environment = load_compose(COMPOSE_FILE)["services"]["prefect-server"]["environment"]
    assert environment.get("PREFECT_SERVER_API_CSRF_PROTECTION_ENABLED") == "true", environment


def test_only_the_app_is_given_the_session_key():
    # given docker-compose.yml / when the services whose environment holds the session key
    # are listed
    holders = compose_session_key_holders(load_compose(COMPOSE_FILE))
    # then the app is the only one: MLServer and the flow runs can run a model's code
    assert holders == {"app"}, f"the session key is given to {sorted(holders)}"


def test_the_session_key_check_catches_a_service_given_it():
    # given a compose file that gives the key to MLServer too, and to the worker by env_file
    compose = {
        "services": {
            "app": {"environment": {"TELESCORE_API_SECRET_KEY": "${K:?}"}},
            "mlserver": {"environment": ["TELESCORE_API_SECRET_KEY=${K:?}"]},
            "prefect-worker": {"env_file": ".env"},
            "secrets-check": {"command": ["telescore-check-secrets", "K"]},
        }
    }
    # when checked / then both are named, the app and the one-shot check are allowed
    holders = compose_session_key_holders(compose)
    assert holders == {"app", "mlserver", "prefect-worker"}, holders


def test_the_env_example_lists_every_variable_compose_requires():
    # given the variables compose refuses to run without
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    # when .env.example is read
    example = (REPO / ".env.example").read_text()
    # then each is there to fill in (commented or not)
    missing = {name for name in required if f"{name}=" not in example}
    assert not missing, f".env.example does not mention {sorted(missing)}"


# --- issue 21: the control plane ----------------------------------------------------------

BROKEN_CONTROL_PLANE = FIXTURES / "broken-control-plane-compose.yml"
INIT_DIRECTORY = "/docker-entrypoint-initdb.d/"


def compose_mongodb_uris(compose: dict) -> dict[str, str]:
    """Each service's TELESCORE_MONGODB_URI (the services that have one)."""
    return {
        name: service["environment"]["TELESCORE_MONGODB_URI"]
        for name, service in compose["services"].items()
        if isinstance(service.get("environment"), dict)
        and "TELESCORE_MONGODB_URI" in service["environment"]
    }


def test_mlserver_is_reachable_only_by_the_app_and_the_jobs():
    # given docker-compose.yml / when the networks MLServer shares are read
    problems = mlserver_network_problems(load_compose(COMPOSE_FILE))
    # then only its clients (and the two servers it calls itself) share one, all internal
    assert problems == [], "MLServer is reachable beyond its clients:\n" + "\n".join(problems)


def test_the_network_check_catches_a_service_next_to_mlserver():
    # given a compose file where the Evidently UI and PostgreSQL share MLServer's network
    problems = "\n".join(mlserver_network_problems(load_compose(BROKEN_CONTROL_PLANE)))
    # then both are named, and so is the network that is not internal
    for expected in ("evidently shares a network", "postgres shares a network", "not internal"):
        assert expected in problems, f"the network check missed {expected!r}:\n{problems}"


def test_no_service_logs_in_to_mongodb_as_root():
    # given every service's MongoDB URI and the user MongoDB's image makes root
    compose = load_compose(COMPOSE_FILE)
    root = compose["services"]["mongodb"]["environment"]["MONGO_INITDB_ROOT_USERNAME"]
    # when each URI's user is read (a sidecar sharing a service's network namespace is part
    # of that service, as the containers of one pod are: MLServer's reconciler)
    uris = {
        str(compose["services"][name].get("network_mode", name)).removeprefix("service:"): uri
        for name, uri in compose_mongodb_uris(compose).items()
    }
    problems = uri_user_problems(uris, root, MONGODB_USERS_SCRIPT.read_text())
    # then none is root, each is one the init script creates, one user per service
    assert problems == [], "compose's MongoDB users:\n" + "\n".join(problems)


def test_each_service_logs_in_as_its_own_mongodb_user():
    # given the services that use MongoDB
    uris = compose_mongodb_uris(load_compose(COMPOSE_FILE))
    # then the app, the shipper (in MLServer, and its reconciler's pod) and the jobs differ
    users = {name: uri.split("://", 1)[1].split(":", 1)[0] for name, uri in uris.items()}
    assert users == {
        "app": "telescore-app",
        "mlserver": "telescore-shipper",
        "mlserver-reconciler": "telescore-shipper",
        "prefect-worker": "telescore-jobs",
    }, f"MongoDB users per service: {users}"


def test_the_users_check_catches_root_and_shared_users():
    # given the broken fixture: the app as root, the worker and MLServer sharing one user
    compose = load_compose(BROKEN_CONTROL_PLANE)
    problems = "\n".join(
        uri_user_problems(compose_mongodb_uris(compose), "root", '"telescore-jobs"')
    )
    # then each fault is named
    for expected in ("app: logs in to MongoDB as the root user", "shares MongoDB user"):
        assert expected in problems, f"the users check missed {expected!r}:\n{problems}"


def test_mongodb_creates_the_service_users_on_first_start():
    # given the MongoDB service / when its volumes are read
    mongodb = load_compose(COMPOSE_FILE)["services"]["mongodb"]
    mounts = [str(volume) for volume in mongodb.get("volumes", [])]
    script = MONGODB_USERS_SCRIPT.relative_to(REPO)
    # then the users script is in the image's init directory, and it gets every password
    assert any(m.startswith(f"./{script}:{INIT_DIRECTORY}") for m in mounts), mounts
    for variable in ("MONGO_APP_PASSWORD", "MONGO_SHIPPER_PASSWORD", "MONGO_JOBS_PASSWORD"):
        assert f"${{{variable}:?" in mongodb["environment"].get(variable, ""), (
            f"MongoDB's init does not get {variable}, required from .env"
        )


def test_no_password_defaults_to_a_placeholder():
    # given the compose file's text / then no variable defaults to a value (changeme or other)
    text = COMPOSE_FILE.read_text()
    defaulted = re.findall(r"\$\{(\w*(?:PASSWORD|SECRET|USER)\w*):?-[^}]*\}", text)
    assert defaulted == [], f"credentials with a default: {defaulted}"
    assert "changeme" not in text.lower(), "docker-compose.yml mentions changeme"


# --- issue 21: the stores' own users ------------------------------------------------------

# MinIO's root is for MinIO itself, its set-up and the secrets check: no other service.
MINIO_ROOT_HOLDERS = {"minio", "minio-init", "secrets-check"}
# Who signs in to MLflow as whom (docker/mlflow-users.py creates both users).
MLFLOW_USERS = {
    "app": MLFLOW_READER,
    "mlserver": MLFLOW_READER,
    "mlserver-reconciler": MLFLOW_READER,
    "prefect-worker": MLFLOW_WRITER,
}


def service_texts(compose: dict) -> dict[str, str]:
    """Each service's environment and command, as one text (where URIs and secrets appear)."""
    return {
        name: f"{service.get('environment', {})} {service.get('command', '')}"
        for name, service in compose["services"].items()
    }


def test_no_service_signs_in_to_postgresql_as_the_superuser():
    # given every service's PostgreSQL URIs and the superuser PostgreSQL's image creates
    compose = load_compose(COMPOSE_FILE)
    superuser = compose["services"]["postgres"]["environment"]["POSTGRES_USER"]
    uris = {
        name: text for name, text in service_texts(compose).items() if POSTGRES_URI.search(text)
    }
    # when each URI's role is read
    problems = postgres_role_problems(uris, superuser, POSTGRES_ROLES_SCRIPT.read_text())
    # then MLflow and Prefect each sign in as the role owning their database, and only they do
    assert problems == [], "compose's PostgreSQL roles:\n" + "\n".join(problems)
    assert set(uris) == {"mlflow", "prefect-server"}, f"services with a PostgreSQL URI: {uris}"


def test_postgresql_creates_the_roles_on_first_start():
    # given the PostgreSQL service / when its volumes and environment are read
    postgres = load_compose(COMPOSE_FILE)["services"]["postgres"]
    mounts = [str(volume) for volume in postgres.get("volumes", [])]
    script = POSTGRES_ROLES_SCRIPT.relative_to(REPO)
    # then the roles script is in the image's init directory, and it gets both passwords
    assert any(m.startswith(f"./{script}:{INIT_DIRECTORY}") for m in mounts), mounts
    for variable in ("MLFLOW_DB_PASSWORD", "PREFECT_DB_PASSWORD"):
        assert f"${{{variable}:?" in postgres["environment"].get(variable, ""), (
            f"PostgreSQL's init does not get {variable}, required from .env"
        )


def test_the_postgresql_check_catches_the_superuser_and_a_shared_role():
    # given MLflow as the superuser, and Prefect and a second service sharing one role
    uris = {
        "mlflow": "postgresql+psycopg2://telescore:${POSTGRES_PASSWORD:?x}@postgres:5432/mlflow",
        "prefect-server": "postgresql+asyncpg://prefect:pw@postgres:5432/prefect",
        "other": "postgresql://prefect:pw@postgres:5432/mlflow",
    }
    # when checked / then each fault is named
    problems = "\n".join(
        postgres_role_problems(uris, "telescore", POSTGRES_ROLES_SCRIPT.read_text())
    )
    for expected in (
        "mlflow: signs in to PostgreSQL as the superuser 'telescore'",
        "other: PostgreSQL role 'prefect' does not own 'mlflow'",
        "role 'prefect' is shared by ['other', 'prefect-server']",
    ):
        assert expected in problems, f"the roles check missed {expected!r}:\n{problems}"


def test_mlflow_signs_in_to_minio_as_its_own_user_not_the_root():
    # given the services that mention MinIO's root password, and MLflow's S3 access key
    compose = load_compose(COMPOSE_FILE)
    holders = {n for n, text in service_texts(compose).items() if "MINIO_ROOT_PASSWORD" in text}
    mlflow = compose["services"]["mlflow"]["environment"]
    # when checked
    problems = minio_user_problems(
        holders, MINIO_ROOT_HOLDERS, mlflow["AWS_ACCESS_KEY_ID"], "${MINIO_ROOT_USER"
    )
    # then only MinIO's set-up holds the root, and MLflow signs in as the user it creates
    assert problems == [], "compose's MinIO users:\n" + "\n".join(problems)
    assert "MINIO_MLFLOW_PASSWORD" in mlflow["AWS_SECRET_ACCESS_KEY"], "MLflow's MinIO secret"
    minio_init = compose["services"]["minio-init"]
    assert any(
        str(v).startswith(f"./{MINIO_USERS_SCRIPT.relative_to(REPO)}:")
        for v in minio_init["volumes"]
    ), "minio-init does not run minio-users.sh"


def test_the_minio_check_catches_mlflow_as_root():
    # given MLflow with MinIO's root keys, as before issue 21
    problems = "\n".join(
        minio_user_problems({"mlflow", "minio"}, MINIO_ROOT_HOLDERS, "${MINIO_ROOT_USER:?x}", "")
    )
    # then both faults are named
    assert "mlflow holds MinIO's root password" in problems, problems
    assert "MLflow signs in to MinIO as its root" in problems, problems


def test_each_service_signs_in_to_mlflow_as_its_user_and_only_the_set_up_is_admin():
    # given every service's environment
    compose = load_compose(COMPOSE_FILE)
    services = compose["services"]
    users = {
        name: (service.get("environment") or {}).get("MLFLOW_TRACKING_USERNAME")
        for name, service in services.items()
    }
    # then what serves and shows models reads, the flows' worker writes, as docker/mlflow-users.py
    # creates them, with the password of that user
    problems = mlflow_user_problems(users, MLFLOW_USERS)
    assert problems == [], "compose's MLflow users:\n" + "\n".join(problems)
    for name, user in MLFLOW_USERS.items():
        password = services[name]["environment"]["MLFLOW_TRACKING_PASSWORD"]
        variable = "MLFLOW_READER_PASSWORD" if user == MLFLOW_READER else "MLFLOW_WRITER_PASSWORD"
        assert password.startswith(f"${{{variable}:?"), f"{name} signs in with {password}"
    # and only MLflow and its one-shot set-up hold the admin's password
    admins = {n for n, text in service_texts(compose).items() if "MLFLOW_ADMIN_PASSWORD" in text}
    assert admins == {"mlflow", "mlflow-users", "secrets-check"}, f"MLflow's admin: {admins}"
    assert services["mlflow"]["command"][0] == "telescore-mlflow", "MLflow runs without basic auth"
