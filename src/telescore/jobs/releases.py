"""Releases: start one, route traffic between champion and challenger, promote or roll back.

A release starts one way, whoever asks: `start_release` makes a version `challenger` and sets
the routing (shadow or canary) with `set_routing`, the function `telescore routing set` and
the app's `PUT /routing` call. The training flow starts one for every retrained candidate that
passes the offline gate (`jobs.training.release_candidate`). `run_promotion` (the deployment
`promote-telemarketing`, scheduled by `telescore up`) then judges it on live outcomes.

The monitor holds a scheduled retrain while a release is under way (`release_under_way`,
`RetrainingPolicy.retrain_during_release` "hold", the default), so a release normally ends in a
decision. A challenger still undecided when a newer candidate is released anyway (a retrain
asked for by hand, or the policy "supersede") is superseded: the newer one
is trained on everything the older one saw and more, so it is the one worth testing. The
superseded version is tagged `release.superseded_by`, a `superseded` decision is recorded in
`release_decisions`, and the release starts again (a new routing revision): the evidence of
the old challenger does not count for the new one.

Where the guards' figures come from (`guard_figures`): the error rate's requests and server
faults and the p99 latency are PromQL over every MLServer replica that Prometheus scrapes, as
Flagger and Argo Rollouts analyse a canary (`io.prometheus.serving_figures`). When Prometheus
does not answer, or scrapes no MLServer, they come from the counts every MLServer process stores
in MongoDB (`serving_counters`) and the prediction log's latencies, and the decision record says
so and why (`guards_source`, `guards_fallback`). Quality always comes from the prediction log
and the outcomes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from telescore.core.predictions import ID, TIMESTAMP
from telescore.core.prospects import outcome_label
from telescore.core.release import ArmEvidence, ReleaseRules, decide_release
from telescore.core.routing import RoutingConfig
from telescore.core.serving_counts import ReleaseCounts, counts_since
from telescore.io.context import Context
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prometheus import (
    MonitoringApiError,
    PrometheusClient,
    scrapes_mlserver,
    serving_figures,
)
from telescore.io.prospect_store import ProspectStore
from telescore.io.registry import CHALLENGER, CHAMPION, PREVIOUS, Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_counter_store import ServingCounterStore
from telescore.jobs.scoring import SERVED_MODELS, read_routing
from telescore.jobs.serving import serve_new_champion
from telescore.validation.evidently_dashboards import MonitoringWorkspace

logger = logging.getLogger(__name__)

FORGET_SILENT_SECONDS = 3600.0
"""A process's counts silent this long before the release began are deleted (they count 0).

Live processes store theirs at least every minute (`ShipperConfig.counters_heartbeat`).
"""


GuardsSource = Literal["prometheus", "serving_counters"]
"""Where the guards' figures came from: PromQL over every replica, or the MongoDB counters."""


@dataclass(frozen=True)
class GuardFigures:
    """The figures the release's guards judge, per served model name, and their source."""

    source: GuardsSource
    counts: Mapping[str, ReleaseCounts]
    """Requests, server faults and refusals since the release began, over every replica."""
    latencies_ms: Mapping[str, tuple[float, float]]
    """(p50, p99) time per request; a model missing here is timed from the prediction log."""
    fallback: str | None = None
    """Why the figures are not Prometheus's, when Prometheus was asked and could not say."""


def set_routing(store: ReleaseStore, config: RoutingConfig, by: str) -> RoutingConfig:
    """Store a routing as the one in force; return it with its revision."""
    stamped = config.model_copy(update={"updated_at": datetime.now(UTC), "updated_by": by})
    document = stamped.model_dump(exclude={"revision"})
    revision = store.set_routing(document)
    return stamped.model_copy(update={"revision": revision})


@dataclass(frozen=True)
class ReleaseOutcome:
    """What one promotion run decided and did."""

    action: str
    """promote, rollback, wait, or idle (no release under way)."""
    reason: str
    champion: str | None
    challenger: str | None
    decision_id: str | None
    reloaded: list[str]
    labelled_rows: int | None = None
    """Labelled rows of the challenger's arm the decision was taken on (None: idle)."""
    guards_source: GuardsSource | None = None
    """Where the error rate and latency guards' figures came from (None: idle)."""


