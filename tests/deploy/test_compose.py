"""docker-compose.yml: the compose spec's schema, and the platform's rules (hygiene)."""

from __future__ import annotations

import re

from deploy_checks import (
    CHECK_JSONSCHEMA,
    COMPOSE_FILE,
    FIXTURES,
    PUBLISHING_SERVICES,
    REPO,
    compose_problems,
    load_compose,
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
        assert environment["TELESCORE_MONGODB_URI"].startswith("mongodb://telescore:${"), (
            f"{name} does not reach the compose MongoDB with its password from .env"
        )
        assert environment["TELESCORE_API_SECRET_KEY"].startswith("${TELESCORE_API_SECRET_KEY:?"), (
            f"{name} does not require TELESCORE_API_SECRET_KEY"
        )


def test_the_env_example_lists_every_variable_compose_requires():
    # given the variables compose refuses to run without
    text = COMPOSE_FILE.read_text()
    required = set(re.findall(r"\$\{(\w+):\?", text))
    # when .env.example is read
    example = (REPO / ".env.example").read_text()
    # then each is there to fill in (commented or not)
    missing = {name for name in required if f"{name}=" not in example}
    assert not missing, f".env.example does not mention {sorted(missing)}"
