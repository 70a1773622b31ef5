import pandas as pd
import pytest

from telescore.core.params import SplitParams
from telescore.core.splits import chronological_split


def test_holdout_is_the_most_recent_rows() -> None:
    frame = pd.DataFrame({"t": range(10)})
    train, holdout = chronological_split(frame, SplitParams(holdout_rows=3))
    assert list(holdout["t"]) == [7, 8, 9], "the holdout must be the last rows"
    assert list(train["t"]) == list(range(7)), "train must be every earlier row"


def test_train_window_keeps_the_rows_just_before_the_holdout() -> None:
    frame = pd.DataFrame({"t": range(10)})
    train, _ = chronological_split(frame, SplitParams(holdout_rows=3, train_window_rows=2))
    assert list(train["t"]) == [5, 6], "the window must end where the holdout starts"


def test_too_few_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot hold out"):
        chronological_split(pd.DataFrame({"t": range(3)}), SplitParams(holdout_rows=3))
