"""The embedded Prometheus and Alertmanager, and the local receiver their alerts go to.

Debian packages both servers (`make tools`: `prometheus`, with promtool, and
`prometheus-alertmanager`, with amtool). Each runs from a configuration written under the state
folder at every start, listens on the loopback address only, and asks every request for a login
(basic auth: its web config holds a bcrypt hash of the password). Prometheus scrapes MLServer's
metrics port (the runtime's and the prediction log's metrics), the web app's /metrics, itself
and Alertmanager; it evaluates the alert rules of `prometheus/telescore.rules.yml` (copied
under the state folder) and sends what fires to Alertmanager, which posts it to the local
receiver (`jobs/alert_receiver.py`) with a bearer token.

The test fixtures start the same servers with shorter intervals; `rule_for` replaces every
rule's `for:` in the copy (a test waits seconds for an alert, not minutes), never the file.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import secrets
import shutil
import sys
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from telescore.services.processes import ServiceProcess, ServiceStartError, http_ok

INSTALL_HINT: Final = (
    "run `make tools` (it installs Debian's prometheus and prometheus-alertmanager)"
)
PROMETHEUS_COMMANDS: Final = ("prometheus",)
ALERTMANAGER_COMMANDS: Final = ("prometheus-alertmanager", "alertmanager")
"""Debian's name for Alertmanager's binary, then upstream's."""
RULES_FILE: Final = "telescore.rules.yml"
RULES_FOLDER: Final = "prometheus"
"""The rules' folder in the project (the repository), beside compose's configurations."""
RECEIVER_TOKEN_FILE: Final = "receiver-token"  # noqa: S105 - a file name, not a secret
BCRYPT_COST: Final = 10
"""2^10 rounds: about 50 ms a check; both servers cache a checked login."""
DURATION: Final = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


class MonitoringNotInstalledError(ServiceStartError):
    """Prometheus's or Alertmanager's binary is missing."""


def find_command(names: Sequence[str]) -> str:
    """Return the first of `names` on PATH; raise, saying how to install it, if none is."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise MonitoringNotInstalledError(f"{' or '.join(names)} not found on PATH: {INSTALL_HINT}")


def missing_commands() -> str | None:
    """Say which of Prometheus and Alertmanager is not installed, and how to install it."""
    for names in (PROMETHEUS_COMMANDS, ALERTMANAGER_COMMANDS):
        try:
            find_command(names)
        except MonitoringNotInstalledError as missing:
            return str(missing)
    return None


def rules_source(project_root: Path) -> Path:
    """Return the alert rules file of the project."""
    return project_root / RULES_FOLDER / RULES_FILE


def bcrypt_hash(password: str) -> str:
    """Return a bcrypt hash of `password`, as Prometheus's and Alertmanager's web configs take.

    The standard library's `crypt` calls the system's libxcrypt, which does bcrypt (`$2b$`): no
    package of its own. It goes in Python 3.13; the project runs 3.11 (pyproject.toml), and
    the `bcrypt` package is the replacement when that changes.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # noqa: PLC0415 - deprecated: imported where its warning is silenced

        # bcrypt is what the web configs take, and is not weak (S324 flags every crypt method).
        salt = crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=2**BCRYPT_COST)  # noqa: S324
        hashed = crypt.crypt(password, salt)
    if not hashed or not hashed.startswith("$2"):
        raise ServiceStartError("this system's crypt(3) does not do bcrypt (libxcrypt is needed)")
    return hashed


@dataclass(frozen=True)
class WebLogin:
    """The user and password both servers ask every request for (basic auth)."""

    user: str
    password: str = field(repr=False)

    def headers(self) -> dict[str, str]:
        """Return the Authorization header that logs in as this user."""
        token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}


