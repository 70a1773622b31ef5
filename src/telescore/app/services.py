"""The parts the routes depend on, built once from the app's context and a scoring service.

The lifespan builds them on MLServer's scoring service; the app's fast tests build them on a
stand-in, and hand them to the routes through `app.dependency_overrides`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from telescore.app.security import ApiKeys, SessionChecks
from telescore.core.login_throttle import LoginLimits
from telescore.io.access_store import AccessStore
from telescore.io.call_list_store import CallListStore
from telescore.io.context import Context
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prospect_store import ProspectStore
from telescore.io.registry import Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient
from telescore.jobs.call_lists import SharedCallLists
from telescore.jobs.calls import CallRecorder
from telescore.jobs.explanations import Explainer
from telescore.jobs.logins import LoginGuard
from telescore.jobs.loop_status import LoopStatusReader, served_by
from telescore.jobs.prospect_scoring import ProspectScorer
from telescore.jobs.ranking import CallListCache
from telescore.jobs.scoring import ScoringService


@dataclass(frozen=True)
class Services:
    """What the routes use, one part each; `deps.py` has a dependency per part."""

    outcome_store: OutcomeStore
    prospect_store: ProspectStore
    access_store: AccessStore
    release_store: ReleaseStore
    serving: ServingClient
    """MLServer, asked only whether it is ready: scoring goes through `scoring`."""
    scoring: ScoringService
    scorer: ProspectScorer
    call_list: CallListCache
    calls: CallRecorder
    explainer: Explainer
    api_keys: ApiKeys
    logins: LoginGuard
    """Password checks, throttled per user and address, bounded in parallel."""
    session_checks: SessionChecks
    """Which session cookies are live (users' epochs and roles, cached briefly)."""
    loop: LoopStatusReader
    """The loop's state (monitor, retrains, releases), read at each scrape of /metrics."""


def build_services(
    ctx: Context,
    scoring: ScoringService,
    serving: ServingClient,
    registry: Callable[[], Registry] | None = None,
) -> Services:
    """Build the parts on the context's stores and on `scoring`.

    `registry` opens the registry the explainer loads models from: the context's by default.
    """
    api = ctx.settings.api
    prospects = ctx.store(ProspectStore)
    outcomes = ctx.store(OutcomeStore)
    access = ctx.store(AccessStore)
    scorer = ProspectScorer(scoring, prospects)
    # The registry is opened on the first page view: a client sets MLflow's URIs process-wide.
    explainer = Explainer(registry or (lambda: ctx.registry), scorer.model_inputs)
    call_list = CallListCache(
        scorer,
        prospects,
        # One list per cache key for every replica, scored by one of them.
        shared=SharedCallLists(ctx.store(CallListStore)),
        explainer=explainer,
    )
    return Services(
        outcome_store=outcomes,
        prospect_store=prospects,
        access_store=access,
        release_store=ctx.store(ReleaseStore),
        serving=serving,
        scoring=scoring,
        scorer=scorer,
        call_list=call_list,
        # A call stored here shows on this replica's list at once.
        calls=CallRecorder(
            prospects,
            outcomes,
            outcome_expiry=ctx.pending_outcome_expiry,
            on_recorded=call_list.mark_called,
        ),
        explainer=explainer,
        api_keys=ApiKeys(access),
        logins=LoginGuard(
            access,
            LoginLimits(
                window=timedelta(minutes=api.login_window_minutes),
                per_user=api.login_failures_per_user,
                per_address=api.login_failures_per_address,
            ),
            max_parallel_hashes=api.max_parallel_password_checks,
        ),
        session_checks=SessionChecks(access),
        # Read at every scrape: answers within a scrape's timeout, or none is exported.
        loop=LoopStatusReader(
            ctx.store(MonitoringStore, timeout_ms=1500, read_timeout_ms=5000),
            ctx.store(ReleaseStore),
            outcomes,
            served_by(scoring),
        ),
    )
