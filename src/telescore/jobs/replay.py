"""`telescore replay`: play the 2008-2010 calls through the platform, in time order.

The first champion is trained on the earliest rows. The rest are scored a window at a time
through the web app's scoring service (`jobs.scoring`: the release routing in force, MLServer's
REST endpoint, in shadow mode the challenger scoring every request too), their outcomes are
reported through the outcomes API a configurable number of rows later, and after each window
the jobs the schedules run are run on it, with a compressed clock (a window lasts as long as
its requests take): first the promotion (`promote-telemarketing`: judge the release under way
on the outcomes so far), then the monitor (which may trigger a training run). A training run
is waited for before the next window, so that a replay is repeatable; a retrained model that
passes the gates starts a release there, as in production, and the replay records how many
windows and calls each challenger spent in it before it was promoted, rolled back or
superseded.

Cold start: when the first champion fails its gates, the replay carries on as the platform
does. MLServer runs with no model; each window is then served by nobody: its calls are logged
unscored (route `unserved`, `jobs.cold_start`) and their outcomes reported as usual, and the
monitor retries training as those labels accumulate. The first model that passes is served by
MLServer's reconciler, and the windows after it are scored. The quality figures cover the
served windows; the unserved ones are listed.

Everything runs on its own services under `<state_dir>/replay`, never the platform's own.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
from telescore.core.prequential import StreamQuality, stream_quality
from telescore.core.routing import effective
from telescore.core.schema import FEATURES
from telescore.core.scoring import LOGIT_OFFSET_TAG
from telescore.io import orchestrator
from telescore.io.access_store import AccessStore
from telescore.io.context import Context
from telescore.io.datasets import fingerprint_rows
from telescore.io.monitoring_store import MonitoringStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.params_files import load_monitoring_params, load_release_rules
from telescore.io.prediction_store import PredictionStore
from telescore.io.registry import ModelVersionRef, Registry
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient
from telescore.jobs import access, cold_start, monitoring, platform, reconciler, releases
from telescore.jobs import serving as deployment
from telescore.jobs.model_repository import CHAMPION_MODEL
from telescore.jobs.outcomes import REJECTED
from telescore.jobs.plots import save_replay_plot
from telescore.jobs.scoring import ScoringService
from telescore.services.processes import free_port, wait_until
from telescore.serving.options import RuntimeOptions
from telescore.settings import ENV_FILE_VARIABLE, Settings, load_settings

# Ports the replay's own services take, by setting name; chosen free at start.
PORT_SETTINGS = (
    "TELESCORE_MLFLOW_PORT",
    "TELESCORE_PREFECT_PORT",
    "TELESCORE_MONGODB_PORT",
    "TELESCORE_SERVING_HTTP_PORT",
    "TELESCORE_SERVING_GRPC_PORT",
    "TELESCORE_SERVING_METRICS_PORT",
    "TELESCORE_API_PORT",
    "TELESCORE_EVIDENTLY_PORT",
    "TELESCORE_PROMETHEUS_PORT",
    "TELESCORE_ALERTMANAGER_PORT",
    "TELESCORE_ALERTMANAGER_RECEIVER_PORT",
)
# Settings that could point the replay at the platform's own services, or a production one.
SHARED_SETTINGS = (
    "TELESCORE_MLFLOW_TRACKING_URI",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    # Credentials for another MLflow: the replay's own writer signs in instead.
    "TELESCORE_MLFLOW_USERNAME",
    "TELESCORE_MLFLOW_PASSWORD",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "TELESCORE_PREFECT_API_URL",
    "PREFECT_API_URL",
    "TELESCORE_PREFECT_AUTH_STRING",
    "PREFECT_API_AUTH_STRING",
    "TELESCORE_MONGODB_URI",
    "TELESCORE_SERVING_URL",
    "TELESCORE_PROMETHEUS_URL",
    "TELESCORE_PROMETHEUS_AUTH_STRING",
    "TELESCORE_ALERTMANAGER_URL",
    "TELESCORE_ALERTMANAGER_AUTH_STRING",
)


@dataclass(frozen=True)
class ReplayConfig:
    """What to replay and how fast the world answers."""

    data: Path
    """The dataset, rows in time order (`;`-separated, gzipped or not)."""
    params: Path
    """The params the platform runs (params.yaml): training, monitoring and release sections.

    The replay changes none of them but `training.data` (the first champion's rows, filled in
    here): what it measures is the shipped configuration. Only its clock is its own (below)."""
    rows: int | None = None
    """Replay only the first N rows of the dataset (a slice, for a quick run)."""
    first_rows: int | None = None
    """Rows the first champion is trained on; None: `first_champion_fraction` of the dataset."""
    first_champion_fraction: float = 0.2
    """The first champion's share of the whole dataset's rows, as `telescore backtest`'s
    `variants.first_champion_fraction` (int(rows x share), the earliest rows)."""
    window_rows: int = 2000
    """Rows per monitoring window."""
    label_delay_rows: int = 1000
    """Outcomes are reported once this many later rows have been scored."""
    request_rows: int = 20
    """Rows per V2 request: 100 requests a 2,000-row window, so that a release's error-rate
    and latency guards (`release.min_requests`, 100 per arm) can be judged after one window."""
    monitor_by_deployment: bool = False
    """Run each window's monitor as a `monitor-telemarketing` deployment run on the worker,
    as the schedule does (about 25 s a window, most of it a new process importing Evidently,
    MLflow and scikit-learn), rather than the same monitor job in the replay's process."""


