"""`telescore replay`: play the 2008-2010 calls through the platform, in time order.

The replay is an isolated platform plus the stream of `jobs.streaming`: it starts a platform of
its own, trains the first champion on the earliest rows, and streams the rest through it
window by window (scored through the web app's scoring service, outcomes through the outcomes
API some rows later, after each window the promotion then the monitor, a triggered training run
waited for), then compares the loop with the first model never retrained. `jobs.simulate`
streams a slice the same way through the live platform.

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
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from telescore.core.backtest import StreamVariant
from telescore.core.features import split_features_label
from telescore.core.prequential import StreamQuality, stream_quality
from telescore.io import orchestrator
from telescore.io.context import Context
from telescore.io.datasets import fingerprint_rows
from telescore.jobs import platform
from telescore.jobs import serving as deployment
from telescore.jobs.plots import save_replay_plot
from telescore.jobs.streaming import (
    Progress,
    StreamClock,
    registration_offset,
    stream_calls,
    write_stream_params,
)
from telescore.services.processes import free_port
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
    request_rows: int = StreamVariant.request_rows
    """Rows per V2 request: 100 requests a 2,000-row window, so that a release's error-rate
    and latency guards (`release.min_requests`, 100 per arm) can be judged after one window.
    The backtest counts a release's requests the same way."""
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
    params_path = write_stream_params(config.params, rows.iloc[:first], folder)
    return params_path, rows.iloc[first:].reset_index(drop=True)


def run_replay(
    config: ReplayConfig,
    state_dir: Path,
    project_root: Path,
    progress: Progress = lambda *_: None,
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
    progress: Progress,
    started: float,
) -> ReplayResult:
    params_path, stream = write_replay_inputs(config, ctx.state_dir)
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
    platform.start_monitoring(ctx, project_root)  # after MLServer, as `telescore up`
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

    clock = StreamClock(
        window_rows=config.window_rows,
        label_delay_rows=config.label_delay_rows,
        request_rows=config.request_rows,
        monitor_by_deployment=config.monitor_by_deployment,
    )
    run = stream_calls(ctx, stream, params_path, clock, "replay", progress)
    registry = ctx.registry
    features, labels = split_features_label(stream)
    scored = len(run.scores)
    loop = never_retrained = None
    if run.first_served is not None:
        # Windows are served whole: from the first served one on, every row has a score.
        first_window, first_model = run.first_served
        begin = first_window * config.window_rows
        baseline = registry.load_model(first_model).predict_proba(features.iloc[begin:scored])
        loop, never_retrained = (
            stream_quality(
                labels[begin:scored], np.asarray(scores), config.window_rows, first_window
            )
            for scores in (run.scores[begin:], baseline[:, 1])
        )
    first_version = run.first_served[1].version if run.first_served else None
    return ReplayResult(
        loop=loop,
        never_retrained=never_retrained,
        retrains=run.retrains,
        decisions=run.decisions,
        seconds=time.monotonic() - started,
        offsets=run.offsets,
        first_training=first_training,
        unserved_windows=run.unserved_windows,
        releases=run.timeline.entries,
        release_summary=run.timeline.summary(),
        config={
            "streamed_rows": scored,
            "window_rows": config.window_rows,
            "label_delay_rows": config.label_delay_rows,
            "request_rows": config.request_rows,
            "data_fingerprint": fingerprint_rows(stream),
            "first_champion": first_version,
            "first_champion_logit_offset": registration_offset(registry, first_version),
            "first_served_window": run.first_served[0] if run.first_served else None,
            "params": yaml.safe_load(params_path.read_text()),
        },
    )


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
