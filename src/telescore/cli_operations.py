"""`telescore` commands for operations: seed the web app, users, API keys, indicators, releases.

It also holds `run_deployment_and_report`, which every command that runs a deployment uses.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from telescore.core.access import Role
from telescore.core.prospects import Indicators
from telescore.core.routing import RoutingConfig, RoutingMode
from telescore.io import orchestrator
from telescore.io.access_store import AccessStore, AlreadyExistsError
from telescore.io.context import Context
from telescore.io.datasets import DATASET_FILE
from telescore.io.prospect_store import ProspectStore
from telescore.io.release_store import ReleaseStore
from telescore.jobs import access, campaign, releases, scoring
from telescore.jobs.indicators import read_indicators, set_indicators
from telescore.settings import project_root

console = Console()
user_app = typer.Typer(help="People who log in to the app.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys for programs calling the app.", no_args_is_help=True)
indicators_app = typer.Typer(help="The socio-economic indicators in force.", no_args_is_help=True)
routing_app = typer.Typer(help="How requests split between champion and challenger.")


def seed(
    limit: Annotated[int | None, typer.Option(help="Seed only the first N rows.")] = None,
    dataset: Annotated[
        Path | None, typer.Option(help=f"Dataset file (`;`-separated); default {DATASET_FILE}.")
    ] = None,
) -> None:
    """Load the prospects from the dataset's profile columns (replacing any), and indicators."""
    dataset = dataset or project_root() / DATASET_FILE
    with (
        Context.from_environment() as ctx,
        console.status(f"Loading prospects from {dataset}..."),
    ):
        store = ctx.store(ProspectStore, read_timeout_ms=campaign.SEED_READ_TIMEOUT_MS)
        stored, revision = campaign.seed_prospects(store, dataset, limit)
    console.print(f"{stored} prospects seeded; indicators in force: revision {revision}.")


