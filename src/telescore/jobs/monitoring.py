"""The monitor: read a window of logged predictions, report with Evidently, decide, trigger.

One run looks at one window (the last complete one, or the one it is given) and at the older
windows whose outcomes arrived since the previous run. Each window becomes one Evidently
snapshot dated to the window and one `monitoring_runs` document; each run takes one retraining
decision, recorded whether it retrains or not.

With no champion (none has passed the gates yet, or it is gone) there is nothing to evaluate:
a run records the window, and triggers training again once enough labelled outcomes arrived
since the last attempt (`core.retraining.decide_cold_start`); the first model that passes is
champion, and MLServer's reconciler serves it.

While a release is under way (a challenger in the shadow or a canary, `jobs.releases.
release_under_way`), a retrain the policy asks for is held until the release is decided
(`RetrainingPolicy.retrain_during_release`), and the decision records why.

When the champion was trained with `calibration.enabled`, each run also refits the log-odds
offset served with it on the newest labelled predictions and has MLServer serve it (the
champion's folder in the model repository, that model reloaded), so the served scores follow
the base rate between retrains. The offset is recorded with the run's decision and the window.
"""

from __future__ import annotations

import functools
import logging
import math
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from telescore.core.features import split_features_label
from telescore.core.monitoring import MonitoringParams, Window
from telescore.core.outcomes import PENDING_EXPIRY
from telescore.core.params import CalibrationParams, TrainingParams
from telescore.core.predictions import FEATURES, MODEL_VERSION, ROUTE, SCORE
from telescore.core.retraining import (
    MONITOR_TRIGGER,
    ColdStartState,
    RetrainingDecision,
    RunState,
    WindowHealth,
    decide_cold_start,
    decide_retraining,
    judge_window,
)
from telescore.core.schema import FEATURES as FEATURE_NAMES
from telescore.core.scoring import fit_logit_offset, shift_log_odds
from telescore.core.splits import chronological_split
from telescore.io import orchestrator
from telescore.io.context import Context
from telescore.io.datasets import read_snapshot
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.registry import CHAMPION, ModelVersionRef, Registry, RegistryError
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingError
from telescore.jobs import serving
from telescore.jobs.model_repository import LogitOffset
from telescore.jobs.outcomes import sweep_pending_outcomes
from telescore.jobs.releases import release_under_way
from telescore.validation.evidently import LABEL, EvidentlyValidator
from telescore.validation.evidently_dashboards import MonitoringWorkspace

SCORE_COLUMN = "score"
RECALIBRATION = "recalibration"
"""Field of a window's `monitoring_runs` document and of a decision: the offset fitted then."""
NO_MODEL_SERVING = "no model serving"
"""The verdict recorded for a window monitored while there is no champion."""

logger = logging.getLogger(__name__)

ServeOffset = Callable[[LogitOffset], "serving.Reloaded | None"]
"""Serves the champion with a new log-odds offset; returns the reload (None: not served now)."""


@dataclass
class Monitor:
    """What one monitor run works with; the caller opens the clients and closes them."""

    params: MonitoringParams
    registry: Registry
    outcomes: OutcomeStore
    records: MonitoringStore
    workspace: MonitoringWorkspace
    cache_dir: Path
    """Champion reference rows, kept by data fingerprint."""
    prefect_api: orchestrator.PrefectApi | str | None
    """None: decide, but never trigger (a dry run)."""
    training_deployment: str = orchestrator.TRAINING_DEPLOYMENT
    params_file: str = "params.yaml"
    """The params file a triggered training run reads, as the monitor's own."""
    serve_offset: ServeOffset | None = None
    """Serves a refitted log-odds offset; None: fit and record it, serve nothing (a dry run)."""
    pending_outcome_expiry: timedelta = PENDING_EXPIRY
    """How long outcomes reported before their prediction was logged wait for it."""
    releases: ReleaseStore | None = None
    """Where the routing is kept, to tell a release under way (None: none ever is)."""


