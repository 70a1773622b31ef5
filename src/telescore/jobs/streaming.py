"""The stream of calls through a platform, window by window: shared by replay and simulation.

Rows are scored a window at a time through the web app's scoring service (`jobs.scoring`: the
release routing in force, MLServer's REST endpoint, in shadow mode the challenger scoring every
request too), their outcomes are reported through the outcomes API a configurable number of
rows later, and after each window the jobs the schedules run are run on it, with a compressed
clock (a window lasts as long as its requests take): first the promotion (`promote-telemarketing`:
judge the release under way on the outcomes so far), then the monitor (which may trigger a
training run). A training run is waited for before the next window, so that a stream is
repeatable; a retrained model that passes the gates starts a release there, as in production,
and `ReleaseTimeline` records how many windows and calls each challenger spent in it before it
was promoted, rolled back or superseded.

When no model serves (cold start) a window's calls are logged unscored (route `unserved`,
`jobs.cold_start`) and their outcomes reported as usual, so that the monitor can retry training.

Which platform the stream runs on is the caller's: `jobs.replay` starts one of its own,
`jobs.simulate` uses the one `telescore up` started.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import yaml

from telescore.core.access import API_KEY_HEADER
from telescore.core.features import split_features_label
from telescore.core.monitoring import Window
from telescore.core.routing import effective
from telescore.core.schema import FEATURES
from telescore.core.scoring import LOGIT_OFFSET_TAG
from telescore.io import orchestrator
from telescore.io.access_store import AccessStore
from telescore.io.context import Context
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.params_files import load_monitoring_params, load_release_rules
from telescore.io.prediction_store import PredictionStore
from telescore.io.registry import ModelVersionRef, Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient
from telescore.jobs import access, cold_start, monitoring, reconciler, releases
from telescore.jobs.model_repository import CHAMPION_MODEL
from telescore.jobs.outcomes import REJECTED
from telescore.jobs.scoring import ScoringService
from telescore.services.processes import wait_until

Progress = Callable[[str, int, int], None]
"""Told what the stream does now, and how far it is: (what, done, total)."""


@dataclass(frozen=True)
class StreamClock:
    """How fast the world answers: the only values a stream sets besides the params file."""

    window_rows: int = 2000
    """Rows per monitoring window."""
    label_delay_rows: int = 1000
    """Outcomes are reported once this many later rows have been scored."""
    request_rows: int = 20
    """Rows per V2 request: a release's error-rate and latency guards need
    `release.min_requests` (100) requests per arm before they are judged."""
    monitor_by_deployment: bool = False
    """Run each window's monitor as a `monitor-telemarketing` deployment run on the worker,
    as the schedule does (about 25 s a window, most of it a new process importing Evidently,
    MLflow and scikit-learn), rather than the same monitor job in this process."""


@dataclass
class StreamRun:
    """What happened to a stream: every row's shown score, the retrains, the releases."""

    ids: list[str] = field(default_factory=list)
    """The prediction id of each streamed row, in stream order."""
    scores: list[float] = field(default_factory=list)
    """The score each row was shown (NaN when nobody served it)."""
    retrains: list[dict[str, Any]] = field(default_factory=list)
    offsets: list[dict[str, Any]] = field(default_factory=list)
    """The log-odds offset the monitor fitted after each window."""
    unserved_windows: list[int] = field(default_factory=list)
    first_served: tuple[int, ModelVersionRef] | None = None
    """The first window a model served, and that model."""
    monitored: list[dict[str, Any]] = field(default_factory=list)
    """Each window's monitor result: its decision, retrain or not, and why."""
    judged: list[dict[str, Any]] = field(default_factory=list)
    """Each promotion run's decision on the release under way (wait included)."""
    timeline: Any = None
    """The `ReleaseTimeline` of the stream."""
    decisions: int = 0
    """Retraining decisions recorded in the platform's store when the stream ended."""


