"""The replay's inputs: params.yaml as the platform runs it, plus only the replay's clock."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from telescore.jobs.replay import ReplayConfig, write_replay_inputs

ROOT = Path(__file__).resolve().parents[3]


def test_the_replay_runs_params_yaml_with_the_first_champions_share_of_the_rows(
    tmp_path: Path,
) -> None:
    # given 200 rows of the real data and a replay of params.yaml, first champion on 15%
    data = tmp_path / "rows.csv"
    pd.read_csv(ROOT / "data" / "bank-additional-full.csv.gz", sep=";", nrows=200).to_csv(
        data, sep=";", index=False
    )
    config = ReplayConfig(data=data, params=ROOT / "params.yaml", first_champion_fraction=0.15)
    (tmp_path / "state").mkdir()

    # when its inputs are written
    params_path, stream = write_replay_inputs(config, tmp_path / "state")

    # then the first champion learns the earliest 30 rows and the other 170 are streamed
    first = pd.read_csv(tmp_path / "state" / "base-rows.csv.gz", sep=";")
    assert len(first) == 30, f"15% of 200 rows: {len(first)}"
    assert len(stream) == 170, f"the rest is streamed: {len(stream)}"
    # and the params are params.yaml's, but for the first champion's data path
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    written = yaml.safe_load(params_path.read_text())
    assert written["training"]["data"]["path"] == str(
        (tmp_path / "state" / "base-rows.csv.gz").resolve()
    ), written["training"]["data"]
    written["training"]["data"]["path"] = shipped["training"]["data"]["path"]
    assert written == shipped, "the replay must change nothing else in params.yaml"