@dataclass(frozen=True)
class ReleaseStart:
    """A release started: who is challenger, how it is routed, and whom it replaced."""

    challenger: str
    mode: str
    routing_revision: int | None
    superseded: str | None
    """The undecided challenger this release replaced, if any."""
    reloaded: list[str]


def release_under_way(registry: Registry, releases: ReleaseStore) -> str | None:
    """Return the challenger of the release under way, None when none is.

    A release is under way while the routing is shadow or canary and a challenger distinct from
    the champion is registered: `run_promotion` judges it, and the monitor holds a retrain for
    it (`RetrainingPolicy.retrain_during_release`).
    """
    champion = registry.alias_version(CHAMPION)
    challenger = registry.alias_version(CHALLENGER)
    if (
        read_routing(releases).mode == "champion"
        or champion is None
        or challenger is None
        or challenger.version == champion.version
    ):
        return None
    return challenger.version


def start_release(ctx: Context, version: str, config: RoutingConfig, by: str) -> ReleaseStart:
    """Make `version` the challenger and route to it (shadow or canary); supersede any other.

    The champion is untouched: `run_promotion` decides on live outcomes. Every MLServer's
    reconciler loads the new challenger within seconds (the local one is woken here).
    """
    if config.mode == "champion":
        raise ValueError("mode: a release routes to the challenger (shadow or canary)")
    registry = ctx.registry
    releases = ctx.store(ReleaseStore)
    champion = registry.alias_version(CHAMPION)
    if champion is None or champion.version == version:
        raise ValueError(f"version {version}: a release needs a champion other than itself")
    undecided = registry.alias_version(CHALLENGER)
    routing = read_routing(releases)
    superseded = None
    if (
        routing.mode != "champion"
        and undecided is not None
        and undecided.version not in (champion.version, version)
    ):
        superseded = undecided.version
        reason = f"superseded by version {version} before a decision"
        registry.tag_version(superseded, "release.superseded_by", version)
        releases.record_decision(
            {
                "decided_at": datetime.now(UTC),
                "action": "superseded",
                "reason": reason,
                "champion_version": champion.version,
                "challenger_version": superseded,
                "superseded_by": version,
                "routing_revision": routing.revision,
                "routing_mode": routing.mode,
                "release_since": routing.updated_at,
                "decided_by": by,
            }
        )
        logger.info("challenger %s %s", superseded, reason)
    registry.set_alias(CHALLENGER, version)
    registry.tag_version(version, "release.started_by", by)
    stored = set_routing(releases, config, by)
    reloaded = [each.model for each in serve_new_champion(ctx)]
    return ReleaseStart(version, stored.mode, stored.revision, superseded, reloaded)


def repeated_outcomes(calls: Sequence[Mapping[str, Any]]) -> set[str]:
    """Return the prediction ids of the calls that labelled a prospect already labelled.

    A release counts one outcome per prospect, its first: a caller's key may score the same
    prospect again and again and record a result for each fresh prediction, which would add
    as many labelled rows as it likes to one arm. `calls` come oldest first; a call with no
    answer labels nothing, so the call after it still counts.
    """
    labelled_prospects: set[str] = set()
    repeated: set[str] = set()
    for call in calls:
        if outcome_label(call["result"]) is None:
            continue
        if call["prospect_id"] in labelled_prospects:
            repeated.add(call["prediction_id"])
        labelled_prospects.add(call["prospect_id"])
    return repeated