def write_private(path: Path, text: str) -> Path:
    """Write `text` to `path`, readable by its owner only from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return path


def write_web_config(path: Path, login: WebLogin) -> Path:
    """Write a web config (exporter-toolkit's) that asks every request for `login`."""
    config = {"basic_auth_users": {login.user: bcrypt_hash(login.password)}}
    return write_private(path, yaml.safe_dump(config))


def write_rules(source: Path, folder: Path, rule_for: str | None = None) -> Path:
    """Copy the rules file into `folder`; with `rule_for`, every alert waits that long instead.

    The shipped file stays as it is: a test sets `rule_for` to see an alert in seconds.
    """
    rules = yaml.safe_load(source.read_text())
    if rule_for is not None:
        if not DURATION.match(rule_for):
            raise ValueError(f"rule_for: {rule_for!r} is not a Prometheus duration")
        for group in rules["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rule["for"] = rule_for
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.yml"):
        stale.unlink()
    destination = folder / source.name
    destination.write_text(yaml.safe_dump(rules, sort_keys=False, width=100))
    return destination


@dataclass(frozen=True)
class ScrapeTargets:
    """What Prometheus scrapes, as `host:port`: MLServer's metrics ports and the web app's."""

    mlserver: Sequence[str]
    web: Sequence[str]


def prometheus_config(
    targets: ScrapeTargets,
    *,
    prometheus: str,
    alertmanager: str,
    password_file: Path,
    rules_folder: Path,
    scrape_interval: str,
    evaluation_interval: str,
    user: str,
) -> dict[str, Any]:
    """Return the embedded Prometheus's configuration.

    `prometheus` and `alertmanager` are `host:port`; `password_file` holds the password of
    `user`, which both ask for (Prometheus scrapes itself and Alertmanager with it).
    """
    login = {"username": user, "password_file": str(password_file)}
    return {
        "global": {
            "scrape_interval": scrape_interval,
            "evaluation_interval": evaluation_interval,
            "external_labels": {"platform": "telescore"},
        },
        "rule_files": [str(rules_folder / "*.yml")],
        "alerting": {
            "alertmanagers": [
                {"static_configs": [{"targets": [alertmanager]}], "basic_auth": login}
            ]
        },
        "scrape_configs": [
            # The runtime's requests, failures and durations, and the prediction log's
            # journal, shipper and MongoDB state (telescore.serving.shipping).
            {"job_name": "mlserver", "static_configs": [{"targets": list(targets.mlserver)}]},
            # The web app's /metrics, and the loop's figures it reads from MongoDB.
            {"job_name": "web", "static_configs": [{"targets": list(targets.web)}]},
            {
                "job_name": "prometheus",
                "basic_auth": login,
                "static_configs": [{"targets": [prometheus]}],
            },
            {
                "job_name": "alertmanager",
                "basic_auth": login,
                "static_configs": [{"targets": [alertmanager]}],
            },
        ],
    }


def prometheus_server(
    state_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    *,
    login: WebLogin,
    targets: ScrapeTargets,
    alertmanager_port: int,
    rules: Path,
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
    retention: str = "15d",
    rule_for: str | None = None,
) -> ServiceProcess:
    """Prometheus on `host:port`, its data and generated configuration under the state folder.

    `rules` is the alert rules file (`rules_source`), copied into the state folder (with
    `rule_for`, each alert's `for:` replaced).
    """
    command = find_command(PROMETHEUS_COMMANDS)
    root = (state_dir / "prometheus").resolve()
    password_file = write_private(root / "password", login.password)
    rules_folder = root / "rules"
    write_rules(rules, rules_folder, rule_for)
    config = prometheus_config(
        targets,
        prometheus=f"{host}:{port}",
        alertmanager=f"{host}:{alertmanager_port}",
        password_file=password_file,
        rules_folder=rules_folder,
        scrape_interval=scrape_interval,
        evaluation_interval=evaluation_interval,
        user=login.user,
    )
    config_file = root / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    web_config = write_web_config(root / "web.yml", login)
    url = f"http://{host}:{port}"
    return ServiceProcess(
        name="prometheus",
        command=[
            command,
            f"--config.file={config_file}",
            f"--web.config.file={web_config}",
            f"--web.listen-address={host}:{port}",
            f"--web.external-url={url}",
            f"--storage.tsdb.path={root / 'data'}",
            f"--storage.tsdb.retention.time={retention}",
        ],
        health=http_ok(f"{url}/-/ready", headers=login.headers()),
        log_path=state_dir / "logs" / "prometheus.log",
        cwd=root,
    )


def receiver_token(state_dir: Path) -> Path:
    """Return the file holding the receiver's bearer token, created (owner-only) once."""
    path = (state_dir / "alertmanager" / RECEIVER_TOKEN_FILE).resolve()
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32))
    return path