@user_app.command("add")
def user_add(
    name: str,
    role: Annotated[Role, typer.Option(help="caller, or ops (may change indicators, routing).")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Create a user who logs in to the page (the password is stored hashed, argon2id)."""
    with Context.from_environment() as ctx:
        try:
            access.add_user(ctx.store(AccessStore), name, password, role)
        except (ValueError, AlreadyExistsError) as error:
            console.print(f"[red]Not created:[/] {error}")
            raise typer.Exit(code=1) from None
    console.print(f"User {name} ({role}) created.")


@user_app.command("password")
def user_password(
    name: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
) -> None:
    """Give a user a new password; their open sessions end, on every replica."""
    with Context.from_environment() as ctx:
        try:
            changed = access.set_password(ctx.store(AccessStore), name, password)
        except ValueError as error:
            console.print(f"[red]Not changed:[/] {error}")
            raise typer.Exit(code=1) from None
    _said_for_user(changed, name, "password changed; their sessions are ended")


@user_app.command("role")
def user_role(
    name: str,
    role: Annotated[Role, typer.Option(help="caller, or ops.")],
) -> None:
    """Give a user another role; their open sessions end (they log in again with it)."""
    with Context.from_environment() as ctx:
        changed = access.set_role(ctx.store(AccessStore), name, role)
    _said_for_user(changed, name, f"now {role}; their sessions are ended")


@user_app.command("logout")
def user_logout(name: str) -> None:
    """End every session of a user (a stolen cookie stops working within seconds)."""
    with Context.from_environment() as ctx:
        changed = access.end_sessions(ctx.store(AccessStore), name)
    _said_for_user(changed, name, "sessions ended")


def _said_for_user(changed: bool, name: str, what: str) -> None:
    if not changed:
        console.print(f"[red]No user {name}.[/]")
        raise typer.Exit(code=1)
    console.print(f"User {name}: {what}.")


@apikey_app.command("create")
def apikey_create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. 'crm-sync'.")],
    role: Annotated[
        Role, typer.Option(help="caller, integration (reports outcomes: a CRM), or ops.")
    ] = "caller",
) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    with Context.from_environment() as ctx:
        created = access.create_api_key(ctx.store(AccessStore), name, role)
    console.print(f"API key for {name} ({role}), shown once; send it as the X-API-Key header:")
    typer.echo(created.key)


@indicators_app.command("show")
def indicators_show() -> None:
    """Show the indicators every prospect is scored with now."""
    with Context.from_environment() as ctx:
        record = read_indicators(ctx.store(ProspectStore))
    if record is None:
        console.print("No indicators entered yet: `telescore seed` or `telescore indicators set`.")
        raise typer.Exit(code=1)
    console.print_json(record.model_dump_json())


@indicators_app.command("set")
def indicators_set(
    emp_var_rate: Annotated[float, typer.Option(help="Employment variation rate.")],
    cons_price_idx: Annotated[float, typer.Option(help="Consumer price index.")],
    cons_conf_idx: Annotated[float, typer.Option(help="Consumer confidence index.")],
    euribor3m: Annotated[float, typer.Option(help="Euribor 3-month rate.")],
    nr_employed: Annotated[float, typer.Option(help="Number of employees (thousands).")],
    effective_from: Annotated[str | None, typer.Option(help="ISO date; default today.")] = None,
    by: Annotated[str, typer.Option(help="Who enters them.")] = "cli",
) -> None:
    """Put new indicators in force: the call list is rescored on its next view."""
    indicators = Indicators(
        emp_var_rate=emp_var_rate,
        cons_price_idx=cons_price_idx,
        cons_conf_idx=cons_conf_idx,
        euribor3m=euribor3m,
        nr_employed=nr_employed,
    )
    day = date.fromisoformat(effective_from) if effective_from else datetime.now(UTC).date()
    with Context.from_environment() as ctx:
        revision = set_indicators(ctx.store(ProspectStore), indicators, day, by)
    console.print(f"Indicators revision {revision} in force from {day}.")


@routing_app.callback(invoke_without_command=True)
def routing_show(context: typer.Context) -> None:
    """Show the routing in force."""
    if context.invoked_subcommand is not None:
        return
    with Context.from_environment() as ctx:
        routing = scoring.read_routing(ctx.store(ReleaseStore))
    console.print_json(routing.model_dump_json())


@routing_app.command("set")
def routing_set(
    mode: Annotated[RoutingMode, typer.Argument(help="champion, canary or shadow.")],
    weight: Annotated[float, typer.Option(help="Canary: percent shown the challenger.")] = 0.0,
    by: Annotated[str, typer.Option(help="Who changes it.")] = "cli",
) -> None:
    """Change the routing; the app applies it within a second, with no restart."""
    try:
        config = RoutingConfig(mode=mode, canary_weight=weight)
    except ValueError as error:
        console.print(f"[red]Refused:[/] {error}")
        raise typer.Exit(code=1) from None
    with Context.from_environment() as ctx:
        stored = releases.set_routing(ctx.store(ReleaseStore), config, by)
    console.print(
        f"Routing revision {stored.revision}: {stored.mode}"
        + (f" {stored.canary_weight:g}%" if stored.mode == "canary" else "")
    )


def run_deployment_and_report(
    name: str, api: orchestrator.PrefectApi, parameters: dict[str, Any] | None = None
) -> None:
    """Run a deployment on the worker and print its final state as JSON; exit 1 unless completed."""
    with console.status(f"Running {name} on the worker..."):
        outcome = orchestrator.run_deployment(name, api, parameters)
    console.print_json(json.dumps(outcome, default=str))
    if not outcome["completed"]:
        raise typer.Exit(code=1)


def promote() -> None:
    """Judge the release under way now: promote, roll back or wait (promote-telemarketing)."""
    with Context.from_environment() as ctx:
        run_deployment_and_report(orchestrator.PROMOTION_DEPLOYMENT, ctx.prefect_api)


def rollback(
    by: Annotated[str, typer.Option(help="Who rolls back (kept as a tag).")] = "cli",
) -> None:
    """Serve the `previous` champion again, now: champion only, on every MLServer in seconds."""
    try:
        with Context.from_environment() as ctx:
            old, new = releases.rollback_to_previous(ctx, by)
    except LookupError as error:
        console.print(f"[red]No rollback:[/] {error}")
        raise typer.Exit(code=1) from None
    console.print(f"Champion is version {new} again (version {old} is now `previous`).")


def register(app: typer.Typer) -> None:
    """Add the app's commands to the `telescore` command."""
    app.command()(seed)
    app.add_typer(user_app, name="user")
    app.add_typer(apikey_app, name="apikey")
    app.add_typer(indicators_app, name="indicators")
    app.add_typer(routing_app, name="routing")
    app.command()(promote)
    app.command()(rollback)
