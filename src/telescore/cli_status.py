"""`telescore status`: the loop at a glance in the terminal (`jobs.status` gathers it)."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from pymongo.errors import PyMongoError
from rich.console import Console, Group
from rich.table import Table

from telescore.core.loop_status import LoopStatus
from telescore.io.context import Context
from telescore.jobs.status import Status, gather_status

console = Console()


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0.0, (now - moment).total_seconds())
    if seconds < 120:
        span = f"{seconds:.0f} s"
    elif seconds < 7200:
        span = f"{seconds / 60:.0f} min"
    elif seconds < 172_800:
        span = f"{seconds / 3600:.1f} h"
    else:
        span = f"{seconds / 86_400:.1f} days"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M} UTC ({span} ago)"


def _figure(value: float | None, pattern: str = "{:.3f}") -> str:
    return "n/a" if value is None else pattern.format(value)


def _serving(loop: LoopStatus, serving_url: str) -> list[tuple[str, str]]:
    routing = loop.routing_mode
    if routing == "canary":
        routing = f"canary, {loop.canary_weight:g}% of prospects to the challenger"
    if loop.served is None:
        served = f"not answering at {serving_url}"
        return [("MLServer", served), ("Routing", routing)]
    rows = []
    for slot in ("champion", "challenger"):
        version = loop.served.get(slot)
        rows.append((slot.capitalize(), f"version {version}" if version else "none served"))
    return [*rows, ("Routing", routing)]


def _window(loop: LoopStatus, now: datetime) -> list[tuple[str, str]]:
    rows = [("Last monitor run", _ago(loop.last_run_at, now))]
    window = loop.last_window
    if window is None:
        return [*rows, ("Last judged window", "none yet")]
    return [
        *rows,
        (
            "Last judged window",
            f"{window.window_start.astimezone(UTC):%Y-%m-%d %H:%M}-"
            f"{window.window_end.astimezone(UTC):%H:%M} UTC, version {window.model_version}",
        ),
        ("Verdict", f"{window.verdict} ({window.verdict_reason})"),
        (
            "Figures",
            f"{window.predictions} predictions, label coverage "
            f"{_figure(window.label_coverage, '{:.0%}')}, drift share "
            f"{_figure(window.drift_share, '{:.0%}')}, ROC AUC {_figure(window.roc_auc)}, "
            f"calibration gap {_figure(window.calibration_gap)}",
        ),
        ("Degraded in a row since a retrain", str(loop.degraded_windows_since_retrain)),
    ]


def _decisions(loop: LoopStatus, now: datetime) -> list[tuple[str, str]]:
    retrain = loop.last_retrain
    if retrain is None:
        last_retrain = "none yet"
    else:
        ended = retrain.outcome or (retrain.state or "its run's end not known yet")
        last_retrain = f"{_ago(retrain.decided_at, now)}: {retrain.reason}; {ended}"
    release = loop.last_release
    if release is None:
        last_release = "none yet"
    else:
        last_release = (
            f"{_ago(release.decided_at, now)}: {release.action} challenger "
            f"{release.challenger_version} over champion {release.champion_version} "
            f"({release.reason})"
        )
    actions = ", ".join(f"{count} {action}" for action, count in loop.release_decisions.items())
    return [
        (
            "Retrains",
            f"{loop.retrains_started} started, {loop.retrains_failed} failed, "
            f"{loop.retrains_promoted} promoted",
        ),
        ("Last retrain", last_retrain),
        ("Release decisions", actions),
        ("Last release decision", last_release),
    ]


def _backlog(status: Status) -> list[tuple[str, str]]:
    rows = [("Pending outcomes", f"{status.loop.pending_outcomes} waiting for their prediction")]
    log = status.prediction_log
    if log is None and status.loop.served is None:
        rows.append(("Prediction log", f"not answering: MLServer at {status.serving_url}"))
    elif log is None:
        rows.append(("Prediction log", "no figures: MLServer serves no model yet"))
    else:
        rows.append(
            (
                "Prediction log",
                f"{log.spooled:.0f} rows spooled (waiting for MongoDB), "
                f"{log.dead_lettered:.0f} dead letters; MongoDB "
                f"{'up' if log.mongodb_up else 'DOWN'}; "
                + (
                    f"over {log.replicas} MLServer replica(s), from Prometheus"
                    if log.replicas is not None
                    else "the local MLServer's (Prometheus did not say)"
                ),
            )
        )
    return rows


def _alerts(status: Status) -> list[tuple[str, str]]:
    if status.alerts is None:
        return [("Alertmanager", f"not answering at {status.alertmanager_url}")]
    if not status.alerts:
        return [("Firing", "none")]
    return [
        (f"Alert {alert.name}", f"{alert.severity}: {alert.summary} (since {alert.since})")
        for alert in status.alerts
    ]


def render_status(status: Status, now: datetime) -> Group:
    """Return the status as tables: serving, monitoring, decisions, backlog, alerts, UIs."""
    loop = status.loop
    sections = {
        "Serving": _serving(loop, status.serving_url),
        "Monitoring": _window(loop, now),
        "Retraining and releases": _decisions(loop, now),
        "Backlog": _backlog(status),
        "Alerts": _alerts(status),
        "UIs": [
            (each.name, each.url if each.answering else f"{each.url} (not answering)")
            for each in status.services
        ],
    }
    tables = []
    for title, rows in sections.items():
        table = Table(title=title, show_header=False, title_justify="left", box=None)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        for name, value in rows:
            table.add_row(name, value)
        tables.append(table)
    return Group(*tables)


def status() -> None:
    """Show the loop at a glance: what serves, the last window, decisions, backlog, alerts, UIs."""
    with Context.from_environment() as ctx:
        try:
            found = gather_status(ctx)
        except PyMongoError as error:
            console.print(
                f"[red]MongoDB is unreachable[/] ({type(error).__name__}): it holds the loop's "
                "records, so there is nothing to show. Start the platform with "
                "[bold]telescore up[/], or check TELESCORE_MONGODB_URI."
            )
            raise typer.Exit(code=1) from None
    console.print(render_status(found, datetime.now(UTC)))


def register(app: typer.Typer) -> None:
    """Add `status` to the `telescore` command."""
    app.command()(status)
