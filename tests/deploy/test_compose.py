"""docker-compose.yml: the compose spec's schema, and the platform's rules (hygiene)."""

from __future__ import annotations

import re

from deploy_checks import (
    CHECK_JSONSCHEMA,
    COMPOSE_FILE,
    FIXTURES,
    MONGODB_USERS_SCRIPT,
    PUBLISHING_SERVICES,
    REPO,
    compose_problems,
    compose_session_key_holders,
    load_compose,
    mlserver_network_problems,
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