@dataclass
class ReplayResult:
    """What a replay measured."""

    loop: StreamQuality | None
    """Over the served windows (numbered in the stream); None when no window was served."""
    never_retrained: StreamQuality | None
    """The first model served, never retrained, on the same windows (its raw scores)."""
    retrains: list[dict[str, Any]]
    decisions: int
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)
    offsets: list[dict[str, Any]] = field(default_factory=list)
    """The log-odds offset the monitor fitted after each window (served in the next one, unless
    a promotion came between: the new champion then serves its own, fitted at registration)."""
    first_training: dict[str, Any] = field(default_factory=dict)
    """How the first champion's training run ended: its state, and why when it failed."""
    unserved_windows: list[int] = field(default_factory=list)
    """Windows served by no model (cold start): their calls logged unscored."""
    releases: list[dict[str, Any]] = field(default_factory=list)
    """Each release a retrain started: its challenger, mode, when it started and ended, how,
    and the windows and calls it spent in the release (`ReleaseTimeline`)."""
    release_summary: dict[str, Any] = field(default_factory=dict)
    """Releases started, promoted, rolled back, superseded, undecided at the end; the median
    windows and calls a promoted challenger spent in its release before serving."""


class ReleaseTimeline:
    """The releases of a replay: when each started and ended, and the calls it saw."""

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


def replay_environment(state_dir: Path) -> dict[str, str]:
    """Return the environment of an isolated replay platform: own folder, free ports."""
    env_file = state_dir / "replay.env"
    ports = {name: str(free_port()) for name in PORT_SETTINGS}
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text("".join(f"{name}={port}\n" for name, port in ports.items()))
    return {
        **ports,
        "TELESCORE_STATE_DIR": str(state_dir.resolve()),
        ENV_FILE_VARIABLE: str(env_file),
    }


def isolate(state_dir: Path) -> Settings:
    """Point this process (and every process it starts) at a fresh replay platform.

    Returns the replay platform's settings, to open the replay's context on.
    """
    if state_dir.exists():
        shutil.rmtree(state_dir)
    for name in SHARED_SETTINGS:
        os.environ.pop(name, None)
    os.environ.update(replay_environment(state_dir))
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # one bar: the replay's
    return load_settings()


def write_replay_inputs(config: ReplayConfig, folder: Path) -> tuple[Path, pd.DataFrame]:
    """Write the first champion's rows and the replay params; return the params and the stream."""
    rows = pd.read_csv(config.data, sep=";")
    first = config.first_rows or int(len(rows) * config.first_champion_fraction)
    if config.rows is not None:
        rows = rows.iloc[: config.rows]
    if first >= len(rows):
        raise ValueError(f"{len(rows)} rows leave nothing to replay after the first {first}")
    base = folder / "first-rows.csv.gz"
    rows.iloc[:first].to_csv(base, sep=";", index=False, compression={"method": "gzip", "mtime": 0})
    params = yaml.safe_load(config.params.read_text())
    params["training"]["data"] |= {"path": str(base.resolve()), "sample_rows": None}
    params_path = folder / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    return params_path, rows.iloc[first:].reset_index(drop=True)


