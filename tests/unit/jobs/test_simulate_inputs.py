"""The simulation's inputs: which rows it streams, what its training runs learn, which alerts."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from telescore.jobs import simulate
from telescore.jobs.streaming import StreamClock, write_stream_params

ROOT = Path(__file__).resolve().parents[3]
PARAMS = ROOT / "params.yaml"
DATA = ROOT / "data" / "bank-additional-full.csv.gz"


def config(**changes: object) -> simulate.SimulationConfig:
    """A simulation of the dataset with params.yaml, changed as given."""
    return simulate.SimulationConfig(data=DATA, params=PARAMS, **changes)  # type: ignore[arg-type]


def test_the_default_slice_is_the_most_recent_calls() -> None:
    # given the default clock and windows
    length = simulate.DEFAULT_WINDOWS * simulate.DEFAULT_CLOCK.window_rows
    # when the slice of the 41,188 calls is chosen
    first, last = simulate.slice_rows(config(), 41188)
    # then it is the last `length` calls (2010's), ending at the last one
    assert (first, last) == (41188 - length, 41188), (first, last)


def test_a_slice_that_would_run_past_the_end_ends_at_the_last_call() -> None:
    # given a start too late for its windows
    late = config(start_row=41000, windows=2, clock=StreamClock(window_rows=300))
    # when the slice is chosen, then it keeps its length and ends at the last row
    assert simulate.slice_rows(late, 41188) == (40588, 41188), "the slice should end at the end"


def test_more_windows_than_the_dataset_holds_are_refused() -> None:
    # given more windows than rows, then the slice is refused, saying why
    with pytest.raises(ValueError, match="the dataset holds 1000"):
        simulate.slice_rows(config(windows=3, clock=StreamClock(window_rows=400)), 1000)


def test_training_learns_only_the_rows_before_the_stream(tmp_path: Path) -> None:
    # given the rows before a stream
    base = pd.DataFrame({"age": [30, 40], "y": ["no", "yes"]})
    # when the stream's params are written
    written = write_stream_params(PARAMS, base, tmp_path / "stream")
    # then their training data is those rows, and everything else is params.yaml's
    document, shipped = yaml.safe_load(written.read_text()), yaml.safe_load(PARAMS.read_text())
    data = document["training"].pop("data")
    shipped_data = shipped["training"].pop("data")
    assert pd.read_csv(data["path"], sep=";").equals(base), "the base rows should be written"
    assert data["sample_rows"] is None, "every base row should be learnt"
    assert data["drop_columns"] == shipped_data["drop_columns"], "the rest of data is kept"
    assert document == shipped, "only the training data may differ from params.yaml"


def result(releases: list[str | None], retrains: list[str]) -> simulate.SimulationResult:
    """A simulation's result with releases ending as given and retrains ending in states."""
    return simulate.SimulationResult(
        params=PARAMS,
        rows=(0, 1),
        windows=[],
        retrains=[{"state": state} for state in retrains],
        releases=[{"outcome": outcome} for outcome in releases],
        unserved_windows=[],
        seconds=1.0,
    )


@pytest.mark.parametrize(
    ("releases", "retrains", "alerts"),
    [
        ([], [], []),
        (["promote", None], ["Completed"], []),
        (["rollback"], ["Completed"], ["ReleaseRolledBack"]),
        ([], ["Failed"], ["RetrainingRunFailed"]),
    ],
)
def test_the_alerts_expected_are_those_the_events_fire(
    releases: list[str | None], retrains: list[str], alerts: list[str]
) -> None:
    # given what a simulation did, then the alerts to wait for are its events' rules
    assert simulate.expected_alerts(result(releases, retrains)) == alerts, (releases, retrains)