def open_monitor(ctx: Context, params: MonitoringParams, params_file: str) -> Monitor:
    """Return the monitor on the context's registry and stores (closed with the context)."""
    records = ctx.store(MonitoringStore)
    records.ensure_indexes()
    return Monitor(
        params=params,
        registry=ctx.registry,
        # Down is noticed in 5 s; a large window's count on nx-27017 takes a minute (1M rows).
        outcomes=ctx.store(OutcomeStore, timeout_ms=5000, read_timeout_ms=600_000),
        records=records,
        # The Evidently UI that `telescore up` starts serves this folder.
        workspace=MonitoringWorkspace(ctx.state_dir / "evidently"),
        cache_dir=ctx.state_dir / "monitoring" / "reference",
        prefect_api=ctx.prefect_api,
        params_file=params_file,
        serve_offset=functools.partial(serving.serve_logit_offset, ctx),
        pending_outcome_expiry=ctx.pending_outcome_expiry,
        releases=ctx.store(ReleaseStore),
    )


@dataclass(frozen=True)
class MonitorResult:
    """What a run evaluated and decided."""

    window: str
    evaluated: list[str]
    decision: dict[str, Any]


def champion_reference(
    registry: Registry,
    champion: ModelVersionRef,
    cache_dir: Path,
    max_rows: int,
    model: Any | None = None,
) -> pd.DataFrame:
    """Return the champion's training rows, scored by it: the reference a window is compared to.

    Found through the registry's lineage (the version's data snapshot and fingerprint), so no
    file path needs keeping in sync; the snapshot is checked against the fingerprint. `model`
    is the champion already loaded (else it is loaded here). Its own scores, without any
    log-odds offset: the offset moves with the period, the reference stays.
    """
    tags = registry.version_tags(champion)
    snapshot_uri, fingerprint = tags.get("data_snapshot"), tags.get("data_fingerprint")
    if not snapshot_uri or not fingerprint:
        raise LookupError(
            f"{champion.name} version {champion.version} has no data snapshot in its lineage: "
            "retrain it to monitor it"
        )
    cached = cache_dir / f"{fingerprint}.csv.gz"
    if not cached.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Downloaded beside the cache, then renamed: a cached file is always a whole one.
        with tempfile.TemporaryDirectory(dir=cache_dir) as download:
            registry.download(snapshot_uri, Path(download)).replace(cached)
    rows = read_snapshot(cached, fingerprint)
    params = TrainingParams.model_validate_json(tags["params"], strict=False)
    train_rows, _ = chronological_split(rows, params.split)
    train_rows = train_rows.iloc[-max_rows:]
    features, labels = split_features_label(train_rows)
    model = model if model is not None else registry.load_model(champion)
    return features.assign(
        **{SCORE_COLUMN: model.predict_proba(features)[:, 1], LABEL: labels.astype(float)}
    ).reset_index(drop=True)


