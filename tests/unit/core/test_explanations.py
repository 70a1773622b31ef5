"""Reasons for a score: the prospect's own fields that raise it most, said in words."""

from __future__ import annotations

import numpy as np
import pandas as pd

from telescore.core.explanations import contributions, describe, reasons, typical_values


def _model(frame: pd.DataFrame) -> np.ndarray:
    """A stand-in scorer: a past success adds 0.4, each year of age over 60 adds 0.01."""
    success = (frame["poutcome"] == "success").to_numpy() * 0.4
    return 0.1 + success + np.clip(frame["age"].to_numpy() - 60, 0, None) * 0.01


def test_the_fields_that_raise_a_score_most_come_first() -> None:
    population = pd.DataFrame(
        {"age": [30, 40, 50, 35, 72], "poutcome": ["nonexistent"] * 4 + ["success"]}
    )
    typical = typical_values(population, ["age", "poutcome"])
    assert typical == {"age": 40, "poutcome": "nonexistent"}, typical
    table = contributions(_model, population.tail(1), typical)
    # the past success adds 0.4, the age 0.12: that order, both said
    assert reasons(table.iloc[0], population.iloc[-1].to_dict()) == "last campaign: success, age 72"


def test_a_typical_prospect_has_no_reason_to_show() -> None:
    population = pd.DataFrame({"age": [30, 40, 50], "poutcome": ["nonexistent"] * 3})
    typical = typical_values(population, ["age", "poutcome"])
    table = contributions(_model, population, typical)
    assert [reasons(table.iloc[n], population.iloc[n].to_dict()) for n in range(3)] == [""] * 3


def test_days_and_contacts_read_as_words() -> None:
    assert describe("pdays", 999) == "never called before"
    assert describe("pdays", 1) == "called 1 day ago"
    assert describe("pdays", 6) == "called 6 days ago"
    assert describe("previous", 2) == "2 earlier contacts"
