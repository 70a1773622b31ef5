"""Which slice of the calls should `telescore demo` stream? The offline loop, on every slice.

    nice -n 10 .venv/bin/python -m studies.demo_slice [--first 8000] [--last 41188]
        [--step 200] [--windows 6] [--window-rows 400] [--request-rows 4] [--params params.yaml]

The demo streams `--windows` windows of `--window-rows` calls, outcomes at once, through the
live platform, its first champion trained on every call before the slice, under the shipped
params file. This plays that same loop offline (`core.backtest.run_loop`: the platform's own
gate, promotion, shadow release and policy, no service) on every slice ending between
`--first` and `--last`, `--step` rows apart, and prints per slice its training runs (why each
was kept, refused or released) and its releases (promoted or rolled back, after which window,
on what interval). The demo's `jobs.demo.DEMO_START_ROW` is the middle of a run of slices
whose first retrain passes the gate with a margin and whose shadow release is promoted one
window later. About 2 s a slice on a loaded core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml
from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from telescore.core.backtest import History, LoopRun, StreamVariant, run_loop
from telescore.core.backtest_grid import resolve_candidate

ROOT = Path(__file__).resolve().parents[1]


def describe(run: LoopRun) -> str:
    """One line: the slice's training runs and releases, windows counted from 1."""
    runs = "; ".join(
        f"w{each.after_window + 1}: {each.outcome} ({each.detail[:70]})" for each in run.runs
    )
    releases = "; ".join(
        f"released after w{each.registered_after_window + 1}: {each.action}"
        + (
            f" after w{each.decided_after_window + 1}"
            if each.decided_after_window is not None
            else ""
        )
        + f" ({each.reason[:70]})"
        for each in run.releases
    )
    return f"runs {runs or 'none'} | releases {releases or 'none'}"


def main() -> None:
    """Play the loop on every slice and print what it did."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data/bank-additional-full.csv.gz")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--window-rows", type=int, default=400)
    parser.add_argument("--request-rows", type=int, default=4, help="rows per request, as the demo")
    parser.add_argument("--first", type=int, default=8000, help="smallest slice end")
    parser.add_argument("--last", type=int, default=None, help="largest slice end")
    parser.add_argument("--step", type=int, default=200)
    args = parser.parse_args()
    threadpool_limits(limits=1)
    document = yaml.safe_load(args.params.read_text())
    document["training"]["data"]["sample_rows"] = None  # the demo trains on every earlier call
    config = resolve_candidate(document, "params", {})
    frame = pd.read_csv(args.data, sep=";")
    length = args.windows * args.window_rows
    for end in range(args.last or len(frame), args.first, -args.step):
        start = end - length
        # The first champion learns the rows before the slice: `start` of `end` rows.
        variant = StreamVariant(args.window_rows, 0, (start + 0.5) / end, args.request_rows)
        run = run_loop(History(frame.iloc[:end].reset_index(drop=True)), config, variant)
        rate = run.labels.mean()
        print(f"rows {start:,}-{end:,} (positive rate {rate:.2f}): {describe(run)}", flush=True)


if __name__ == "__main__":
    main()
