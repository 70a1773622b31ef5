"""The chronological split: the holdout is the latest rows, training the rows before them."""

import pandas as pd
import pytest

from telescore.core.params import SplitParams
from telescore.core.splits import chronological_split


def test_holdout_is_the_most_recent_rows() -> None:
    # given ten rows in time order
    frame = pd.DataFrame({"t": range(10)})

    # when three are held out
    train, holdout = chronological_split(frame, SplitParams(holdout_rows=3))

    # then the holdout is the last three, and training every earlier row
    assert list(holdout["t"]) == [7, 8, 9], "the holdout must be the last rows"
    assert list(train["t"]) == list(range(7)), "train must be every earlier row"


def test_train_window_keeps_the_rows_just_before_the_holdout() -> None:
    # given ten rows in time order
    frame = pd.DataFrame({"t": range(10)})

    # when three are held out and training is limited to two rows
    train, _ = chronological_split(frame, SplitParams(holdout_rows=3, train_window_rows=2))

    # then training keeps the two rows just before the holdout
    assert list(train["t"]) == [5, 6], "the window must end where the holdout starts"


def test_too_few_rows_is_an_error() -> None:
    # given three rows, and a holdout of three that would leave nothing to train on
    frame = pd.DataFrame({"t": range(3)})

    # when they are split / then the split refuses
    with pytest.raises(ValueError, match="cannot hold out"):
        chronological_split(frame, SplitParams(holdout_rows=3))