def release_evidence(
    labelled: pd.DataFrame,
    calls: Sequence[Mapping[str, Any]],
    guards: GuardFigures,
    routing: RoutingConfig,
    champion: str,
    challenger: str,
) -> tuple[ArmEvidence, ArmEvidence, bool]:
    """Build both arms' evidence from the release's logged predictions, outcomes and calls.

    `labelled`: predictions since the release began, with `subscribed` joined (None: no
    outcome yet). In shadow mode the challenger's answers pair with the champion's shown ones
    by (request id, row), and so with their outcomes: the comparison is paired.
    `guards`: requests, server failures and refused requests per served model since the
    routing changed, over every MLServer process, and their latencies when measured there
    (`guard_figures`); otherwise the latencies are the prediction log's.
    A prospect's outcomes after its first count nothing (`repeated_outcomes`).
    """
    repeated = repeated_outcomes(calls)
    calls = [call for call in calls if call["prediction_id"] not in repeated]
    labelled = labelled[~labelled[ID].isin(repeated)]
    shown = labelled[labelled["route"].isin(["champion", "challenger"])]
    arms = {
        "champion": shown[(shown["route"] == "champion") & (shown["model_version"] == champion)],
        "challenger": shown[
            (shown["route"] == "challenger") & (shown["model_version"] == challenger)
        ],
    }
    paired = routing.mode == "shadow"
    if paired:
        shadow = labelled[
            (labelled["route"] == "shadow") & (labelled["model_version"] == challenger)
        ]
        both = shadow[[ID, "request_id", "row", "score", "latency_ms"]].merge(
            arms["champion"][[ID, "request_id", "row", "score", "latency_ms", "subscribed"]],
            on=["request_id", "row"],
            suffixes=("", "_shown"),
        )
        columns = [ID, "request_id", "score", "latency_ms", "subscribed"]
        arms["challenger"] = both[columns]
        shown_columns = [
            f"{ID}_shown",
            "request_id",
            "score_shown",
            "latency_ms_shown",
            "subscribed",
        ]
        arms["champion"] = both[shown_columns].set_axis(columns, axis=1)
    calls_by_prediction = {call["prediction_id"]: call["result"] for call in calls}
    evidence = {}
    for arm, rows in arms.items():
        labelled_rows = rows[rows["subscribed"].notna()]
        counts = guards.counts.get(SERVED_MODELS[arm], ReleaseCounts())
        results = [calls_by_prediction[i] for i in rows[ID] if i in calls_by_prediction]
        shown_arm = not (paired and arm == "challenger")
        measured = guards.latencies_ms.get(SERVED_MODELS[arm])
        if measured is None:
            # One latency per request (every row of a request carries the request's own).
            per_request = rows.drop_duplicates("request_id") if "request_id" in rows else rows
            latencies = (
                per_request["latency_ms"].to_numpy(dtype=float) if len(rows) else np.zeros(1)
            )
            measured = (float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)))
        evidence[arm] = ArmEvidence(
            scores=labelled_rows["score"].to_numpy(dtype=float),
            labels=labelled_rows["subscribed"].astype(int).to_numpy(),
            requests=counts.requests,
            errors=counts.failures,
            refused=counts.refused,
            latency_p50_ms=measured[0],
            latency_p99_ms=measured[1],
            calls=len(results) if shown_arm else None,
            subscriptions=sum(r == "subscribed" for r in results) if shown_arm else None,
        )
    return evidence["champion"], evidence["challenger"], paired


def fleet_serving_counts(
    counters: ServingCounterStore, releases: ReleaseStore, routing: RoutingConfig
) -> dict[str, ReleaseCounts]:
    """Return the request counts per served model since `routing` began, over every process.

    Each MLServer process's shipper stores its counts about every second (`serving_counters`);
    the counts stored as the routing changed are the baseline (`core/serving_counts.py`).
    """
    return counts_since(counters.processes(), releases.serving_baseline(routing.revision))


