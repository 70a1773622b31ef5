"""`telescore simulate`: stream a compressed slice of the real calls through the live platform.

The simulation is the live platform plus the stream of `jobs.streaming`, where the replay is an
isolated platform plus the same stream. It uses what `telescore up` started and leaves it
running: the live MLServer through the app's scoring service, outcomes through the live outcomes
API, the promotion and the monitor on the live stores, MLflow and Prefect (a training run the
monitor triggers is a run of the live `train-telemarketing` deployment on the live worker). So
the Evidently UI, MLflow, Prefect, the web app, Prometheus and Alertmanager that `telescore up`
printed show the loop: windows judged, a retrain, a release decided, alerts.

Only the clock and the data source differ from the live platform's params file, as for the
replay: the window (a few hundred calls instead of an hour), the label delay, how many windows,
and the training data (the rows before the slice: `write_inputs`). The policy, the gates and
the release rules are the params file's.

The slice: by default the most recent calls (the last 2,400, in 2010), where the positive rate
swings between a third and a half within days and the macro indicators leave the range the
earlier calls span: the drift is real, not injected.
`telescore demo` trains its first champion on the calls before the slice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import pandas as pd

from telescore.io.alert_log import AlertLog
from telescore.io.context import Context
from telescore.jobs.streaming import Progress, StreamClock, stream_calls, write_stream_params

SOURCE: Final = "simulate"
"""Names the simulation's requests, outcomes, API key and promotion runs."""
DEFAULT_CLOCK: Final = StreamClock(
    # Judged with labels (`min_labelled_rows`: 300); 1,200 labelled calls, enough to retrain
    # (`min_training_labels`: 1,000), after three windows.
    window_rows=400,
    # A caller records whether the prospect subscribed at the end of the call: every outcome
    # of a window is in when it is judged (a longer delay judges each window twice, as the
    # late outcomes arrive, and the demo has minutes, not hours).
    label_delay_rows=0,
    # 100 requests a window per arm: a release's guards (`release.min_requests`) are judged
    # after one window, as a page of the app asks for a few prospects at a time.
    request_rows=4,
)
DEFAULT_WINDOWS: Final = 6


@dataclass(frozen=True)
class SimulationConfig:
    """Which calls to stream and how fast the world answers."""

    data: Path
    """The dataset, rows in time order (`;`-separated, gzipped or not)."""
    params: Path
    """The live platform's params file: the monitor, the promotion and retraining read it."""
    windows: int = DEFAULT_WINDOWS
    """How many windows to stream."""
    start_row: int | None = None
    """The slice's first row; None: the most recent calls, ending at the last one."""
    clock: StreamClock = DEFAULT_CLOCK


@dataclass
class SimulationResult:
    """What a simulation did to the live platform."""

    params: Path
    """The params file its monitor, promotion and training runs read."""
    rows: tuple[int, int]
    """The dataset rows streamed: [first, last)."""
    windows: list[dict[str, Any]]
    """Per window: the monitor's decision and the promotion's action."""
    retrains: list[dict[str, Any]]
    releases: list[dict[str, Any]]
    unserved_windows: list[int]
    seconds: float
    release_summary: dict[str, Any] = field(default_factory=dict)


def slice_rows(config: SimulationConfig, total_rows: int) -> tuple[int, int]:
    """Return the [first, last) dataset rows the simulation streams."""
    length = config.windows * config.clock.window_rows
    if length > total_rows:
        raise ValueError(
            f"{config.windows} windows of {config.clock.window_rows} rows: the "
            f"dataset holds {total_rows}"
        )
    first = total_rows - length if config.start_row is None else config.start_row
    # A slice that would run past the end keeps its length and ends at the last row.
    first = max(0, min(first, total_rows - length))
    return first, first + length


def write_inputs(config: SimulationConfig, state_dir: Path) -> tuple[Path, pd.DataFrame, int]:
    """Write the simulation's params under `state_dir`; return them, the slice and its first row.

    The params are `config.params` with the rows before the slice as training data (the data
    source, the one thing besides the clock a stream sets): a training run, the demo's first
    one or a retrain, never learns a streamed call twice. Writing them again gives the same
    files.
    """
    rows = pd.read_csv(config.data, sep=";")
    first, last = slice_rows(config, len(rows))
    params = write_stream_params(config.params, rows.iloc[:first], state_dir / SOURCE)
    return params, rows.iloc[first:last].reset_index(drop=True), first


def run_simulation(
    ctx: Context, config: SimulationConfig, progress: Progress = lambda *_: None
) -> SimulationResult:
    """Stream the slice through the live platform `ctx` is opened on; return what it did."""
    started = time.monotonic()
    params, stream, first = write_inputs(config, ctx.state_dir)
    last = first + len(stream)
    run = stream_calls(ctx, stream, params, config.clock, SOURCE, progress)
    # The promotion's action per window; "idle": no release under way, nothing judged.
    actions = {each["window"]: each["action"] for each in run.judged}
    windows = [
        {
            "window": each["window"],
            "decision": "retrain" if each.get("retrain") else "no retrain",
            "reason": each.get("reason"),
            "release": None
            if actions.get(each["window"]) in (None, "idle")
            else actions[each["window"]],
        }
        for each in run.monitored
    ]
    return SimulationResult(
        params=params,
        rows=(first, last),
        windows=windows,
        retrains=run.retrains,
        releases=run.timeline.entries,
        unserved_windows=run.unserved_windows,
        seconds=time.monotonic() - started,
        release_summary=run.timeline.summary(),
    )


def expected_alerts(result: SimulationResult) -> list[str]:
    """Return the alerts the loop's events in `result` fire (prometheus/telescore.rules.yml)."""
    expected = []
    if any(each["outcome"] == "rollback" for each in result.releases):
        expected.append("ReleaseRolledBack")
    if any(each["state"] in ("Failed", "Crashed") for each in result.retrains):
        expected.append("RetrainingRunFailed")
    return expected


def wait_for_alerts(
    log: AlertLog, names: list[str], since: datetime, timeout: float
) -> list[dict[str, Any]]:
    """Wait until the local receiver logged each of `names` firing after `since`, or timeout.

    Returns the firing alerts it logged since then (those named and any other).
    """
    deadline = time.monotonic() + timeout
    while True:
        firing = [
            each
            for each in log.latest(500)
            if each["status"] == "firing" and each["received_at"] >= since.isoformat()
        ]
        if set(names) <= {each["alertname"] for each in firing} or time.monotonic() > deadline:
            return firing
        time.sleep(2.0)