def report_outcomes(api_url: str, ids: list[str], labels: list[bool], api_key: str) -> None:
    """Report call outcomes through the outcomes API, 1,000 at a time; raise if any is rejected.

    Their predictions may not be logged yet (the shipper defers on a busy machine): the API
    keeps such outcomes as pending, which is no failure.
    """
    with httpx.Client(base_url=api_url, timeout=60, headers={API_KEY_HEADER: api_key}) as client:
        for start in range(0, len(ids), 1000):
            batch = [
                {"prediction_id": each, "subscribed": label, "source": "replay"}
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
    scoring: ScoringService, rows: pd.DataFrame, request_id: str
) -> tuple[list[str], list[float]]:
    """Score rows as the app does, under the routing in force; return the shown ids and scores.

    Each row's routing key is its position in the stream, so a canary's share is sticky. In
    shadow mode the challenger's answers are logged too; this waits for them.
    """
    records: list[dict[str, Any]] = [
        {str(name): value for name, value in row.items()}
        for row in rows.loc[:, list(FEATURES)].to_dict("records")
    ]
    keys = [f"replay-row-{index}" for index in rows.index]
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
    with tempfile.TemporaryDirectory(prefix="telescore-replay-") as work:
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


def run_replay(
    config: ReplayConfig,
    state_dir: Path,
    project_root: Path,
    progress: Callable[[str, int, int], None] = lambda *_: None,
) -> ReplayResult:
    """Replay the stream on a fresh platform under `state_dir`; return what it measured."""
    started = time.monotonic()
    # The replay's own platform: every job below works on a context opened on it.
    with Context(isolate(state_dir)) as ctx:
        return _replay(ctx, config, project_root, progress, started)


