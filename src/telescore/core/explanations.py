"""Why a prospect ranks high: the fields that raise its score most (occlusion), in words.

For each of a prospect's own fields, the row is scored again with that field set to the
campaign's typical value (the most common category, the median number); the fall in score is
that field's contribution. Cheap enough for a page: one batch of rows x fields through the
model, and only for the rows shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np
import pandas as pd

from telescore.core.schema import NEVER_CONTACTED_PDAYS, NUMERIC_FEATURES

MIN_CONTRIBUTION: Final = 0.005
"""Contributions under half a point of probability are not worth a caller's attention."""


def typical_values(prospects: pd.DataFrame, fields: Sequence[str]) -> dict[str, Any]:
    """Return each field's typical value: the median of a number, the mode of a category."""
    typical: dict[str, Any] = {}
    for field in fields:
        column = prospects[field]
        if field in NUMERIC_FEATURES:
            typical[field] = type(column.iloc[0].item())(column.median())
        else:
            typical[field] = column.mode().iloc[0]
    return typical


def contributions(
    predict: Callable[[pd.DataFrame], np.ndarray],
    rows: pd.DataFrame,
    typical: Mapping[str, Any],
) -> pd.DataFrame:
    """Return, per row and field, how much the row's own value raises its score."""
    fields = list(typical)
    base = predict(rows)
    occluded = pd.concat([rows.assign(**{field: typical[field]}) for field in fields])
    scores = predict(occluded).reshape(len(fields), len(rows))
    return pd.DataFrame((base - scores).T, index=rows.index, columns=fields)


def reasons(row_contributions: pd.Series, row: Mapping[Any, Any], top: int = 2) -> str:
    """Describe the `top` fields that raise a row's score most ("" if none matters)."""
    best = row_contributions[row_contributions >= MIN_CONTRIBUTION].nlargest(top)
    return ", ".join(describe(field, row[field]) for field in best.index)


def describe(field: str, value: Any) -> str:
    """Say one field's value the way a caller reads it."""
    if field == "poutcome":
        return f"last campaign: {value}"
    if field == "pdays":
        never = value == NEVER_CONTACTED_PDAYS
        if never:
            return "never called before"
        return f"called {value} day{'' if value == 1 else 's'} ago"
    if field == "previous":
        return f"{value} earlier contacts"
    if field == "campaign":
        return f"{value} calls this campaign"
    if field in ("default", "housing", "loan"):
        return f"{field}: {value}"
    return f"{field} {value}"
