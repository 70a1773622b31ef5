"""The `telescore` command: bring the platform up, train, and show where to look."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from pymongo.errors import PyMongoError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from telescore import cli_operations, cli_status
from telescore.cli_stages import stages_app
from telescore.core.backtest_grid import flat_keys
from telescore.core.outcomes import MalformedBatchError
from telescore.io import orchestrator
from telescore.io.alert_log import AlertLog, alert_log_path
from telescore.io.context import Context
from telescore.io.datasets import DATASET_FILE
from telescore.io.outcome_store import OutcomeStore
from telescore.io.params_files import ParamsFileError
from telescore.io.prediction_store import PredictionStore
from telescore.io.prospect_store import ProspectStore
from telescore.jobs import backtest, campaign, outcomes, platform, reconciler, replay, reproduce
from telescore.jobs import demo as demo_steps
from telescore.jobs import serving as deployment
from telescore.jobs import simulate as simulation
from telescore.jobs.model_repository import CHAMPION_MODEL
from telescore.jobs.streaming import StreamClock
from telescore.settings import project_root

app = typer.Typer(
    help="telescore: rank telemarketing prospects and keep the model good.", no_args_is_help=True
)
serve_app = typer.Typer(help="MLServer serving the champion and challenger.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
app.add_typer(stages_app, name="stage", help="DVC pipeline stages (run by `dvc repro`).")
outcomes_app = typer.Typer(help="Call outcomes: did the prospect subscribe?", no_args_is_help=True)
app.add_typer(outcomes_app, name="outcomes")
cli_operations.register(app)
cli_status.register(app)
console = Console()


def _print_urls(urls: platform.PlatformUrls, ctx: Context) -> None:
    table = Table(title="telescore is up", show_header=False)
    logins = {"MLflow UI": urls.mlflow_login, "Prefect UI": urls.prefect_login}
    for name, url in platform.ui_urls(urls).items():
        table.add_row(name, url)
        if logins.get(name):
            table.add_row(f"{name} login", "printed below the table")
    table.add_row("MongoDB", urls.mongodb)
    if urls.monitoring_login:
        table.add_row("Prometheus, Alertmanager login", "printed below the table")
    if urls.alert_log:
        table.add_row("Alerts received", "telescore alerts (ops: GET /alerts)")
    serving = deployment.status(ctx)
    if serving.models:
        for name, version in serving.models.items():
            table.add_row(f"Serving {name}", f"{serving.url}/v2/models/{name} (version {version})")
        table.add_row("V2 gRPC", serving.grpc)
        table.add_row("MLServer metrics (scraped by Prometheus)", serving.metrics)
    table.add_row("Logs", str(ctx.state_dir / "logs"))
    console.print(table)
    if urls.mlflow_login:
        user, password = urls.mlflow_login
        console.print(f"MLflow UI login: user [bold]{user}[/], password:")
        console.print(password, soft_wrap=True, highlight=False, markup=False)
    if urls.prefect_login:
        # On a line of its own: a table cell folds or cuts it, and the UI wants it whole.
        console.print("Prefect UI login (paste it whole):")
        console.print(urls.prefect_login, soft_wrap=True, highlight=False)
    if missing := urls.monitoring_missing:
        console.print(f"[yellow]No alerts: Prometheus and Alertmanager not started[/]: {missing}")
    if urls.monitoring_login:
        console.print("Prometheus and Alertmanager login (user, then password):")
        user, _, password = urls.monitoring_login.partition(":")
        console.print(user, soft_wrap=True, highlight=False)
        console.print(password, soft_wrap=True, highlight=False)


def _start_serving(ctx: Context) -> bool:
    """Start (or reload) MLServer and its reconciler; False when it serves no champion yet."""
    with console.status("Starting MLServer on the champion (and challenger)..."):
        served = deployment.start_serving(ctx)
    if CHAMPION_MODEL not in served.models:
        console.print(
            "[yellow]No champion yet[/]: MLServer runs with no model; its reconciler serves "
            "the first one that passes its gates, with no command."
        )
        return False
    return True


def _start_monitoring(ctx: Context, urls: platform.PlatformUrls) -> None:
    """Start Prometheus, Alertmanager and the alert receiver (after MLServer: see `up`)."""
    if urls.monitoring_missing:
        return  # `_print_urls` says why no alert will come
    with console.status("Starting Prometheus and Alertmanager..."):
        platform.start_monitoring(ctx, project_root())


@app.command()
def up() -> None:
    """Start the embedded services, the Prefect worker, and register the deployments."""
    with Context.from_environment() as ctx:
        with console.status("Starting MLflow, Prefect, MongoDB (nx-27017) and a Prefect worker..."):
            urls = platform.bring_up(ctx, project_root())
        _start_serving(ctx)
        # Watched once it serves: Prometheus started before MLServer would page MLServerDown.
        _start_monitoring(ctx, urls)
        _print_urls(urls, ctx)
    login = (
        f" and PREFECT_API_AUTH_STRING=$(cat {ctx.state_dir / orchestrator.AUTH_FILE})"
        if urls.prefect_login
        else ""
    )
    console.print(
        f"Train from any terminal: [bold]prefect deployment run "
        f"'{orchestrator.TRAINING_DEPLOYMENT}'[/] (with PREFECT_API_URL={urls.prefect}/api{login})"
    )


@app.command()
def down() -> None:
    """Stop every service `telescore up` started."""
    with Context.from_environment() as ctx:
        stopped = platform.bring_down(ctx)
    console.print(f"Stopped: {', '.join(stopped) or 'nothing was running'}")


@app.command("alerts")
def alerts_command(
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first.")] = 20,
) -> None:
    """Show the newest alerts Alertmanager sent the local receiver (firing and resolved)."""
    with Context.from_environment() as ctx:
        path = alert_log_path(ctx.state_dir)
    received = AlertLog(path).latest(limit)
    if not received:
        console.print(f"No alert received yet ({path}).")
        return
    _print_rows(
        f"Alerts received, newest first ({path})",
        ("received", "status", "alert", "severity", "summary"),
        [
            (
                each["received_at"][:19],
                each["status"],
                each["alertname"],
                each["severity"],
                each["summary"],
            )
            for each in received
        ],
    )


@app.command()
def train(
    params_file: Annotated[
        str, typer.Option(help="Params YAML, relative to the project.")
    ] = "params.yaml",
) -> None:
    """Run the training deployment on the worker and wait for its verdict.

    A model that passes the gates is released as `training.release` says (shadow by default);
    `telescore promote` (scheduled every 10 minutes) promotes or rolls it back on outcomes.
    """
    parameters: dict[str, Any] = {"params_file": params_file}
    with Context.from_environment() as ctx:
        cli_operations.run_deployment_and_report(
            orchestrator.TRAINING_DEPLOYMENT, ctx.prefect_api, parameters
        )
    console.print(
        "Every MLServer's reconciler serves a new champion or challenger within seconds; "
        "a release is judged by `promote-telemarketing` on the outcomes callers record."
    )


@app.command()
def monitor(
    window_start: Annotated[
        str | None, typer.Option(help="ISO start of the window; default: the last complete one.")
    ] = None,
    window_end: Annotated[str | None, typer.Option(help="ISO end of the window.")] = None,
) -> None:
    """Run the monitor deployment now and show its decision."""
    window = {"window_start": window_start, "window_end": window_end}
    with Context.from_environment() as ctx:
        cli_operations.run_deployment_and_report(
            orchestrator.MONITOR_DEPLOYMENT,
            ctx.prefect_api,
            {key: value for key, value in window.items() if value},
        )


@app.command("reproduce")
def reproduce_command(
    version: Annotated[str, typer.Argument(help="Registered version number, e.g. 3.")],
    tolerance: Annotated[
        float, typer.Option(help="Largest absolute difference allowed per holdout metric.")
    ] = reproduce.DEFAULT_TOLERANCE,
) -> None:
    """Re-run a registered version from its lineage (commit, data snapshot, params); compare."""
    try:
        with (
            Context.from_environment() as ctx,
            console.status(f"Re-running version {version} from its lineage..."),
        ):
            report = reproduce.reproduce_version(ctx.registry, version, project_root(), tolerance)
    except reproduce.ReproduceError as error:
        console.print(f"[red]Not reproduced:[/] {error}")
        raise typer.Exit(code=1) from None
    commit, data = report.commit[:12], report.fingerprint[:12]
    table = Table(title=f"Version {version} at commit {commit}, data {data} (hash checked)")
    for column in ("metric", "registered", "reproduced", "difference"):
        table.add_column(column)
    for check in report.checks:
        table.add_row(
            check.name,
            f"{check.registered:.6f}",
            f"{check.reproduced:.6f}",
            f"{check.difference:.1e}",
        )
    console.print(table)
    if not report.passed:
        console.print(f"[red]Not reproduced:[/] a metric differs by more than {tolerance:g}.")
        raise typer.Exit(code=1)
    console.print(f"[green]Reproduced[/] within {tolerance:g}.")


@app.command("replay")
def replay_command(
    rows: Annotated[
        int | None, typer.Option(help="Replay only the first N rows (a slice); default all.")
    ] = None,
    first_rows: Annotated[
        int | None,
        typer.Option(help="Rows the first champion learns; default --first-fraction of them."),
    ] = None,
    first_fraction: Annotated[
        float,
        typer.Option(
            min=0.01, max=0.99, help="The first champion's share of the dataset's earliest rows."
        ),
    ] = 0.2,
    window_rows: Annotated[int, typer.Option(min=1, help="Rows per monitoring window.")] = 2000,
    label_delay_rows: Annotated[
        int, typer.Option(min=0, help="Outcomes are reported this many scored rows later.")
    ] = 1000,
    params_file: Annotated[
        Path, typer.Option(help="The params the platform runs; the replay adds only its clock.")
    ] = Path("params.yaml"),
    out: Annotated[Path, typer.Option(help="Where replay.png and replay.json go.")] = Path(
        "reports/replay"
    ),
    monitor_by_deployment: Annotated[
        bool,
        typer.Option(help="Monitor each window by a deployment run on the worker (~25 s each)."),
    ] = False,
) -> None:
    """Play the 2008-2010 calls through the platform in time order; compare with no retraining."""
    with Context.from_environment() as ctx:
        state_dir = ctx.state_dir / "replay"
    root = project_root()
    config = replay.ReplayConfig(
        data=root / DATASET_FILE,
        params=params_file,
        rows=rows,
        first_rows=first_rows,
        first_champion_fraction=first_fraction,
        window_rows=window_rows,
        label_delay_rows=label_delay_rows,
        monitor_by_deployment=monitor_by_deployment,
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("replay", total=None)

            def progress(what: str, done: int, total: int) -> None:
                bar.update(task, description=what, completed=done, total=total)

            result = replay.run_replay(config, state_dir, root, progress)
    finally:
        # The replay's own services: stop them whatever happened. `run_replay` pointed this
        # process's environment at them, so a context opened now is the replay's.
        with Context.from_environment() as replay_ctx:
            stopped = platform.bring_down(replay_ctx)
        console.print(f"Replay services stopped: {', '.join(stopped) or 'none'}")
    figures, plot = replay.save_result(result, out)
    _print_replay(result)
    saved = f"{plot} and {figures}" if plot.exists() else str(figures)
    console.print(f"Saved {saved} in {result.seconds:.0f} s.")


def _print_replay(result: replay.ReplayResult) -> None:
    first = result.first_training
    if first and not first.get("passed"):
        console.print(
            f"[yellow]Cold start[/]: the first champion's training run ended {first['state']} "
            f"({(first.get('message') or '')[:300]})"
        )
    if result.unserved_windows:
        served_from = result.config.get("first_served_window")
        console.print(
            f"{len(result.unserved_windows)} windows served by no model "
            f"({', '.join(map(str, result.unserved_windows))}): their calls logged unscored; "
            + (
                f"first served window: {served_from} (version {result.config['first_champion']})"
                if served_from is not None
                else "no model ever passed its gates"
            )
        )
    if result.loop is None or result.never_retrained is None:
        return
    table = Table(title="Prequential quality over the replayed calls (the served windows)")
    for column in ("run", "pooled ROC AUC", "mean calibration gap", "top-decile lift", "retrains"):
        table.add_column(column)
    promoted = sum(1 for each in result.retrains if each["promoted"])
    for name, quality, retrains in (
        ("first model served, never retrained", result.never_retrained, "0"),
        ("telescore loop", result.loop, f"{len(result.retrains)} ({promoted} promoted)"),
    ):
        table.add_row(
            name,
            f"{quality.pooled_roc_auc:.3f}",
            f"{quality.mean_calibration_gap:.3f}",
            f"{quality.mean_top_decile_lift:.2f}",
            retrains,
        )
    console.print(table)
    for each in result.retrains:
        release = each.get("release")
        verdict = "promoted" if each["promoted"] else "champion kept"
        if release is not None:
            verdict = (
                f"{release['mode']} release, {release['outcome'] or 'undecided'} after "
                f"{release['windows']} window(s), {release['calls']} calls"
            )
        console.print(
            f"after window {each['window']}: {each['reason']} -> version {each['version']} "
            f"({verdict}: {each['promotion']})"
        )
    summary = result.release_summary
    if summary.get("started"):
        median = summary["median_windows_before_serving"]
        console.print(
            f"Releases: {summary['started']} started, {summary['promote']} promoted"
            + (
                f" after a median of {median:g} window(s), "
                f"{summary['median_calls_before_serving']:,.0f} calls, in release"
                if median is not None
                else ""
            )
            + f", {summary['rollback']} rolled back, {summary['superseded']} superseded, "
            f"{summary['undecided']} undecided at the end."
        )


@app.command("backtest")
def backtest_command(
    grid: Annotated[Path, typer.Option(help="Grid file: candidates, variants, selection.")] = Path(
        "backtest.yaml"
    ),
    params_file: Annotated[
        Path, typer.Option(help="The params the candidates override (and the patch is for).")
    ] = Path("params.yaml"),
    source: Annotated[
        str,
        typer.Option(
            help="dataset: the params' data file; mongodb: logged predictions + outcomes."
        ),
    ] = "dataset",
    rows: Annotated[
        int | None, typer.Option(help="Only the first N rows of the history; default all.")
    ] = None,
    workers: Annotated[int, typer.Option(help="Processes playing the stream variants.")] = 2,
    out: Annotated[
        Path, typer.Option(help="Where the table, training runs, plot and patch go.")
    ] = Path("reports/backtest"),
    write_patch: Annotated[
        Path | None, typer.Option(help="Write the recommended configuration as a params patch.")
    ] = None,
    mlflow: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="Log to MLflow when it answers.")
    ] = True,
) -> None:
    """Replay a labelled history offline under each candidate of a grid; recommend one.

    Chosen on the earlier periods of the history, reported on the last one, which did not
    choose it. No service is needed (MLflow is used when it answers).
    """
    if source not in ("dataset", "mongodb"):
        raise typer.BadParameter(f"source must be 'dataset' or 'mongodb', not {source!r}")
    config = backtest.BacktestConfig(
        grid=grid,
        params=params_file,
        source="mongodb" if source == "mongodb" else "dataset",
        rows=rows,
        workers=workers,
        out=out,
        mlflow=mlflow,
        patch=write_patch,
    )
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with (
            Context.from_environment() as ctx,
            Progress(*columns, TimeElapsedColumn(), console=console) as bar,
        ):
            task = bar.add_task("backtest", total=None)

            def progress(what: str, done: int, total: int) -> None:
                bar.update(task, description=what, completed=done, total=total)

            result = backtest.run_backtest(ctx, config, project_root(), progress)
    except (ParamsFileError, FileNotFoundError, ValueError) as error:
        # A bad grid or params file (named field by field), or a history too short to play.
        console.print(f"[red]Cannot backtest:[/] {error}")
        raise typer.Exit(code=2) from None
    except PyMongoError as error:
        console.print(f"[red]MongoDB is unreachable[/] ({type(error).__name__}): no history read.")
        raise typer.Exit(code=1) from None
    _print_backtest(result)


def _print_backtest(result: backtest.BacktestResult) -> None:
    selection = result.selection
    folds = selection.rule.folds
    choose_end = result.fold_rows(folds - 2)[1]
    report = result.fold_rows(folds - 1)
    console.print(
        f"{result.history_rows:,} rows of history ({result.source}); "
        f"{len(result.candidates)} candidates x {len(result.variants)} stream variants "
        f"({', '.join(variant.label for variant in result.variants[:4])}"
        f"{', ...' if len(result.variants) > 4 else ''}); {result.fits} fits"
    )
    rule = selection.rule
    limits = [
        f"{name} <= {limit}"
        for name, limit in (
            ("calibration gap", rule.max_calibration_gap),
            ("runs / 10k calls", rule.max_runs_per_10k_calls),
        )
        if limit is not None
    ]
    table = Table(
        title=(
            f"Chosen on the calls before row {choose_end:,} (folds 1-{folds - 1}), reported on "
            f"rows {report[0]:,}-{report[1]:,} (fold {folds}): median (worst) over the variants"
        ),
        caption=(
            f"Ranked by the {rule.statistic} {backtest.METRIC_NAMES[rule.metric]} of the choose "
            f"period{', within ' + ' and '.join(limits) if limits else ''}"
            + (
                f"; only release modes {', '.join(rule.release_modes)} recommended."
                if rule.release_modes is not None
                else "."
            )
        ),
    )
    for column in backtest.SUMMARY_COLUMNS:
        table.add_column(column, justify="left" if column in ("candidate", "period") else "right")
    for row in backtest.summary_rows(result):
        table.add_row(*row, end_section=row[1] == "report")
    console.print(table)
    steps = Table(title="The choice, fold by fold: chosen on folds 1..k, seen on fold k+1")
    for column in ("k", "chosen", "its pooled ROC AUC on fold k+1", "best on fold k+1"):
        steps.add_column(column)
    for step in selection.steps:
        auc = step.figures.of("pooled_roc_auc")
        steps.add_row(
            str(step.chosen_on),
            step.chosen,
            f"{auc.median:.3f} ({auc.worst:.3f})",
            step.best_in_hindsight,
        )
    console.print(steps)
    evidence = selection.evidence[selection.recommended]
    pair = backtest.figure_pair
    stream, baseline = evidence.stream, evidence.baseline
    figures = (
        f"pooled ROC AUC {pair(stream, 'pooled_roc_auc', 3)}, calibration gap "
        f"{pair(stream, 'calibration_gap', 3)}, top-decile lift "
        f"{pair(stream, 'top_decile_lift', 2)}, training runs per 10k calls "
        f"{pair(stream, 'runs_per_10k_calls', 1)}"
    )
    if baseline is not None:
        figures += (
            f"; its first champion, never retrained: {pair(baseline, 'pooled_roc_auc', 3)} / "
            f"{pair(baseline, 'calibration_gap', 3)} / {pair(baseline, 'top_decile_lift', 2)}"
        )
    console.print(
        f"[bold]Recommended: {selection.recommended}[/]. On the whole stream (the periods that "
        f"chose it too), median (worst): {figures}."
    )
    if evidence.first_champion_refused:
        console.print(
            f"Its first champion failed its gate on {evidence.first_champion_refused} of "
            f"{len(result.variants)} variants; {evidence.unserved_windows} windows in all were "
            "served by no model (scored at the known positive rate)."
        )
    changes = flat_keys(result.patch)
    console.print(
        "Its params patch: "
        + (
            ", ".join(f"{key}={value}" for key, value in changes.items())
            or "none: params.yaml is it"
        )
    )
    for name, path in result.files.items():
        console.print(f"  {name}: {path}")
    console.print(result.mlflow_run and f"MLflow: {result.mlflow_run}" or result.mlflow_note)
    console.print(f"Done in {result.seconds:.0f} s.")


@serve_app.command("start")
def serve_start() -> None:
    """Start MLServer on the registry's aliases (or reload it if it runs); with none, empty."""
    with Context.from_environment() as ctx:
        _start_serving(ctx)
        _print_serving(ctx)