class ReleaseTimeline:
    """The releases of a stream: when each started and ended, and the calls it saw."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def _open(self) -> list[dict[str, Any]]:
        return [each for each in self.entries if each["outcome"] is None]

    def started(self, window: int, training: dict[str, Any]) -> None:
        """Record a release a training run started after `window`, and any it superseded."""
        if training.get("superseded"):
            self.ended(window, str(training["superseded"]), "superseded", "a newer candidate")
        self.entries.append(
            {
                "challenger": str(training["version"]),
                "mode": training.get("release_mode"),
                "started_after_window": window,
                "ended_after_window": None,
                "outcome": None,
                "reason": None,
                "windows": 0,
                "calls": 0,
                "labelled_rows": None,
            }
        )

    def scored(self, calls: int) -> None:
        """Count a window's calls for every release under way while it was scored."""
        for each in self._open():
            each["windows"] += 1
            each["calls"] += calls

    def ended(
        self, window: int, challenger: str | None, outcome: str, reason: str, rows: Any = None
    ) -> None:
        """Record how the release of `challenger` ended after `window`."""
        for each in self._open():
            if each["challenger"] == challenger:
                each |= {
                    "ended_after_window": window,
                    "outcome": outcome,
                    "reason": reason,
                    "labelled_rows": rows,
                }

    def summary(self) -> dict[str, Any]:
        """Return the counts per outcome and the time a promoted challenger spent in release."""
        outcomes = [each["outcome"] or "undecided" for each in self.entries]
        promoted = [each for each in self.entries if each["outcome"] == "promote"]
        return {
            "started": len(self.entries),
            **{name: outcomes.count(name) for name in ("promote", "rollback", "superseded")},
            "undecided": outcomes.count("undecided"),
            "median_windows_before_serving": (
                float(np.median([each["windows"] for each in promoted])) if promoted else None
            ),
            "median_calls_before_serving": (
                float(np.median([each["calls"] for each in promoted])) if promoted else None
            ),
        }


def report_outcomes(
    api_url: str, ids: list[str], labels: list[bool], api_key: str, source: str = "replay"
) -> None:
    """Report call outcomes through the outcomes API, 1,000 at a time; raise if any is rejected.

    Their predictions may not be logged yet (the shipper defers on a busy machine): the API
    keeps such outcomes as pending, which is no failure.
    """
    with httpx.Client(base_url=api_url, timeout=60, headers={API_KEY_HEADER: api_key}) as client:
        for start in range(0, len(ids), 1000):
            batch = [
                {"prediction_id": each, "subscribed": label, "source": source}
                for each, label in zip(
                    ids[start : start + 1000], labels[start : start + 1000], strict=True
                )
            ]
            response = client.post("/outcomes/batch", json=batch)
            response.raise_for_status()
            answer = response.json()
            rejected = [result for result in answer["results"] if result["status"] in REJECTED]
            if rejected:
                raise RuntimeError(
                    f"{len(rejected)} of {len(batch)} outcomes rejected, the first ones: "
                    f"{rejected[:3]}"
                )


def score_window(
    scoring: ScoringService, rows: pd.DataFrame, request_id: str, source: str = "replay"
) -> tuple[list[str], list[float]]:
    """Score rows as the app does, under the routing in force; return the shown ids and scores.

    Each row's routing key is its position in the stream, so a canary's share is sticky. In
    shadow mode the challenger's answers are logged too; this waits for them.
    """
    records: list[dict[str, Any]] = [
        {str(name): value for name, value in row.items()}
        for row in rows.loc[:, list(FEATURES)].to_dict("records")
    ]
    keys = [f"{source}-row-{index}" for index in rows.index]
    answers = scoring.score(records, keys, request_id=request_id)
    scoring.wait_for_shadow()
    return [each.prediction_id for each in answers], [each.score for each in answers]


def whole_second(moment: datetime) -> datetime:
    """Return `moment` cut to the second.

    Windows on whole seconds, as the scheduled monitor's are: nx-27017 (0.8.1) finds no
    document with `$lt` a time in the same second as the document's own.
    """
    return moment.replace(microsecond=0)


def wait_logged(
    outcomes: OutcomeStore,
    ids: list[str],
    shadow_request_ids: list[str] | None = None,
    timeout: float = 120,
) -> None:
    """Wait until the shipper has moved the window's predictions (and shadow answers) to MongoDB.

    `shadow_request_ids`: the request ids the challenger scored the window under in the shadow
    (one answer per row, as many rows as `ids`); None: no shadow.
    """
    query = {"_id": {"$in": ids}}
    wait_until(
        lambda: outcomes.predictions.count_documents(query) == len(ids),
        timeout,
        what=f"{len(ids)} predictions in MongoDB",
        interval=0.2,
    )
    if not shadow_request_ids:
        return
    shadows = {"route": "shadow", "request_id": {"$in": shadow_request_ids}}
    wait_until(
        lambda: outcomes.predictions.count_documents(shadows) == len(ids),
        timeout,
        what=f"{len(ids)} shadow predictions in MongoDB",
        interval=0.2,
    )


def wait_training(
    api_url: orchestrator.PrefectApi, flow_run_id: str, timeout: float = 900
) -> dict[str, Any]:
    """Wait for a training run the monitor triggered; return its final state."""
    deadline = time.monotonic() + timeout
    while True:
        state = orchestrator.flow_run_state(flow_run_id, api_url)
        if state["final"]:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"training run {flow_run_id} still {state['state']}")
        time.sleep(1.0)