def read_window(
    outcomes: OutcomeStore, window: Window, max_rows: int, route: str = CHAMPION
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Return a window's predictions by `route` with their labels (NaN where unknown).

    Reads in chunks and keeps every k-th row, k = 1, 2, 4, ...: whenever more than `max_rows`
    are kept, k doubles and every other kept row goes. The memory a run needs is bounded
    whatever the traffic, and the window is read once, with no count first (on nx-27017 a
    count reads the whole window too: 52 s of 157 s for a million rows).
    """
    step = 1
    kept: list[int] = []
    columns: dict[str, list[Any]] = {
        name: [] for name in (*FEATURE_NAMES, SCORE_COLUMN, LABEL, MODEL_VERSION)
    }
    seen = 0
    # Chunks of 10,000 (about 35 MB of documents): a million rows take a hundred `$in` joins
    # of their outcomes rather than a thousand.
    for chunk in outcomes.labelled_predictions(window.start, window.end, chunk_size=10_000):
        for prediction in chunk:
            index, seen = seen, seen + 1
            if prediction[ROUTE] != route or index % step:
                continue
            features = prediction[FEATURES]
            for name in FEATURE_NAMES:
                columns[name].append(features[name])
            columns[SCORE_COLUMN].append(prediction[SCORE])
            subscribed = prediction["subscribed"]
            columns[LABEL].append(np.nan if subscribed is None else float(subscribed))
            columns[MODEL_VERSION].append(str(prediction[MODEL_VERSION]))
            kept.append(index)
            if len(kept) > max_rows:
                step *= 2
                keep = [position for position, each in enumerate(kept) if each % step == 0]
                kept = [kept[position] for position in keep]
                for name, values in columns.items():
                    columns[name] = [values[position] for position in keep]
    versions = Counter(columns.pop(MODEL_VERSION))
    frame = pd.DataFrame(columns)
    info = {
        "predictions": seen,
        "sampled_every": step,
        "model_version": versions.most_common(1)[0][0] if versions else None,
    }
    return frame, info


def window_figures(
    window: Window, frame: pd.DataFrame, metrics: dict[str, float], info: dict[str, Any]
) -> dict[str, Any]:
    """Return the document `monitoring_runs` keeps for a window."""
    labelled = int(frame[LABEL].notna().sum()) if len(frame) else 0
    return {
        "window_start": window.start,
        "window_end": window.end,
        "rows": len(frame),
        "labelled_rows": labelled,
        **info,
        **{key.replace(".", "_"): value for key, value in metrics.items()},
    }


def health(document: dict[str, Any]) -> WindowHealth:
    """Return the figures the policy reads from a `monitoring_runs` document."""

    def optional(key: str) -> float | None:
        value = document.get(key)
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value

    return WindowHealth(
        window_start=document["window_start"],
        rows=int(document["rows"]),
        labelled_rows=int(document["labelled_rows"]),
        share_drifted_features=float(document.get("share_drifted_features") or 0.0),
        mean_score=float(document.get("mean_score") or 0.0),
        positive_rate=optional("positive_rate"),
        roc_auc=optional("roc_auc"),
        precision_top_decile=optional("precision_top_decile"),
    )


def evaluate(
    monitor: Monitor, window: Window, reference: pd.DataFrame, report_dir: Path, read_at: datetime
) -> dict[str, Any]:
    """Evaluate one window, store its snapshot (replacing any) and its figures; return them."""
    frame, info = read_window(monitor.outcomes, window, monitor.params.max_rows)
    policy = monitor.params.policy
    metrics: dict[str, float] = {}
    if len(frame) >= policy.min_window_rows:
        validator = EvidentlyValidator(window.start, window.end, monitor.params.drift)
        report = validator.validate(frame, reference=reference, report_dir=report_dir)
        monitor.workspace.save_window(report.tool_result, window.start)
        metrics = report.metrics
    figures = window_figures(window, frame, metrics, info)
    verdict, why = judge_window(health(figures), policy)
    figures |= {"verdict": verdict, "verdict_reason": why, "read_at": read_at}
    earlier = monitor.records.run(window.key)
    if earlier is not None and RECALIBRATION in earlier:
        # Evaluated again (late outcomes): the offset fitted after it stays on record.
        figures[RECALIBRATION] = earlier[RECALIBRATION]
    monitor.records.save_run(window.key, figures)
    return figures


def windows_with_late_outcomes(
    monitor: Monitor, since: datetime | None, now: Window
) -> list[Window]:
    """Return the stored windows before `now` whose outcomes arrived since the previous run."""
    lookback = monitor.params.lookback_windows
    if since is None or lookback == 0:
        return []
    times = monitor.outcomes.prediction_times(monitor.outcomes.recorded_since(since))
    stored = [
        each
        for each in monitor.records.recent_runs(lookback + 1)
        if each["window_start"] < now.start
    ][-lookback:]
    return [
        window
        for window in (Window(each["window_start"], each["window_end"]) for each in stored)
        if any(window.start <= moment < window.end for moment in times)
    ]


def previous_run_started(records: MonitoringStore) -> datetime | None:
    """Return when the latest evaluation read its rows: outcomes recorded after are new."""
    latest = records.runs.find({}, sort=[("read_at", -1)]).limit(1)
    document = next(iter(latest), None)
    return document["read_at"] if document else None


def run_state(monitor: Monitor, history: list[dict[str, Any]]) -> RunState:
    """Return what the orchestrator and the decision log say about training now."""
    in_flight = bool(
        monitor.prefect_api
        and orchestrator.runs_in_flight(monitor.training_deployment, monitor.prefect_api)
    )
    last = monitor.records.last_retrain()
    since = None if last is None else windows_since(history, last)
    under_way = (
        None if monitor.releases is None else release_under_way(monitor.registry, monitor.releases)
    )
    return RunState(in_flight, since, monitor.outcomes.count(), under_way)


def windows_since(history: list[dict[str, Any]], attempt: dict[str, Any]) -> int:
    """Return how many windows of `history` were monitored after a training attempt.

    An attempt started by hand before any window was monitored has no `window_start`: every
    window is after it.
    """
    after = attempt.get("window_start")
    if after is None:
        return len(history)
    return sum(1 for document in history if document["window_start"] > after)


def champion_calibration(registry: Registry, champion: ModelVersionRef) -> CalibrationParams:
    """Return how the champion's log-odds offset is fitted: as its training params say."""
    params = registry.version_tags(champion).get("params")
    if not params:
        return CalibrationParams()
    return TrainingParams.model_validate_json(params, strict=False).calibration


def recalibrate(
    monitor: Monitor, window: Window, champion: ModelVersionRef, model: Any
) -> dict[str, Any] | None:
    """Refit the champion's log-odds offset on the newest labelled predictions and serve it.

    Their logged inputs are scored again by the champion's own pipeline, whichever version
    served them, and the offset b solves mean(sigmoid(logit(p) + b)) = their positive rate
    (`core.scoring.fit_logit_offset`). Too few labelled rows keep the offset served. Returns
    what was fitted and served, recorded with the window and the decision; None when the
    champion was trained without `calibration`.
    """
    calibration = champion_calibration(monitor.registry, champion)
    if not calibration.enabled:
        return None
    record: dict[str, Any] = {
        "version": champion.version,
        "fitted_after_window": window.key,
        "rows_wanted": calibration.rows,
    }
    labelled = monitor.outcomes.count()
    rows = monitor.outcomes.latest_labelled(min(labelled, calibration.rows)) if labelled else None
    if rows is None or len(rows) < calibration.min_rows:
        found = 0 if rows is None else len(rows)
        return record | {
            "offset": None,
            "served": False,
            "rows": found,
            "reason": f"{found} labelled rows < {calibration.min_rows}: the served offset stays",
        }
    features, labels = split_features_label(rows)
    scores = model.predict_proba(features)[:, 1]
    offset = fit_logit_offset(scores, labels, calibration.max_offset)
    record |= {
        "offset": offset,
        "capped": abs(offset) >= calibration.max_offset,
        "rows": len(labels),
        "first_prediction_id": str(rows["prediction_id"].iloc[0]),
        "last_prediction_id": str(rows["prediction_id"].iloc[-1]),
        "positive_rate": float(labels.mean()),
        "mean_raw_score": float(scores.mean()),
        "mean_served_score": float(np.mean(shift_log_odds(scores.tolist(), offset))),
    }
    record |= serve(monitor, LogitOffset(offset, champion.version))
    return record


def serve(monitor: Monitor, offset: LogitOffset) -> dict[str, Any]:
    """Have the champion served with `offset`; say whether it is (a failure does not fail the run).

    `serve_offset` tags the champion version with it in the registry, where every MLServer's
    reconciler reads it, then serves it here at once if it can.
    """
    if monitor.serve_offset is None:
        return {"served": False, "reason": "dry run: not served"}
    try:
        reloaded = monitor.serve_offset(offset)
    except (ServingError, httpx.HTTPError, OSError, RegistryError) as error:
        logger.warning("log-odds offset %+.4f not served: %s", offset.offset, error)
        return {"served": False, "reason": f"not published or not reloaded: {error}"}
    if reloaded is None:
        return {
            "served": False,
            "published": True,
            "reason": "tagged in the registry: each MLServer's reconciler serves it",
        }
    served = reloaded.version == offset.version
    return {
        "served": served,
        "served_version": reloaded.version,
        "reason": "served from the next request"
        if served
        else f"MLServer serves version {reloaded.version}: not applied",
    }


def decide(
    monitor: Monitor,
    window: Window,
    champion: ModelVersionRef,
    recalibration: dict[str, Any] | None = None,
) -> tuple[RetrainingDecision, dict[str, Any]]:
    """Take and record the retraining decision on the champion's windows; trigger if it says so.

    `recalibration` (what `recalibrate` fitted after this window) is recorded with it.
    """
    policy = monitor.params.policy
    recent = monitor.records.recent_runs(limit=max(50, policy.windows_considered * 4))
    history = [each for each in recent if each.get("model_version") == champion.version]
    state = run_state(monitor, recent)
    decision = decide_retraining([health(each) for each in history], state, policy)
    record: dict[str, Any] = {
        "decided_at": datetime.now(UTC),
        "window_start": window.start,
        "window": window.key,
        # The schedule's window, not this one's: a replay's or simulation's windows last
        # seconds, and the alert on a stopped monitor counts scheduled windows.
        "schedule_seconds": monitor.params.window_minutes * 60,
        "champion_version": champion.version,
        **decision.as_record(),
        "verdicts": list(decision.verdicts),
        "state": {
            "training_in_flight": state.training_in_flight,
            "windows_since_retrain": state.windows_since_retrain,
            "labelled_rows_available": state.labelled_rows_available,
            "release_under_way": state.release_under_way,
        },
        "inputs": [
            {key: each.get(key) for key in ("_id", "rows", "labelled_rows", "verdict")}
            for each in history[-policy.windows_considered :]
        ],
    }
    if recalibration is not None:
        record[RECALIBRATION] = recalibration
    if decision.retrain and decision.episode_start is not None:
        key = f"retrain-{champion.version}-{decision.episode_start.astimezone(UTC).isoformat()}"
        record |= trigger_training(
            monitor,
            key,
            {
                "window": window.key,
                "episode": decision.episode_start.isoformat(),
                "reason": decision.reason,
            },
        )
    record["_id"] = monitor.records.add_decision(record)
    if monitor.workspace.load_window(window.start) is not None:  # none: too few rows to report
        monitor.workspace.record_decision(
            window.start,
            retrain=decision.retrain,
            reason=decision.reason + offset_summary(recalibration),
        )
    return decision, record


def trigger_training(monitor: Monitor, key: str, trigger: dict[str, Any]) -> dict[str, Any]:
    """Run the training deployment once per `key` (a dry run: none); return what to record."""
    record: dict[str, Any] = {"idempotency_key": key}
    if monitor.prefect_api:
        record |= orchestrator.trigger_deployment(
            monitor.training_deployment,
            monitor.prefect_api,
            parameters={
                "params_file": monitor.params_file,
                "overrides": monitor.params.retrain_overrides,
                "trigger": {"by": MONITOR_TRIGGER, **trigger},
            },
            idempotency_key=key,
        )
    return record


def cold_start_state(monitor: Monitor, history: list[dict[str, Any]]) -> ColdStartState:
    """Return the labels recorded now and the last training attempt, from the decision log.

    An attempt is a decision that triggered training: it recorded the labelled rows there
    were then, and `follow_training_runs` how its run ended (failed gates included). A run
    started by hand while no champion served recorded itself the same way
    (`jobs.cold_start.counted_attempt`).
    """
    in_flight = bool(
        monitor.prefect_api
        and orchestrator.runs_in_flight(monitor.training_deployment, monitor.prefect_api)
    )
    labelled = monitor.outcomes.count()
    last = monitor.records.last_retrain()
    if last is None:
        return ColdStartState(in_flight, labelled, None, None)
    since = windows_since(history, last)
    training = last.get("training") or {}
    ended = f"its run {training['state']}" if training.get("final") else "its run's end unknown"
    if last.get("manual"):
        ended = f"started by hand, {ended}"
    return ColdStartState(
        in_flight,
        labelled,
        int((last.get("state") or {}).get("labelled_rows_available") or 0),
        since,
        f"{ended}, on {(last.get('state') or {}).get('labelled_rows_available', 0)} labelled rows",
    )


def monitor_cold_start(monitor: Monitor, window: Window) -> MonitorResult:
    """With no champion: record the window; train again once enough new labels arrived.

    Nothing is evaluated (no model answered); the calls made meanwhile are logged unscored
    (route `unserved`) and their outcomes are the labelled rows the next attempt learns from.
    """
    follow_training_runs(monitor)
    sweep_pending_outcomes(monitor.outcomes, expiry=monitor.pending_outcome_expiry)
    logged = monitor.outcomes.count_predictions(window.start, window.end)
    policy = monitor.params.policy
    monitor.records.save_run(
        window.key,
        {
            "window_start": window.start,
            "window_end": window.end,
            "rows": 0,
            "labelled_rows": 0,
            "unserved_rows": logged,
            "model_version": None,
            "verdict": NO_MODEL_SERVING,
            "verdict_reason": "no champion: nothing was scored to evaluate",
            "read_at": datetime.now(UTC),
        },
    )
    recent = monitor.records.recent_runs(limit=max(50, policy.cold_start_cooldown_windows * 4))
    state = cold_start_state(monitor, recent)
    decision = decide_cold_start(state, policy)
    record: dict[str, Any] = {
        "decided_at": datetime.now(UTC),
        "window_start": window.start,
        "window": window.key,
        "champion_version": None,
        "cold_start": True,
        **decision.as_record(),
        "verdicts": [],
        "state": {
            "training_in_flight": state.training_in_flight,
            "windows_since_retrain": state.windows_since_attempt,
            "labelled_rows_available": state.labelled_rows_available,
            "last_attempt_labelled_rows": state.last_attempt_labelled_rows,
        },
        "inputs": [],
    }
    if decision.retrain:
        record |= trigger_training(
            monitor,
            f"cold-start-{window.key}",
            {"window": window.key, "cold_start": True, "reason": decision.reason},
        )
    record["_id"] = monitor.records.add_decision(record)
    return MonitorResult(window.key, [f"{window.key}: {NO_MODEL_SERVING}"], record)


def offset_summary(recalibration: dict[str, Any] | None) -> str:
    """Return the recalibration in a few words, for the dashboard's decision text."""
    if recalibration is None:
        return ""
    if recalibration.get("offset") is None:
        return f"; log-odds offset not refitted ({recalibration['reason']})"
    return (
        f"; log-odds offset {recalibration['offset']:+.3f} for version "
        f"{recalibration['version']}, fitted on {recalibration['rows']} labelled rows "
        f"(positive rate {recalibration['positive_rate']:.3f}, raw mean score "
        f"{recalibration['mean_raw_score']:.3f}), "
        + (
            "served"
            if recalibration["served"]
            else f"{'published' if recalibration.get('published') else 'not served'}: "
            f"{recalibration['reason']}"
        )
    )


def follow_training_runs(monitor: Monitor) -> None:
    """Record how the training runs earlier decisions triggered ended (validation included)."""
    if not monitor.prefect_api:
        return
    for decision in monitor.records.awaiting_training_outcome():
        if "flow_run_id" not in decision:
            continue
        state = orchestrator.flow_run_state(decision["flow_run_id"], monitor.prefect_api)
        if not state["final"]:
            continue
        result = state["result"] if isinstance(state["result"], dict) else {}
        if state["completed"]:
            verdict = "promoted to champion" if result.get("promoted") else "champion kept"
            if result.get("released"):
                verdict = f"challenger in a {result.get('release_mode')} release"
            summary = (
                f"registered version {result.get('version')}: {verdict} ({result.get('reason')})"
            )
        else:
            kept = (
                f"champion {decision['champion_version']} kept"
                if decision.get("champion_version")
                else "still no champion"
            )
            summary = f"training run {state['state']}: {kept} ({(state['message'] or '')[:300]})"
        monitor.records.set_training_outcome(
            decision["_id"], {"final": True, "state": state["state"], "summary": summary, **result}
        )


def monitor_window(monitor: Monitor, window: Window, report_dir: Path) -> MonitorResult:
    """Run the monitor on `window` and on older windows whose outcomes just arrived."""
    # Read so that an unanswering registry raises (and the run is retried): taking it for
    # "no champion" would start training on a registry that is only unreachable.
    champion = monitor.registry.alias_versions([CHAMPION]).get(CHAMPION)
    if champion is None:
        return monitor_cold_start(monitor, window)
    monitor.workspace.write_dashboard()
    follow_training_runs(monitor)
    # Outcomes reported before their prediction was logged: joined ones count as labelled
    # (and their windows as having late outcomes), expired ones are kept aside.
    sweep_pending_outcomes(monitor.outcomes, expiry=monitor.pending_outcome_expiry)
    since = previous_run_started(monitor.records)
    read_at = datetime.now(UTC)
    model = monitor.registry.load_model(champion)
    reference = champion_reference(
        monitor.registry, champion, monitor.cache_dir, monitor.params.reference_rows, model=model
    )
    windows = [*windows_with_late_outcomes(monitor, since, window), window]
    evaluated = []
    for each in _unique(windows):
        figures = evaluate(monitor, each, reference, report_dir, read_at)
        evaluated.append(f"{each.key}: {figures['verdict']}")
    recalibration = recalibrate(monitor, window, champion, model)
    if recalibration is not None:
        # The window's own document says which offset was fitted after it.
        monitor.records.runs.update_one(
            {"_id": window.key}, {"$set": {RECALIBRATION: recalibration}}
        )
    _, record = decide(monitor, window, champion, recalibration)
    return MonitorResult(window.key, evaluated, record)


def _unique(windows: Iterable[Window]) -> list[Window]:
    seen: dict[str, Window] = {}
    for window in windows:
        seen.setdefault(window.key, window)
    return list(seen.values())