@serve_app.command("reload")
def serve_reload() -> None:
    """Re-resolve the champion/challenger aliases and load their versions, without downtime."""
    with Context.from_environment() as ctx:
        if ctx.settings.serving.url is None and deployment.wake_reconciler(ctx):
            console.print(
                "The reconciler serves the registry's aliases now: `telescore serve status`."
            )
            return
        reloads = deployment.reload_serving(ctx)
    for reloaded in reloads:
        console.print(
            f"{reloaded.model}: version {reloaded.previous_version} -> {reloaded.version}"
        )


@serve_app.command("reconcile")
def serve_reconcile(
    repository: Annotated[
        Path | None,
        typer.Option(help="The local MLServer's model repository; default: the embedded one's."),
    ] = None,
    url: Annotated[
        str | None,
        typer.Option(help="The local MLServer's REST URL (this replica's, not a Service's)."),
    ] = None,
    slot: Annotated[
        str,
        typer.Option(
            envvar="TELESCORE_MLSERVER_SLOT",
            help="all: champion and challenger; challenger: @challenger as `telemarketing`.",
        ),
    ] = "all",
    status_file: Annotated[
        Path | None, typer.Option(help="Rewritten after every look (its health).")
    ] = None,
) -> None:
    """Keep the local MLServer serving the registry's aliases and offsets (foreground)."""
    if slot not in ("all", "challenger"):
        raise typer.BadParameter(f"slot must be 'all' or 'challenger', not {slot!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request, every tick
    # The reconciler runs in a process of its own: this context is its registry's.
    with Context.from_environment() as ctx:
        config = reconciler.ReconcilerConfig(
            repository=repository or deployment.repository_dir(ctx),
            serving_url=url or deployment.local_serving_url(ctx),
            slot="challenger" if slot == "challenger" else "all",
            interval=ctx.settings.serving.reconcile_interval,
            status_file=status_file,
            control_token=ctx.serving_control_token,
        )
        reconciler.run_until_signalled(config, ctx.registry)


@serve_app.command("status")
def serve_status() -> None:
    """Show what MLServer serves."""
    with Context.from_environment() as ctx:
        _print_serving(ctx)


@outcomes_app.command("import")
def outcomes_import(
    path: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="A .csv, .json or .jsonl file.")
    ],
) -> None:
    """Record the outcomes of a file (prediction_id, subscribed); exit 1 if a row is rejected.

    Rows whose prediction is not logged yet are recorded as pending, and listed.
    """
    try:
        with Context.from_environment() as ctx:
            store = ctx.store(OutcomeStore)
            report = outcomes.import_outcomes(store, path, expiry=ctx.pending_outcome_expiry)
    except MalformedBatchError as error:
        console.print(f"[red]{path} cannot be read[/]: {error}. Nothing was recorded.")
        raise typer.Exit(code=1) from None
    except PyMongoError as error:
        console.print(
            f"[red]MongoDB is unreachable[/] ({type(error).__name__}): run the import again "
            "(rows recorded before it failed will count as already recorded)."
        )
        raise typer.Exit(code=1) from None
    console.print(
        f"{path}: {report.rows} rows, {report.accepted} recorded, "
        f"{report.already_recorded} already recorded, {len(report.pending)} pending, "
        f"{len(report.rejected)} rejected"
    )
    if report.pending:
        _print_rows(
            "Pending rows: joined to their predictions once these are logged",
            ("line", "prediction id"),
            [(str(row.line), row.prediction_id) for row in report.pending],
        )
    if report.rejected:
        _print_rows(
            "Rejected rows",
            ("line", "prediction id", "reason"),
            [(str(row.line), row.prediction_id or "", row.reason) for row in report.rejected],
        )
        raise typer.Exit(code=1)


