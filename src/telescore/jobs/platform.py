"""Bring the local platform up and down: embedded services, work pool, worker, deployments."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, replace
from pathlib import Path

from telescore.io import orchestrator
from telescore.io.alert_log import alert_log_path
from telescore.io.context import Context
from telescore.io.params_files import load_monitoring_params
from telescore.services import embedded, mlflow_auth
from telescore.services import prometheus as alerting
from telescore.services.processes import ServiceProcess, pid_alive, terminate_group
from telescore.settings import (
    ENV_FILE_VARIABLE,
    MLFLOW_ADMIN,
    MLFLOW_READER,
    env_file,
)

WORKER_HEALTH_PORT_OFFSET = 1  # worker health server on the Prefect port + 1


@dataclass(frozen=True)
class PlatformUrls:
    """Where a person looks."""

    mlflow: str
    prefect: str
    mongodb: str
    evidently: str
    api: str
    prometheus: str | None = None
    alertmanager: str | None = None
    prefect_login: str | None = None
    """What the Prefect UI asks for (`user:password`), when telescore generated it."""
    monitoring_login: str | None = None
    """What the Prometheus and Alertmanager UIs ask for (`user:password`), when generated."""
    alert_log: Path | None = None
    """Where the local receiver appends the alerts Alertmanager sends it."""
    monitoring_missing: str | None = None
    """Why Prometheus and Alertmanager were not started (not installed), if they were not."""
    mlflow_login: tuple[str, str] | None = None
    """The user and password the embedded MLflow's UI asks for (its administrator)."""


def _pid_file(ctx: Context, name: str) -> Path:
    return ctx.state_dir / "run" / f"{name}.pid"


def is_running(ctx: Context, service: ServiceProcess) -> bool:
    """Tell whether `service` was started by telescore and still answers its health check."""
    pid_file = _pid_file(ctx, service.name)
    if not pid_file.exists():
        return False
    return pid_alive(int(pid_file.read_text())) and service.health()


def record_pid(ctx: Context, service: ServiceProcess) -> None:
    """Remember a started service's process group, for `telescore down`."""
    pid_file = _pid_file(ctx, service.name)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    assert service.process is not None  # noqa: S101 - launched just before
    pid_file.write_text(str(service.process.pid))