def monitor_by_deployment(
    api_url: orchestrator.PrefectApi, params_path: Path, window: Window
) -> dict[str, Any]:
    """Run the monitor deployment on a window and wait; return its result."""
    monitored = orchestrator.run_deployment(
        orchestrator.MONITOR_DEPLOYMENT,
        api_url,
        {
            "params_file": str(params_path),
            "window_start": window.start.isoformat(),
            "window_end": window.end.isoformat(),
        },
    )
    if not monitored["completed"]:
        raise RuntimeError(f"the monitor run on window {window.key} ended {monitored['state']}")
    return dict(monitored.get("result") or {})


def monitor_in_process(ctx: Context, params_path: Path, window: Window) -> dict[str, Any]:
    """Run the monitor job on a window here, as the deployment's one task does."""
    monitor = monitoring.open_monitor(ctx, load_monitoring_params(params_path), str(params_path))
    with tempfile.TemporaryDirectory(prefix="telescore-stream-") as work:
        decision = monitoring.monitor_window(monitor, window, Path(work)).decision
    return {
        "retrain": decision["retrain"],
        "reason": decision["reason"],
        "training_flow_run_id": decision.get("flow_run_id"),
        "recalibration": decision.get(monitoring.RECALIBRATION),
        "cold_start": bool(decision.get("cold_start")),
    }


def registration_offset(registry: Registry, version: str | None) -> float | None:
    """Return the log-odds offset a version was registered with, if any."""
    if version is None:
        return None
    offset = registry.version(str(version)).tags.get(LOGIT_OFFSET_TAG)
    return None if offset is None else float(offset)