@outcomes_app.command("sweep")
def outcomes_sweep() -> None:
    """Join pending outcomes whose prediction is logged now; keep aside those that expired.

    Every monitor run does this first; this command does it on demand.
    """
    try:
        with Context.from_environment() as ctx:
            store = ctx.store(OutcomeStore)
            report = outcomes.sweep_pending_outcomes(store, expiry=ctx.pending_outcome_expiry)
    except PyMongoError as error:
        console.print(f"[red]MongoDB is unreachable[/] ({type(error).__name__}): nothing swept.")
        raise typer.Exit(code=1) from None
    console.print(
        f"Pending outcomes: {report.confirmed} joined their prediction, "
        f"{len(report.expired)} expired (kept aside in outcomes_expired), "
        f"{report.pending} still pending"
    )
    if report.expired:
        _print_rows("Expired outcomes", ("prediction id", "reason"), list(report.expired))


def _print_rows(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def _print_serving(ctx: Context) -> None:
    serving = deployment.status(ctx)
    if not serving.answering:
        console.print(f"MLServer is not answering at {serving.url}")
        raise typer.Exit(code=1)
    if not serving.models:
        console.print(f"MLServer answers at {serving.url} and serves no model: no champion yet")
    for name, version in serving.models.items():
        console.print(f"{name}: version {version} at {serving.url}/v2/models/{name}/infer")
    log = serving.prediction_log
    if log:
        console.print(
            f"prediction log: {log.get('journaled_total', 0):.0f} journaled, "
            f"{log.get('spooled', 0):.0f} waiting for MongoDB, "
            f"{log.get('written_total', 0):.0f} written, "
            f"{log.get('dead_lettered_total', 0):.0f} set aside, "
            f"{log.get('refused_total', 0):.0f} refused (disk full); "
            f"MongoDB {'up' if log.get('mongodb_up', 1) else 'DOWN'}"
        )
    reconciling = deployment.reconciler_report(ctx)
    if reconciling:
        console.print(reconciling)


def _print_training(outcome: dict[str, Any], urls: platform.PlatformUrls) -> None:
    result = outcome.get("result") or {}
    table = Table(title="Training run", show_header=False)
    table.add_row("Prefect flow run", f"{urls.prefect}/runs/flow-run/{outcome['flow_run_id']}")
    table.add_row("State", outcome["state"])
    if result:
        name, version = result["model"], result["version"]
        table.add_row("Registered model", f"{urls.mlflow}/#/models/{name}/versions/{version}")
        aliases = "champion, challenger" if result["promoted"] else "none (gate not passed)"
        if result.get("released"):
            aliases = f"challenger, in a {result['release_mode']} release"
        table.add_row("Aliases", aliases)
        table.add_row("Decision", result["reason"])
        table.add_row("Holdout ROC AUC", f"{result['holdout_roc_auc']:.4f}")
    console.print(table)


def _print_sample(sample: demo_steps.ScoredSample) -> None:
    scores = sample.scores
    table = Table(title=f"Scored by {scores.model_name} v{scores.model_version}")
    table.add_column("prediction id", no_wrap=True, min_width=36)
    for column in ("age", "job", "probability", "outside training range"):
        table.add_column(column)
    for prediction_id, record, score, flags in zip(
        scores.prediction_ids, sample.records, scores.scores, scores.out_of_range, strict=True
    ):
        table.add_row(
            prediction_id, str(record["age"]), str(record["job"]), f"{score:.3f}", ", ".join(flags)
        )
    console.print(table)


def _close_the_loop(ctx: Context, app_url: str, dataset: Path) -> None:
    """Score a sample, follow it into MongoDB, report its outcomes."""
    sample = demo_steps.score_sample(ctx.serving, dataset)
    _print_sample(sample)
    with console.status("Waiting for the shipper to move them from the journal to MongoDB..."):
        logged = demo_steps.wait_until_logged(
            ctx.store(PredictionStore), sample.scores.prediction_ids
        )
    console.print(
        f"MongoDB collection 'predictions' holds {logged} of these {len(sample.records)} "
        "predictions, each under its prediction id: outcomes cite them."
    )
    with httpx.Client(base_url=app_url, timeout=30) as app_client:
        recorded = demo_steps.report_outcomes(ctx, app_client, sample)
    console.print(f"Outcomes API: {recorded} outcomes recorded for them.")


ALERT_WAIT_SECONDS = 150.0
"""How long the simulation waits for the alerts its events fire: a rule is evaluated every 15 s
on metrics scraped every 15 s, and Alertmanager holds a new group for 30 s (`group_wait`)."""


def _simulate(ctx: Context, config: simulation.SimulationConfig) -> simulation.SimulationResult:
    """Stream the slice through the live platform with a progress bar; print what it did."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    since = datetime.now(UTC)
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one bar: the simulation's
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("simulation", total=config.windows)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = simulation.run_simulation(ctx, config, progress)
    _print_simulation(result, ctx)
    expected = simulation.expected_alerts(result)
    log = AlertLog(alert_log_path(ctx.state_dir))
    with console.status(
        f"Waiting for Alertmanager to deliver {', '.join(expected) or 'alerts'}..."
    ):
        firing = simulation.wait_for_alerts(
            log, expected, since, ALERT_WAIT_SECONDS if expected else 0.0
        )
    delivered = sorted({each["alertname"] for each in firing})
    missing = sorted(set(expected) - set(delivered))
    console.print(
        "Alerts delivered to the local receiver during the simulation: "
        + (", ".join(delivered) or "none")
        + (f"; [yellow]not (yet) delivered[/]: {', '.join(missing)}" if missing else "")
        + " (`telescore alerts`, the app's ops view: GET /alerts)"
    )
    return result


def _print_simulation(result: simulation.SimulationResult, ctx: Context) -> None:
    first, last = result.rows
    table = Table(
        title=(
            f"Simulation: dataset rows {first:,}-{last:,} through the live platform, "
            f"{len(result.windows)} windows in {result.seconds:.0f} s"
        )
    )
    for column in ("window", "release judged", "monitor decision", "why"):
        table.add_column(column)
    for each in result.windows:
        table.add_row(
            str(each["window"] + 1),
            each["release"] or "",
            each["decision"],
            (each["reason"] or "")[:120],
        )
    console.print(table)
    prefect = ctx.prefect_api_url.removesuffix("/api")
    for each in result.retrains:
        release = each.get("release")
        ended = (
            f"{release['mode']} release {release['outcome'] or 'undecided'}"
            + (f" ({release['reason']})" if release["reason"] else "")
            if release
            else (
                "champion at once"
                if each["promoted"]
                else f"not released: {each['promotion'] or 'no reason recorded'}"
            )
        )
        console.print(
            f"Retrain after window {each['window'] + 1}: {each['reason']} -> training run "
            f"{each['state']} ({prefect}/runs/flow-run/{each['flow_run_id']}), "
            + (
                f"version {each['version']} ({ctx.tracking_uri}/#/models/"
                f"{ctx.registry.model_name}/versions/{each['version']}): {ended}"
                if each["version"]
                else f"no version: {(each['promotion'] or '')[:200]}"
            )
        )
    summary = result.release_summary
    console.print(
        f"Releases: {summary.get('started', 0)} started, {summary.get('promote', 0)} promoted, "
        f"{summary.get('rollback', 0)} rolled back, {summary.get('superseded', 0)} superseded, "
        f"{summary.get('undecided', 0)} undecided. Evidently UI: "
        f"http://{ctx.host}:{ctx.settings.evidently.port} (project telemarketing; each decision "
        f"on its Releases panel). In the web app: the latest decision on its page "
        f"http://{ctx.host}:{ctx.settings.api.port}, every one at /releases/decisions."
    )


@app.command()
def simulate(
    windows: Annotated[int, typer.Option(min=1, help="How many windows.")] = (
        simulation.DEFAULT_WINDOWS
    ),
    window_rows: Annotated[int, typer.Option(min=1, help="Calls per window.")] = (
        simulation.DEFAULT_CLOCK.window_rows
    ),
    label_delay_rows: Annotated[
        int, typer.Option(min=0, help="Outcomes are reported this many calls later.")
    ] = simulation.DEFAULT_CLOCK.label_delay_rows,
    start_row: Annotated[
        int | None,
        typer.Option(
            min=0, help="The slice's first row; default: the first one training holds out."
        ),
    ] = None,
    params_file: Annotated[Path, typer.Option(help="The live deployments' params file.")] = Path(
        "params.yaml"
    ),
    monitor_by_deployment: Annotated[
        bool,
        typer.Option(help="Monitor each window by a deployment run on the worker (~25 s each)."),
    ] = False,
) -> None:
    """Stream a compressed slice of the real calls through the live platform (`telescore up`)."""
    root = project_root()
    params = params_file if params_file.is_absolute() else root / params_file
    clock = StreamClock(
        window_rows=window_rows,
        label_delay_rows=label_delay_rows,
        request_rows=simulation.DEFAULT_CLOCK.request_rows,
        monitor_by_deployment=monitor_by_deployment,
    )
    config = simulation.SimulationConfig(
        data=root / DATASET_FILE, params=params, windows=windows, start_row=start_row, clock=clock
    )
    with Context.from_environment() as ctx:
        if not deployment.status(ctx).answering:
            console.print(
                "[red]MLServer is not answering[/]: start the platform with `telescore up`."
            )
            raise typer.Exit(code=1)
        _simulate(ctx, config)


def _seed_prospects(ctx: Context, root: Path) -> None:
    with console.status("Seeding the 41,188 prospects of the dataset..."):
        store = ctx.store(ProspectStore, read_timeout_ms=campaign.SEED_READ_TIMEOUT_MS)
        stored, revision = campaign.seed_prospects(store, root / DATASET_FILE)
    console.print(f"{stored} prospects seeded; indicators revision {revision} in force.")


def _outage_drill(ctx: Context, urls: platform.PlatformUrls, meanwhile: Callable[[], None]) -> None:
    """Stop MLServer until MLServerDown is delivered, then serve again; run `meanwhile` between."""
    alert = demo_steps.OUTAGE_ALERT
    console.print(
        f"[bold]Outage drill[/]: stopping MLServer (as `telescore down` does) until Alertmanager "
        f"delivers {alert} to the local receiver: Prometheus finds its port closed at the next "
        "scrape (15 s), the rule waits `for: 1m`, Alertmanager `group_wait` 30 s."
    )
    told = [0.0]

    def progress(waited: float) -> None:
        if waited - told[0] >= 15:
            told[0] = waited
            console.print(f"  ... waiting for {alert}: {waited:.0f} s since the stop")

    try:
        drill = demo_steps.outage_drill(ctx, project_root() / DATASET_FILE, meanwhile, progress)
    except demo_steps.AlertNotDeliveredError as error:
        console.print(f"[red]Not delivered:[/] {error}. MLServer is serving again.")
        raise typer.Exit(code=1) from None
    delivered, scores = drill.alert, drill.sample.scores
    console.print(
        f"[green]{alert} delivered[/] {drill.seconds_to_alert:.0f} s after the stop: "
        f'"{delivered["summary"]}" ({delivered["severity"]}). See it in the app\'s ops view '
        f"{urls.api}/alerts (logged in as the demo user), in Alertmanager {urls.alertmanager}, "
        f"with `telescore alerts`, or in {ctx.state_dir / 'logs' / 'alert-receiver.log'}.\n"
        f"MLServer started again and ranks: {len(scores.scores)} prospects scored by "
        f"{scores.model_name} version {scores.model_version}."
    )


@app.command()
def demo() -> None:
    """Bring the platform up, train once, stream calls through the loop, say where to look."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    root = project_root()
    with Context.from_environment() as ctx:
        with console.status("Starting MLflow, Prefect, MongoDB (nx-27017) and a Prefect worker..."):
            urls = platform.bring_up(ctx, root)
        # The demo's own slice: one where the shipped policy and gates act within six windows.
        simulated = simulation.SimulationConfig(
            data=root / DATASET_FILE,
            params=root / "params.yaml",
            start_row=demo_steps.DEMO_START_ROW,
        )
        params, _, first_streamed = simulation.write_inputs(simulated, ctx.state_dir)
        console.print(
            f"[green]Services up.[/] Running the training deployment on the {first_streamed:,} "
            "earliest calls (about a minute)..."
        )
        outcome = orchestrator.run_deployment(
            orchestrator.TRAINING_DEPLOYMENT, ctx.prefect_api, {"params_file": str(params)}
        )
        _print_training(outcome, urls)
        if not outcome["completed"]:
            console.print(f"[red]Training did not complete[/]; see {ctx.state_dir / 'logs'}")
            raise typer.Exit(code=1)
        served = _start_serving(ctx)
        _start_monitoring(ctx, urls)
        if served:
            try:
                _close_the_loop(ctx, urls.api, root / DATASET_FILE)
            except demo_steps.PredictionsNotLoggedError as error:
                console.print(f"[red]Not logged:[/] {error}")
                raise typer.Exit(code=1) from None
            console.print(
                f"Streaming the {simulated.windows * simulated.clock.window_rows:,} calls from "
                f"row {first_streamed:,} on (the demo's slice: jobs/demo.py DEMO_START_ROW) "
                "through the live platform: every window scored, its outcomes reported, judged "
                "by the monitor and the promotion..."
            )
            _simulate(ctx, simulated)
        if served and not urls.monitoring_missing:
            # The prospects are seeded while Prometheus and Alertmanager take their minutes.
            _outage_drill(ctx, urls, lambda: _seed_prospects(ctx, root))
        else:
            _seed_prospects(ctx, root)
        login = demo_steps.give_demo_login(ctx)
        _print_urls(urls, ctx)
    console.print(
        f"Log in to the web app at [bold]{urls.api}[/] as [bold]{login.user}[/] "
        f"with password [bold]{login.password}[/] (role ops).\n"
        "Release a new model: [bold]telescore train[/] starts a shadow release of a model "
        "that passes the gates ([bold]telescore routing set canary --weight 20[/] turns it "
        "into a canary); [bold]telescore promote[/] judges it on the outcomes callers "
        "record, [bold]telescore rollback[/] undoes a promotion."
    )
    console.print("Stop everything with [bold]telescore down[/].")
