"""Time-aware splits: the rows are in call order, so evaluate on the most recent ones."""

from __future__ import annotations

import pandas as pd

from telescore.core.params import SplitParams


def chronological_split(
    frame: pd.DataFrame, params: SplitParams
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (train, holdout): holdout is the last `holdout_rows`, train the rows before it.

    A random split would let the macro indicators tell periods apart and overstate quality.
    """
    if len(frame) <= params.holdout_rows:
        raise ValueError(f"{len(frame)} rows cannot hold out {params.holdout_rows} and still train")
    train = frame.iloc[: -params.holdout_rows]
    if params.train_window_rows is not None:
        train = train.iloc[-params.train_window_rows :]
    return train, frame.iloc[-params.holdout_rows :]