def alertmanager_config(
    receiver_url: str,
    token_file: Path,
    *,
    group_wait: str,
    group_interval: str,
    repeat_interval: str,
) -> dict[str, Any]:
    """Return the embedded Alertmanager's configuration: every alert to the local receiver.

    docs/metrics.md and `prometheus/alertmanager.yml` show routes to a chat webhook and e-mail.
    """
    return {
        "route": {
            "receiver": "telescore-local",
            "group_by": ["alertname", "severity"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
        },
        "receivers": [
            {
                "name": "telescore-local",
                "webhook_configs": [
                    {
                        "url": receiver_url,
                        "send_resolved": True,
                        "http_config": {
                            "authorization": {
                                "type": "Bearer",
                                "credentials_file": str(token_file),
                            }
                        },
                    }
                ],
            }
        ],
    }


def alertmanager_server(
    state_dir: Path,
    port: int,
    host: str = "127.0.0.1",
    *,
    login: WebLogin,
    receiver_port: int,
    group_wait: str = "30s",
    group_interval: str = "5m",
    repeat_interval: str = "4h",
) -> ServiceProcess:
    """Alertmanager on `host:port`, notifying the local receiver on `receiver_port`."""
    command = find_command(ALERTMANAGER_COMMANDS)
    root = (state_dir / "alertmanager").resolve()
    config = alertmanager_config(
        f"http://{host}:{receiver_port}/alerts",
        receiver_token(state_dir),
        group_wait=group_wait,
        group_interval=group_interval,
        repeat_interval=repeat_interval,
    )
    config_file = root / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    web_config = write_web_config(root / "web.yml", login)
    url = f"http://{host}:{port}"
    return ServiceProcess(
        name="alertmanager",
        command=[
            command,
            f"--config.file={config_file}",
            f"--web.config.file={web_config}",
            f"--web.listen-address={host}:{port}",
            f"--web.external-url={url}",
            f"--storage.path={root / 'data'}",
            # No cluster: its gossip would listen on every address (0.0.0.0:9094).
            "--cluster.listen-address=",
        ],
        health=http_ok(f"{url}/-/ready", headers=login.headers()),
        log_path=state_dir / "logs" / "alertmanager.log",
        cwd=root,
    )


def alert_receiver(
    state_dir: Path,
    port: int,
    alert_log: Path,
    host: str = "127.0.0.1",
    env: Mapping[str, str] | None = None,
) -> ServiceProcess:
    """The local receiver (`jobs/alert_receiver.py`): appends every alert to `alert_log`."""
    state_dir = state_dir.resolve()
    return ServiceProcess(
        name="alert-receiver",
        command=[
            sys.executable,
            "-m",
            "telescore.jobs.alert_receiver",
            "--host",
            host,
            "--port",
            str(port),
            "--log-file",
            str(alert_log.resolve()),
            "--token-file",
            str(receiver_token(state_dir)),
        ],
        health=http_ok(f"http://{host}:{port}/health"),
        log_path=state_dir / "logs" / "alert-receiver.log",
        env=env or {},
    )


COMPOSE_USER: Final = "telescore"
PASSWORD_VARIABLE: Final = "MONITORING_PASSWORD"  # noqa: S105 - a variable's name


def write_shared_login(folder: Path, password: str, user: str = COMPOSE_USER) -> None:
    """Write the login files compose's Prometheus and Alertmanager mount (`secrets/`).

    `web.yml` asks every request for `user` (a bcrypt hash, readable by all); `password` is
    what Prometheus presents to itself and to Alertmanager, readable by the group that writes
    it (the containers join it) and nobody else.
    """
    write_web_config(folder / "web.yml", WebLogin(user, password)).chmod(0o444)
    write_private(folder / "password", password).chmod(0o440)


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m telescore.services.prometheus FOLDER`: write the shared login files there.

    Run once by compose's `monitoring-login` service, the password from MONITORING_PASSWORD.
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    password = os.environ.get(PASSWORD_VARIABLE, "")
    if len(arguments) != 1 or not password:
        raise SystemExit(f"usage: {PASSWORD_VARIABLE}=... python -m {__name__} FOLDER")
    write_shared_login(Path(arguments[0]), password)


if __name__ == "__main__":
    main()
