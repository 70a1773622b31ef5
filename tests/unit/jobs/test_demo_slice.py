"""The demo's slice: with params.yaml as shipped, the loop releases and judges within it.

`make demo` shows a shadow release judged only if the policy's retrain passes the offline gate
and the promotion decides its release within the six windows. Played offline by
`core.backtest` (the platform's own gate, promotion, release rules; no service, seconds), as
`studies/demo_slice.py` chose the slice: a change to params.yaml or the loop that leaves the
demo with nothing to show fails here, not in a newcomer's demo.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from telescore.core.backtest import History, StreamVariant, run_loop
from telescore.core.backtest_grid import resolve_candidate
from telescore.jobs import demo, simulate

ROOT = Path(__file__).resolve().parents[3]
PARAMS = ROOT / "params.yaml"
DATA = ROOT / "data" / "bank-additional-full.csv.gz"


def test_the_demo_slice_releases_a_retrain_and_judges_it() -> None:
    # given the demo's slice of the calls, and params.yaml as shipped (the demo trains on
    # every call before the slice)
    config = simulate.SimulationConfig(data=DATA, params=PARAMS, start_row=demo.DEMO_START_ROW)
    rows = pd.read_csv(DATA, sep=";")
    first, last = simulate.slice_rows(config, len(rows))
    assert first == demo.DEMO_START_ROW, f"the slice should start where the demo says: {first}"
    document = yaml.safe_load(PARAMS.read_text())
    document["training"]["data"]["sample_rows"] = None
    loop = resolve_candidate(document, "params", {})
    variant = StreamVariant(
        config.clock.window_rows,
        config.clock.label_delay_rows,
        (first + 0.5) / last,
        config.clock.request_rows,
    )
    assert variant.first_rows(last) == first, "the first champion learns the rows before it"
    # when the loop plays the slice offline
    run = run_loop(History(rows.iloc[:last].reset_index(drop=True)), loop, variant)
    # then a retrain passed the offline gate into a shadow release, and the release was
    # promoted or rolled back before the last window ended
    released = [each for each in run.runs if each.outcome == "challenger"]
    assert released, f"no retrain passed the offline gate: {run.runs}"
    judged = [each for each in run.releases if each.action in ("promote", "rollback")]
    assert judged, f"no release judged within {config.windows} windows: {run.releases}"
    assert all(each.decided_after_window < config.windows for each in judged), judged