def _replay(
    ctx: Context,
    config: ReplayConfig,
    project_root: Path,
    progress: Callable[[str, int, int], None],
    started: float,
) -> ReplayResult:
    params_path, stream = write_replay_inputs(config, ctx.state_dir)
    rules = load_release_rules(params_path)
    progress("starting MLflow, Prefect, nx-27017, the worker, the API and Evidently", 0, 1)
    platform.bring_up(ctx, project_root)
    api_url = ctx.prefect_api
    # The replay's clock drives the monitor and the promotion; their schedules would look at
    # wall-clock hours and minutes.
    for deployment_name in (orchestrator.MONITOR_DEPLOYMENT, orchestrator.PROMOTION_DEPLOYMENT):
        orchestrator.set_schedules_active(deployment_name, api_url, active=False)
    # Served before any model exists, as `telescore up` does: MLServer starts with none, and
    # its reconciler serves the first model that passes its gates. Ship at once: the replay
    # waits for each window to be in MongoDB before monitoring it.
    deployment.start_serving(ctx, RuntimeOptions(ship_max_defer=0.0))
    progress("training the first champion on the earliest rows", 0, 1)
    first = orchestrator.run_deployment(
        orchestrator.TRAINING_DEPLOYMENT, api_url, {"params_file": str(params_path)}
    )
    # A first champion that fails its gates is a cold start, not the end of the replay: the
    # monitor retries training as the unserved windows' outcomes arrive.
    first_training = {"state": first["state"], "passed": bool(first["completed"])}
    if not first["completed"]:
        ended = orchestrator.flow_run_state(first["flow_run_id"], api_url)
        first_training["message"] = (ended["message"] or "")[:2000]

    registry = ctx.registry
    features, labels = split_features_label(stream)
    first_served: tuple[int, ModelVersionRef] | None = None
    unserved: list[int] = []
    predictions = ctx.store(PredictionStore)

    served: list[float] = []
    ids: list[str] = []
    reported = 0
    retrains: list[dict[str, Any]] = []
    offsets: list[dict[str, Any]] = []
    timeline = ReleaseTimeline()
    windows = range(0, len(stream), config.window_rows)
    api = f"http://{ctx.host}:{ctx.settings.api.port}"
    # The replay reports outcomes as a CRM does: with an integration key of its own.
    api_key = access.create_api_key(ctx.store(AccessStore), "replay", "integration").key
    client = ctx.serving_client(timeout=60.0)
    # Patient: nx-27017 answers slowly while a training run shares the two cores.
    outcomes = ctx.store(OutcomeStore, timeout_ms=30_000)
    with ScoringService(client, ctx.store(ReleaseStore), batch_rows=config.request_rows) as scoring:
        for index, start in enumerate(windows):
            progress(f"window {index + 1} of {len(windows)}", index, len(windows))
            # A promotion, a release or a refitted offset reaches MLServer through its
            # reconciler, a few seconds later: score the window only with what the registry now
            # says, every time, under the routing now in force.
            now_served = await_release(client, registry)
            scoring.routing.forget()
            scoring.versions.forget()
            rows = stream.iloc[start : start + config.window_rows]
            request_id = f"replay-window-{index}"
            window_start = whole_second(datetime.now(UTC))
            champion = now_served.get(CHAMPION_MODEL)
            shadow = False
            if champion is not None and champion.version is not None:
                if first_served is None:
                    first_served = (index, registry.version(champion.version))
                shadow = releases_shadow(scoring)
                window_ids, window_scores = score_window(scoring, rows, request_id)
                timeline.scored(len(rows))
            else:
                # Nobody serves: the calls are made all the same, logged with no score.
                unserved.append(index)
                window_ids = cold_start.log_unserved(
                    predictions,
                    rows.loc[:, list(FEATURES)].to_dict("records"),
                    "replay",
                    registry.model_name,
                )
                window_scores = [float("nan")] * len(window_ids)
            window_end = whole_second(datetime.now(UTC)) + timedelta(seconds=1)
            # The next window starts where this one ends.
            time.sleep(max(0.0, (window_end - datetime.now(UTC)).total_seconds()))
            ids += window_ids
            served += window_scores
            due = max(0, len(ids) - config.label_delay_rows)
            labelled = [bool(y) for y in labels[reported:due]]
            report_outcomes(api, ids[reported:due], labelled, api_key)
            reported = due
            shadow_ids = scoring.batch_ids(request_id, len(rows)) if shadow else None
            wait_logged(outcomes, window_ids, shadow_ids)
            judged = releases.run_promotion(ctx, rules, by="replay")
            if judged.action in ("promote", "rollback"):
                timeline.ended(
                    index, judged.challenger, judged.action, judged.reason, judged.labelled_rows
                )
            window = Window(window_start, window_end)
            if config.monitor_by_deployment:
                result = monitor_by_deployment(api_url, params_path, window)
            else:
                result = monitor_in_process(ctx, params_path, window)
            if result.get("recalibration"):
                offsets.append({"window": index, **result["recalibration"]})
                # Before a training run it may trigger can promote another version.
                await_release(client, registry, offsets[-1])
            if result.get("retrain") and result.get("training_flow_run_id"):
                training = wait_training(api_url, result["training_flow_run_id"])
                outcome = training["result"] if isinstance(training["result"], dict) else {}
                if outcome.get("released"):
                    timeline.started(index, outcome)
                retrains.append(
                    {
                        "window": index,
                        "cold_start": bool(result.get("cold_start")),
                        "after_row": start + len(rows),
                        "reason": result["reason"],
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
    for retrain in retrains:
        # Promoted: at once (the first model, `release.mode: direct`), or by its release.
        its_release = [e for e in timeline.entries if e["challenger"] == retrain["version"]]
        if its_release:
            retrain["release"] = its_release[0]
            retrain["promoted"] = retrain["promoted"] or its_release[0]["outcome"] == "promote"
    decisions = ctx.store(MonitoringStore).decisions.count_documents({})
    scored = len(served)
    loop = never_retrained = None
    if first_served is not None:
        # Windows are served whole: from the first served one on, every row has a score.
        first_window, first_model = first_served
        begin = first_window * config.window_rows
        baseline = registry.load_model(first_model).predict_proba(features.iloc[begin:scored])
        loop, never_retrained = (
            stream_quality(
                labels[begin:scored], np.asarray(scores), config.window_rows, first_window
            )
            for scores in (served[begin:], baseline[:, 1])
        )
    first_version = first_served[1].version if first_served else None
    return ReplayResult(
        loop=loop,
        never_retrained=never_retrained,
        retrains=retrains,
        decisions=decisions,
        seconds=time.monotonic() - started,
        offsets=offsets,
        first_training=first_training,
        unserved_windows=unserved,
        releases=timeline.entries,
        release_summary=timeline.summary(),
        config={
            "streamed_rows": scored,
            "window_rows": config.window_rows,
            "label_delay_rows": config.label_delay_rows,
            "request_rows": config.request_rows,
            "data_fingerprint": fingerprint_rows(stream),
            "first_champion": first_version,
            "first_champion_logit_offset": registration_offset(registry, first_version),
            "first_served_window": first_served[0] if first_served else None,
            "params": yaml.safe_load(params_path.read_text()),
        },
    )


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


def save_result(result: ReplayResult, folder: Path) -> tuple[Path, Path]:
    """Write the replay's figures as JSON and its plot as PNG; return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    figures = folder / "replay.json"
    figures.write_text(json.dumps(asdict(result), indent=2, default=str) + "\n")
    plot = folder / "replay.png"
    if result.loop is not None and result.never_retrained is not None:
        # The windows no model served have no point: the lines start at the first served one.
        save_replay_plot(result.loop, result.never_retrained, result.retrains, plot)
    else:
        plot.unlink(missing_ok=True)  # no window served: nothing to plot
    return figures, plot