def write_stream_params(params: Path, base_rows: pd.DataFrame, folder: Path) -> Path:
    """Write `params` with the rows before the stream as its training data; return its path.

    The stream's calls are rows of the same dataset: a base holding them too would give a
    retrain each streamed row twice, once as a versioned row and once as a production one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = folder / "base-rows.csv.gz"
    base_rows.to_csv(base, sep=";", index=False, compression={"method": "gzip", "mtime": 0})
    document = yaml.safe_load(params.read_text())
    document["training"]["data"] |= {"path": str(base.resolve()), "sample_rows": None}
    written = folder / "params.yaml"
    written.write_text(yaml.safe_dump(document, sort_keys=False))
    return written


def stream_calls(
    ctx: Context,
    stream: pd.DataFrame,
    params_path: Path,
    clock: StreamClock,
    source: str,
    progress: Progress = lambda *_: None,
) -> StreamRun:
    """Stream `stream`'s calls through the platform `ctx` is opened on, window by window.

    `params_path` is the params file the monitor, the promotion and the training runs it
    triggers read; `source` names the stream's requests, outcomes and API key.
    """
    rules = load_release_rules(params_path)
    registry = ctx.registry
    _, labels = split_features_label(stream)
    predictions = ctx.store(PredictionStore)
    run = StreamRun(timeline=ReleaseTimeline())
    timeline: ReleaseTimeline = run.timeline
    reported = 0
    windows = range(0, len(stream), clock.window_rows)
    api = f"http://{ctx.host}:{ctx.settings.api.port}"
    # Outcomes are reported as a CRM does: with an integration key of the stream's own.
    api_key = access.create_api_key(ctx.store(AccessStore), source, "integration").key
    client = ctx.serving_client(timeout=60.0)
    # Patient: nx-27017 answers slowly while a training run shares the two cores.
    outcomes = ctx.store(OutcomeStore, timeout_ms=30_000)
    with ScoringService(client, ctx.store(ReleaseStore), batch_rows=clock.request_rows) as scoring:
        for index, start in enumerate(windows):
            progress(f"window {index + 1} of {len(windows)}: scoring", index, len(windows))
            # A promotion, a release or a refitted offset reaches MLServer through its
            # reconciler, a few seconds later: score the window only with what the registry now
            # says, every time, under the routing now in force.
            now_served = await_release(client, registry)
            scoring.routing.forget()
            scoring.versions.forget()
            rows = stream.iloc[start : start + clock.window_rows]
            request_id = f"{source}-window-{index}-{int(time.time())}"
            window_start = whole_second(datetime.now(UTC))
            champion = now_served.get(CHAMPION_MODEL)
            shadow = False
            if champion is not None and champion.version is not None:
                if run.first_served is None:
                    run.first_served = (index, registry.version(champion.version))
                shadow = releases_shadow(scoring)
                window_ids, window_scores = score_window(scoring, rows, request_id, source)
                timeline.scored(len(rows))
            else:
                # Nobody serves: the calls are made all the same, logged with no score.
                run.unserved_windows.append(index)
                window_ids = cold_start.log_unserved(
                    predictions,
                    rows.loc[:, list(FEATURES)].to_dict("records"),
                    source,
                    registry.model_name,
                )
                window_scores = [float("nan")] * len(window_ids)
            window_end = whole_second(datetime.now(UTC)) + timedelta(seconds=1)
            # The next window starts where this one ends.
            time.sleep(max(0.0, (window_end - datetime.now(UTC)).total_seconds()))
            run.ids += window_ids
            run.scores += window_scores
            due = max(0, len(run.ids) - clock.label_delay_rows)
            labelled = [bool(y) for y in labels[reported:due]]
            report_outcomes(api, run.ids[reported:due], labelled, api_key, source)
            reported = due
            shadow_ids = scoring.batch_ids(request_id, len(rows)) if shadow else None
            progress(f"window {index + 1} of {len(windows)}: logging", index, len(windows))
            wait_logged(outcomes, window_ids, shadow_ids)
            progress(f"window {index + 1} of {len(windows)}: judging", index, len(windows))
            # The guards read the MongoDB counters, not Prometheus: a compressed window lasts
            # seconds and Prometheus scrapes every 15 s, so its figures would miss the window
            # just served, by an amount that depends on when the scrape fell: the decisions
            # would not repeat. Each MLServer stores its counts within a second or so.
            judged = releases.run_promotion(ctx, rules, by=source, guards_source="serving_counters")
            run.judged.append(
                {
                    "window": index,
                    "action": judged.action,
                    "challenger": judged.challenger,
                    "reason": judged.reason,
                }
            )
            if judged.action in ("promote", "rollback"):
                timeline.ended(
                    index, judged.challenger, judged.action, judged.reason, judged.labelled_rows
                )
            window = Window(window_start, window_end)
            progress(f"window {index + 1} of {len(windows)}: monitoring", index, len(windows))
            if clock.monitor_by_deployment:
                result = monitor_by_deployment(ctx.prefect_api, params_path, window)
            else:
                result = monitor_in_process(ctx, params_path, window)
            run.monitored.append({"window": index, **result})
            if result.get("recalibration"):
                run.offsets.append({"window": index, **result["recalibration"]})
                # Before a training run it may trigger can promote another version.
                await_release(client, registry, run.offsets[-1])
            if result.get("retrain") and result.get("training_flow_run_id"):
                progress(f"window {index + 1} of {len(windows)}: retraining", index, len(windows))
                training = wait_training(ctx.prefect_api, result["training_flow_run_id"])
                outcome = training["result"] if isinstance(training["result"], dict) else {}
                if outcome.get("released"):
                    timeline.started(index, outcome)
                run.retrains.append(
                    {
                        "window": index,
                        "cold_start": bool(result.get("cold_start")),
                        "after_row": start + len(rows),
                        "reason": result["reason"],
                        "flow_run_id": result["training_flow_run_id"],
                        "state": training["state"],
                        "version": outcome.get("version"),
                        "promoted": bool(outcome.get("promoted")),
                        "released": outcome.get("release_mode")
                        if outcome.get("released")
                        else None,
                        "promotion": outcome.get("reason") or training["message"],
                        "production_rows": outcome.get("production_rows"),
                        "logit_offset": registration_offset(registry, outcome.get("version")),
                    }
                )
        progress(f"{len(windows)} windows streamed", len(windows), len(windows))
    for retrain in run.retrains:
        # Promoted: at once (the first model, `release.mode: direct`), or by its release.
        its_release = [e for e in timeline.entries if e["challenger"] == retrain["version"]]
        if its_release:
            retrain["release"] = its_release[0]
            retrain["promoted"] = retrain["promoted"] or its_release[0]["outcome"] == "promote"
    run.decisions = ctx.store(MonitoringStore).decisions.count_documents({})
    return run


def releases_shadow(scoring: ScoringService) -> bool:
    """Tell whether the challenger scores every request in the shadow now (a served one)."""
    config = effective(scoring.routing.get(), scoring.versions.get().challenger is not None)
    return config.mode == "shadow"


def await_release(
    client: ServingClient, registry: Registry, fitted: dict[str, Any] | None = None
) -> dict[str, reconciler.ServedState]:
    """Wait until MLServer serves the registry's aliases and offsets; return what it serves.

    With no champion it serves nothing. The monitor only tags the champion with the offset it
    fitted (`published`); this sets `served` on that record (`fitted`): whether MLServer now
    applies it (not if a promotion came between).
    """
    served = reconciler.wait_reconciled(client, registry)
    if fitted is None or fitted.get("offset") is None:
        return served
    champion = served.get(CHAMPION_MODEL)
    fitted["served"] = (
        champion is not None
        and champion.version == fitted.get("version")
        and champion.logit_offset is not None
        and abs(champion.logit_offset - float(fitted["offset"])) < reconciler.OFFSET_TOLERANCE
    )
    return served