def prometheus_guard_figures(
    prometheus: PrometheusClient,
    versions: Mapping[str, str],
    start: datetime,
    end: datetime,
) -> GuardFigures:
    """Return the guards' figures of each served model (name: version) from PromQL.

    Raises MonitoringApiError when Prometheus does not answer, refuses a query, or scrapes no
    MLServer at all (a Prometheus that sees none would report no traffic, for ever).
    """
    if not scrapes_mlserver(prometheus):
        raise MonitoringApiError("Prometheus scrapes no MLServer (no target of job mlserver)")
    counts: dict[str, ReleaseCounts] = {}
    latencies: dict[str, tuple[float, float]] = {}
    for model, version in versions.items():
        figures = serving_figures(prometheus, model, version, start, end)
        counts[model] = ReleaseCounts(figures.requests, figures.failures, figures.refused)
        if figures.latency_p50_ms is not None and figures.latency_p99_ms is not None:
            latencies[model] = (figures.latency_p50_ms, figures.latency_p99_ms)
    return GuardFigures("prometheus", counts, latencies)


def guard_figures(
    ctx: Context,
    routing: RoutingConfig,
    versions: Mapping[str, str],
    start: datetime,
    end: datetime,
    source: GuardsSource = "prometheus",
) -> GuardFigures:
    """Return the guards' figures since the release began: Prometheus's, else the counters'.

    Prometheus down, or blind to MLServer, makes the guards fall back on the MongoDB counters
    rather than wait, and the fallback is recorded with its reason. Flagger halts a canary's
    advancement when a metric query fails, because it has no other source; here the counters
    are the same requests, counted by every process and summed over all of them, so the guards
    still see the whole fleet, and a challenger that fails requests is rolled back while
    Prometheus is down instead of serving until it is back (the guards are judged early for
    exactly that). A platform run without Prometheus (`make tools` not run) still releases.
    """
    fallback = None
    if source == "prometheus":
        try:
            return prometheus_guard_figures(ctx.prometheus, versions, start, end)
        # OSError: the embedded login could not be kept under the state folder (read-only).
        except (MonitoringApiError, OSError) as error:
            fallback = f"Prometheus at {ctx.prometheus_url}: {error}"
            logger.warning("release guards from the serving counters: %s", fallback)
    releases = ctx.store(ReleaseStore)
    counters = ctx.store(ServingCounterStore)
    since = routing.updated_at or datetime.fromtimestamp(0, UTC)
    # Processes silent since well before the release count zero in it: forget them.
    counters.forget_before(since.timestamp() - FORGET_SILENT_SECONDS)
    counts = fleet_serving_counts(counters, releases, routing)
    return GuardFigures("serving_counters", counts, {}, fallback)


def release_predictions(outcomes: OutcomeStore, since: datetime, now: datetime) -> pd.DataFrame:
    """Return the predictions logged from `since` (the routing's change) to `now`, outcomes joined.

    The query asks whole seconds (nx-27017 compares sub-second bounds of a date range wrongly)
    and the rows are then cut at `since` exactly: nothing scored before the routing changed
    counts, and nothing scored after it is lost, also in the rest of that second (a compressed
    window of the replay can be scored within it).
    """
    start = since.replace(microsecond=0)
    end = now.replace(microsecond=0) + timedelta(seconds=1)
    rows = [row for chunk in outcomes.labelled_predictions(start, end) for row in chunk]
    return pd.DataFrame([row for row in rows if row[TIMESTAMP] >= since])


