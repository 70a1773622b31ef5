"""Production refuses the examples' placeholders: each secret the telescore services read.

An operator who copies `.env.example` (compose) or `secrets.env.example` (Kubernetes) and
forgets to fill in one secret must not get a running platform. Compose itself refuses only an
empty value (`${VAR:?}`); the services' settings (TELESCORE_ENVIRONMENT=production) refuse
the rest: each secret is filled in with a good value but one, left as the example has it, and
the settings of every service that reads it must refuse to load, naming the variable.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Mapping

import pytest
from deploy_checks import (
    COMPOSE_FILE,
    OVERLAYS,
    REPO,
    find,
    load_compose,
    manifests,
    render_overlay,
)
from pydantic import ValidationError

from telescore.settings import ENV_FILE_VARIABLE, load_settings

# Letters and digits (they go into URIs), long enough for every secret.
GOOD = "Q7r2Xk9mP4vL8sN3tW6yB1cZ5hJ0dF2g"
# What compose's services read, with ${VAR...} filled in from a variables' mapping.
VARIABLE = re.compile(r"\$\{(\w+)[^}]*\}")
TELESCORE_SERVICES = ("app", "mlserver", "mlserver-reconciler", "prefect-worker")


def example_values(text: str) -> dict[str, str]:
    """KEY=VALUE lines of an example file; a commented `# KEY=` counts, as left empty."""
    values = {}
    for line in text.splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(\S*)", line)
        if match and not (line.startswith("#") and match.group(2)):
            values[match.group(1)] = match.group(2)
    return values


def settings_refusal(environment: Mapping[str, str], monkeypatch, tmp_path) -> str | None:
    """Load the telescore settings from `environment` alone: the refusal's text, or None."""
    for name in list(os.environ):
        if name.startswith(("TELESCORE_", "MLFLOW_", "PREFECT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv(ENV_FILE_VARIABLE, str(tmp_path / "no.env"))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    try:
        load_settings()
    except ValidationError as refused:
        return str(refused)
    return None


def compose_secrets() -> set[str]:
    """The secrets compose gives the telescore services (`${VAR:?}`, named like a secret)."""
    services = load_compose(COMPOSE_FILE)["services"]
    return {
        name
        for service in TELESCORE_SERVICES
        for value in services[service]["environment"].values()
        for name in re.findall(r"\$\{(\w+):\?", str(value))
        if re.search(r"PASSWORD|SECRET|TOKEN", name)
    }


@pytest.mark.parametrize("secret", sorted(compose_secrets()))
def test_compose_services_refuse_the_env_example_placeholder(secret, monkeypatch, tmp_path):
    # given .env.example with every secret filled in but `secret`, left as the example has it
    example = example_values((REPO / ".env.example").read_text())
    assert secret in example, f".env.example does not list {secret}"
    variables = {name: GOOD for name in compose_secrets()} | {secret: example[secret]}
    services = load_compose(COMPOSE_FILE)["services"]
    readers = [
        name
        for name in TELESCORE_SERVICES
        if any(secret in str(value) for value in services[name]["environment"].values())
    ]
    assert readers, f"no telescore service reads {secret}"
    for name in readers:
        environment = {
            key: VARIABLE.sub(lambda m: variables.get(m.group(1), ""), str(value))
            for key, value in services[name]["environment"].items()
        }
        # when that service's settings load, as in production
        refusal = settings_refusal(environment, monkeypatch, tmp_path)
        # then they are refused, naming the variable that holds the placeholder
        assert refusal is not None, f"{name} started with {secret}={example[secret]!r}"
        named = [key for key, value in services[name]["environment"].items() if secret in value]
        assert any(key in refusal for key in named), f"{name}'s refusal names none of {named}"


def test_compose_services_start_with_the_secrets_filled_in(monkeypatch, tmp_path):
    # given every secret filled in / when each telescore service's settings load
    variables = {name: GOOD for name in compose_secrets()}
    services = load_compose(COMPOSE_FILE)["services"]
    for name in TELESCORE_SERVICES:
        environment = {
            key: VARIABLE.sub(lambda m: variables.get(m.group(1), ""), str(value))
            for key, value in services[name]["environment"].items()
        }
        # then they are accepted (the refusals above are about the placeholder alone)
        refusal = settings_refusal(environment, monkeypatch, tmp_path)
        assert refusal is None, f"{name} refused good secrets: {refusal}"


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered_examples(request, tmp_path_factory) -> tuple[str, list[dict]]:
    """(overlay, objects) rendered with its secrets.env.example as the Secret."""
    return request.param, manifests(
        render_overlay(request.param, tmp_path_factory.mktemp(request.param))
    )


def test_k8s_workloads_refuse_the_secrets_env_example(rendered_examples, monkeypatch, tmp_path):
    # given an overlay rendered with its secrets.env.example as is (every `changeme` left)
    name, objects = rendered_examples
    secret = find(objects, "Secret", "telescore-secrets")
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    config = find(objects, "ConfigMap", "telescore-config")["data"]
    # The web app holds the session key; MLServer's containers the control token instead; all
    # of them MLflow's reader password.
    mlflow, mongodb = "MLFLOW_TRACKING_PASSWORD", "TELESCORE_MONGODB_URI"
    expected = {
        "web": ("TELESCORE_API_SECRET_KEY", mongodb, mlflow),
        "mlserver-champion": ("TELESCORE_SERVING_CONTROL_TOKEN", mongodb, mlflow),
        "mlserver-challenger": ("TELESCORE_SERVING_CONTROL_TOKEN", mongodb, mlflow),
    }
    for workload, variables in expected.items():
        for container in find(objects, "Deployment", workload)["spec"]["template"]["spec"][
            "containers"
        ]:
            environment = dict(config)
            for variable in container.get("env", []):
                reference = variable.get("valueFrom", {}).get("secretKeyRef")
                environment[variable["name"]] = (
                    data[reference["key"]] if reference else variable.get("value", "")
                )
            # when its settings load, as in production
            refusal = settings_refusal(environment, monkeypatch, tmp_path)
            # then they are refused: the secrets it holds, and its MongoDB password, are
            # placeholders
            where = f"overlay {name}, {workload}/{container['name']}"
            assert refusal is not None, f"{where} started with the example's secrets"
            for variable in variables:
                assert variable in refusal, f"{where}: the refusal does not name {variable}"


CHECK_SECRETS = REPO / "docker" / "check-secrets.py"


def check_secrets(names: list[str], environment: Mapping[str, str]) -> subprocess.CompletedProcess:
    """Run docker/check-secrets.py (the image's telescore-check-secrets) on `environment`."""
    return subprocess.run(
        [sys.executable, str(CHECK_SECRETS), *names],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
        | dict(environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_compose_checks_every_secret_before_the_data_stores_start():
    # given every secret compose requires (`${VAR:?}`, named like a password or a secret)
    compose = load_compose(COMPOSE_FILE)
    required = {
        name
        for name in re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text())
        if re.search(r"PASSWORD|SECRET|TOKEN", name)
    }
    # then the one-shot secrets-check names each, and the data stores wait for its success
    check = compose["services"]["secrets-check"]
    assert set(check["command"][1:]) == required, f"secrets-check checks {check['command']}"
    for store in ("mongodb", "postgres", "minio"):
        condition = compose["services"][store]["depends_on"]["secrets-check"]["condition"]
        assert condition == "service_completed_successfully", f"{store} does not wait for it"


def test_the_check_refuses_the_env_example_as_copied():
    # given .env.example copied as it is (its secrets empty or commented out)
    names = load_compose(COMPOSE_FILE)["services"]["secrets-check"]["command"][1:]
    example = example_values((REPO / ".env.example").read_text())
    # when the compose check runs on it
    result = check_secrets(names, {name: example.get(name, "") for name in names})
    # then it fails, naming every secret
    assert result.returncode == 1, f"the check passed the example:\n{result.stdout}"
    for name in names:
        assert name in result.stderr, f"the refusal does not name {name}:\n{result.stderr}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_check_refuses_each_secrets_env_example_placeholder(overlay):
    # given an overlay's secrets.env.example, every secret filled in but one at a time
    example = example_values(
        (REPO / "k8s" / "overlays" / overlay / "secrets.env.example").read_text()
    )
    names = [name for name in example if re.search(r"PASSWORD|SECRET|_URI$|_URL$", name)]
    good = {
        name: re.sub(r"changeme", GOOD, value) if "://" in value else GOOD
        for name, value in example.items()
    }
    assert check_secrets(names, good).returncode == 0, "the check refused good secrets"
    for name in names:
        # when the check runs with that one as the example has it
        result = check_secrets(names, good | {name: example[name]})
        # then it fails, naming it
        assert result.returncode == 1, f"{overlay}: the check passed {name}={example[name]!r}"
        assert name in result.stderr, f"{overlay}: the refusal does not name {name}"