def running_pid(ctx: Context, name: str) -> int | None:
    """Return the pid of a service telescore started and that still runs, else None."""
    pid_file = _pid_file(ctx, name)
    try:
        pid = int(pid_file.read_text())
    except (FileNotFoundError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def service_env(ctx: Context) -> dict[str, str]:
    """Environment that points flow runs and tools at this platform's services.

    MLflow's credentials are the writer's: flow runs train, monitor and promote.
    """
    return ctx.mlflow_env() | {
        "TELESCORE_MLFLOW_TRACKING_URI": ctx.tracking_uri,
        "MLFLOW_TRACKING_URI": ctx.tracking_uri,
        "MLFLOW_REGISTRY_URI": ctx.tracking_uri,
        "TELESCORE_MONGODB_URI": ctx.mongodb_uri,
        "TELESCORE_PREFECT_API_URL": ctx.prefect_api_url,
        "TELESCORE_STATE_DIR": str(ctx.state_dir),
        ENV_FILE_VARIABLE: str(env_file()),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
    }


PROMOTION_SCHEDULE = "FREQ=MINUTELY;INTERVAL=10"


def bring_up(ctx: Context, project_root: Path) -> PlatformUrls:
    """Start every embedded service not already running, then register the deployments.

    Not Prometheus and Alertmanager: `start_monitoring` starts them once MLServer is up.
    """
    # Only what launches processes reads the settings: which services are embedded, ports.
    settings, state, host, api_url = ctx.settings, ctx.state_dir, ctx.host, ctx.prefect_api_url
    auth = ctx.prefect_api.auth_string
    embedded_mlflow = settings.mlflow.tracking_uri is None
    if embedded_mlflow:
        # The users' passwords exist before anything that signs in with them starts.
        mlflow_auth.writer(state)
        mlflow_auth.reader(state)
    monitoring = load_monitoring_params(project_root / "params.yaml")
    env = service_env(ctx) | {
        "TELESCORE_PROJECT_ROOT": str(project_root.resolve()),
        # Read by pipelines/prefect.yaml: the monitor runs once per window.
        "TELESCORE_MONITOR_SCHEDULE": f"FREQ=MINUTELY;INTERVAL={monitoring.window_minutes}",
        # The release under way (if any) is judged this often; the environment may override it.
        "TELESCORE_PROMOTION_SCHEDULE": os.environ.get(
            "TELESCORE_PROMOTION_SCHEDULE", PROMOTION_SCHEDULE
        ),
    }
    servers = []
    if embedded_mlflow:
        servers.append(embedded.mlflow_server(state, settings.mlflow.port, host))
    if settings.prefect.api_url is None:
        servers.append(
            embedded.prefect_server(state, settings.prefect.port, host, auth_string=auth)
        )
    if settings.mongodb.uri is None:
        servers.append(embedded.mongodb_server(state, settings.mongodb.port, host))
    servers.append(embedded.evidently_ui(state, settings.evidently.port, host))
    # The app only reads the registry (explanations): it signs in as the reader.
    api_env = env | ctx.mlflow_env(MLFLOW_READER)
    servers.append(embedded.outcomes_api(state, settings.api.port, host, api_env))
    # Prometheus and Alertmanager are not among them: `start_monitoring` starts them once
    # MLServer is up, or their first minute would page ops with MLServerDown.
    monitoring_missing = missing_monitoring(ctx)
    # Launch all first, then wait: MLflow and Prefect each take 10-20 s to get ready.
    launched = [s.launch() for s in servers if not is_running(ctx, s)]
    for service in launched:
        service.wait_healthy()
        record_pid(ctx, service)
    if embedded_mlflow:
        mlflow_auth.provision_embedded(
            ctx.tracking_uri, state, settings.mlflow.model_name, settings.mlflow.experiment
        )

    prefect_env = embedded.prefect_env(embedded.prefect_home(state), api_url, auth) | env
    orchestrator.ensure_work_pool(settings.prefect.work_pool, prefect_env, project_root)
    worker = embedded.prefect_worker(
        state,
        api_url,
        settings.prefect.work_pool,
        settings.prefect.port + WORKER_HEALTH_PORT_OFFSET,
        env,
        project_root,
        host,
        auth_string=auth,
    )
    if not is_running(ctx, worker):
        worker.start()
        record_pid(ctx, worker)
    orchestrator.deploy_all(project_root / "pipelines" / "prefect.yaml", prefect_env, project_root)
    embedded_login = (
        ctx.prometheus_login
        if settings.prometheus.auth_string is None and monitoring_missing is None
        else None
    )
    return replace(
        platform_urls(ctx, monitoring_missing),
        prefect_login=auth if settings.prefect.auth_string is None else None,
        mlflow_login=(
            (MLFLOW_ADMIN, mlflow_auth.admin(state).password) if embedded_mlflow else None
        ),
        monitoring_login=(
            f"{embedded_login.user}:{embedded_login.password}" if embedded_login else None
        ),
    )


def missing_monitoring(ctx: Context) -> str | None:
    """Say which embedded monitoring commands are missing (no `make tools` yet), if any."""
    settings = ctx.settings
    embedded_monitoring = settings.prometheus.url is None or settings.alertmanager.url is None
    return alerting.missing_commands() if embedded_monitoring else None


def start_monitoring(ctx: Context, project_root: Path, *, rule_for: str | None = None) -> list[str]:
    """Start the embedded Prometheus, Alertmanager and receiver not running; return their names.

    Called once MLServer runs (or its start was tried): Prometheus started before it would find
    its metrics port closed and, a minute later, page ops with MLServerDown for a normal
    start-up. Without the commands (no `make tools` yet) it starts nothing: the platform runs
    unwatched, and `bring_up`'s `monitoring_missing` says so. `rule_for`: as `monitoring_servers`.
    """
    if missing_monitoring(ctx) is not None:
        return []
    servers = monitoring_servers(ctx, project_root, rule_for=rule_for)
    launched = [s.launch() for s in servers if not is_running(ctx, s)]
    for service in launched:
        service.wait_healthy()
        record_pid(ctx, service)
    return [service.name for service in launched]


def stop_service(ctx: Context, name: str) -> bool:
    """Stop one service telescore started, as `bring_down` stops each; False if none ran."""
    pid = running_pid(ctx, name)
    _pid_file(ctx, name).unlink(missing_ok=True)
    if pid is None:
        return False
    terminate_group(pid)
    return True


def platform_urls(ctx: Context, monitoring_missing: str | None = None) -> PlatformUrls:
    """Return where each service is, with no login: what `up` prints and `status` shows."""
    settings, host = ctx.settings, ctx.host
    return PlatformUrls(
        mlflow=ctx.tracking_uri,
        prefect=ctx.prefect_api_url.removesuffix("/api"),
        mongodb=ctx.mongodb_uri,
        evidently=f"http://{host}:{settings.evidently.port}",
        api=f"http://{host}:{settings.api.port}",
        prometheus=ctx.prometheus_url,
        alertmanager=ctx.alertmanager_url,
        alert_log=alert_log_path(ctx.state_dir)
        if settings.alertmanager.url is None and monitoring_missing is None
        else None,
        monitoring_missing=monitoring_missing,
    )


def ui_urls(urls: PlatformUrls) -> dict[str, str]:
    """Return each UI a person opens, by name, with its URL (MongoDB's URI aside: no UI)."""
    found = {
        "MLflow UI": urls.mlflow,
        "Prefect UI": urls.prefect,
        "Evidently UI (monitoring)": urls.evidently,
        "Web app (callers)": urls.api,
        "JSON API (OpenAPI)": f"{urls.api}/docs",
    }
    if urls.prometheus:
        found["Prometheus (metrics, alert rules)"] = urls.prometheus
    if urls.alertmanager:
        found["Alertmanager (notifications)"] = urls.alertmanager
    return found


def monitoring_servers(
    ctx: Context,
    project_root: Path,
    *,
    mlserver_targets: list[str] | None = None,
    web_targets: list[str] | None = None,
    rule_for: str | None = None,
) -> list[ServiceProcess]:
    """The embedded Prometheus, Alertmanager and local alert receiver (those not configured).

    Prometheus scrapes the embedded MLServer's metrics port and the app (or the targets given,
    `host:port`); `rule_for` replaces every alert's `for:` in its copy of the rules (tests).
    """
    settings, state, host = ctx.settings, ctx.state_dir, ctx.host
    servers: list[ServiceProcess] = []
    alertmanager = settings.alertmanager
    if alertmanager.url is None and ctx.alertmanager_login is not None:
        login = alerting.WebLogin(ctx.alertmanager_login.user, ctx.alertmanager_login.password)
        servers.append(
            alerting.alert_receiver(state, alertmanager.receiver_port, alert_log_path(state), host)
        )
        servers.append(
            alerting.alertmanager_server(
                state,
                alertmanager.port,
                host,
                login=login,
                receiver_port=alertmanager.receiver_port,
                group_wait=alertmanager.group_wait,
                group_interval=alertmanager.group_interval,
                repeat_interval=alertmanager.repeat_interval,
            )
        )
    prometheus = settings.prometheus
    if prometheus.url is None and ctx.prometheus_login is not None:
        login = alerting.WebLogin(ctx.prometheus_login.user, ctx.prometheus_login.password)
        targets = alerting.ScrapeTargets(
            mlserver=mlserver_targets or [f"{host}:{settings.serving.metrics_port}"],
            web=web_targets or [f"{host}:{settings.api.port}"],
        )
        servers.append(
            alerting.prometheus_server(
                state,
                prometheus.port,
                host,
                login=login,
                targets=targets,
                alertmanager_port=alertmanager.port,
                rules=alerting.rules_source(project_root),
                web_token=(
                    settings.api.metrics_token.get_secret_value()
                    if settings.api.metrics_token
                    else None
                ),
                scrape_interval=prometheus.scrape_interval,
                evaluation_interval=prometheus.evaluation_interval,
                retention=prometheus.retention,
                rule_for=rule_for,
            )
        )
    return servers


def bring_down(ctx: Context) -> list[str]:
    """Stop every service `bring_up` started; return their names."""
    stopped = []
    run_dir = ctx.state_dir / "run"
    # Stop the worker first so that it does not pick up runs while servers go away.
    for pid_file in sorted(run_dir.glob("*.pid"), key=lambda p: p.stem != "prefect-worker"):
        with contextlib.suppress(ValueError):
            pid = int(pid_file.read_text())
            if pid_alive(pid):
                terminate_group(pid)
                stopped.append(pid_file.stem)
        pid_file.unlink(missing_ok=True)
    return stopped