def run_promotion(
    ctx: Context,
    rules: ReleaseRules,
    by: str = "promote-telemarketing",
    guards_source: GuardsSource = "prometheus",
) -> ReleaseOutcome:
    """Judge the release under way (canary or shadow), record the decision, and act on it.

    `guards_source`: where the error rate and latency guards are read first (`guard_figures`).
    """
    registry = ctx.registry
    releases = ctx.store(ReleaseStore)
    under_way = release_under_way(registry, releases)
    champion = registry.alias_version(CHAMPION)
    challenger = registry.alias_version(CHALLENGER)
    routing = read_routing(releases)
    if under_way is None or champion is None or challenger is None:
        return ReleaseOutcome(
            "idle",
            "no release under way: routing is champion only, or "
            "no challenger distinct from the champion is registered",
            champion.version if champion else None,
            challenger.version if challenger else None,
            None,
            [],
        )
    outcomes = ctx.store(OutcomeStore, read_timeout_ms=600_000)
    since = routing.updated_at or datetime.fromtimestamp(0, UTC)
    now = datetime.now(UTC)
    labelled = release_predictions(outcomes, since, now)
    guards = guard_figures(
        ctx,
        routing,
        {
            SERVED_MODELS["champion"]: champion.version,
            SERVED_MODELS["challenger"]: challenger.version,
        },
        since,
        now,
        guards_source,
    )
    champion_arm, challenger_arm, paired = release_evidence(
        labelled if not labelled.empty else _no_predictions(),
        ctx.store(ProspectStore).calls_since(since),
        guards,
        routing,
        champion.version,
        challenger.version,
    )
    decision = decide_release(champion_arm, challenger_arm, rules, paired=paired)
    decision_id = releases.record_decision(
        {
            "decided_at": now,
            "action": decision.action,
            "reason": decision.reason,
            "champion_version": champion.version,
            "challenger_version": challenger.version,
            "routing_revision": routing.revision,
            "routing_mode": routing.mode,
            "release_since": since,
            "decision": decision.as_record(),
            "guards_source": guards.source,
            "guards_fallback": guards.fallback,
            "decided_by": by,
        }
    )
    _show_on_dashboard(
        ctx.state_dir,
        decision_id,
        now,
        decision.action,
        decision.reason,
        routing,
        champion.version,
        challenger.version,
    )
    reloaded: list[str] = []
    if decision.action == "promote":
        registry.set_alias(PREVIOUS, champion.version)
        registry.set_alias(CHAMPION, challenger.version)
        registry.delete_alias(CHALLENGER)
        set_routing(releases, RoutingConfig(), by)
        reloaded = [each.model for each in serve_new_champion(ctx)]
    elif decision.action == "rollback":
        registry.tag_version(challenger.version, "release.rejected", decision.reason)
        registry.delete_alias(CHALLENGER)
        set_routing(releases, RoutingConfig(), by)
        reloaded = [each.model for each in serve_new_champion(ctx)]
    rows = decision.challenger.get("labelled_rows")
    return ReleaseOutcome(
        decision.action,
        decision.reason,
        champion.version,
        challenger.version,
        decision_id,
        reloaded,
        int(rows) if rows is not None else None,
        guards.source,
    )


def _show_on_dashboard(
    state_dir: Path,
    decision_id: str,
    decided_at: datetime,
    action: str,
    reason: str,
    routing: RoutingConfig,
    champion: str,
    challenger: str,
) -> None:
    """Add the decision to the monitoring dashboard; a failure there never blocks a release."""
    try:
        MonitoringWorkspace(state_dir / "evidently").record_release(
            decision_id,
            decided_at,
            action=action,
            reason=reason,
            champion=champion,
            challenger=challenger,
            mode=routing.mode,
        )
    except (OSError, ValueError) as error:
        logger.warning("release decision %s not on the dashboard: %s", decision_id, error)


def rollback_to_previous(ctx: Context, by: str) -> tuple[str, str]:
    """Make `previous` the champion again (the champion becomes `previous`).

    Only the registry changes: every MLServer's reconciler serves the new champion within
    seconds (`serve_new_champion` wakes the local one, or reloads where none runs).

    Returns (old champion, new champion). Raises LookupError when there is no `previous`.
    """
    registry = ctx.registry
    champion = registry.alias_version(CHAMPION)
    previous = registry.alias_version(PREVIOUS)
    if champion is None or previous is None:
        raise LookupError("no `previous` version to roll back to (none was ever promoted over)")
    registry.set_alias(CHAMPION, previous.version)
    registry.set_alias(PREVIOUS, champion.version)
    registry.tag_version(champion.version, "release.rolled_back_by", by)
    set_routing(ctx.store(ReleaseStore), RoutingConfig(), by)
    serve_new_champion(ctx)
    return champion.version, previous.version


def _no_predictions() -> pd.DataFrame:
    return pd.DataFrame(
        columns=[
            ID,
            "request_id",
            "row",
            "route",
            "model_version",
            "score",
            "latency_ms",
            "subscribed",
        ]
    )
