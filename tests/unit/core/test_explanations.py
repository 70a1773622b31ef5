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
    # given a population of prospects, the last one 72 and a past success
    population = pd.DataFrame(
        {"age": [30, 40, 50, 35, 72], "poutcome": ["nonexistent"] * 4 + ["success"]}
    )
    typical = typical_values(population, ["age", "poutcome"])
    assert typical == {"age": 40, "poutcome": "nonexistent"}, f"wrong typical values: {typical}"

    # when that prospect's score is explained
    table = contributions(_model, population.tail(1), typical)
    said = reasons(table.iloc[0], population.iloc[-1].to_dict())

    # then the past success (0.4) comes before the age (0.12), both said
    assert said == "last campaign: success, age 72", f"wrong reasons or order: {said!r}"


def test_a_typical_prospect_has_no_reason_to_show() -> None:
    # given prospects whose fields move the score by nothing
    population = pd.DataFrame({"age": [30, 40, 50], "poutcome": ["nonexistent"] * 3})
    typical = typical_values(population, ["age", "poutcome"])

    # when their scores are explained
    table = contributions(_model, population, typical)
    said = [reasons(table.iloc[n], population.iloc[n].to_dict()) for n in range(3)]

    # then no reason is given
    assert said == [""] * 3, f"reasons given for fields that do not raise the score: {said}"


def test_days_and_contacts_read_as_words() -> None:
    # given field values as stored / when each is described / then it reads as a caller says it
    assert describe("pdays", 999) == "never called before", "999 days means never called"
    assert describe("pdays", 1) == "called 1 day ago", "one day is singular"
    assert describe("pdays", 6) == "called 6 days ago", "days are plural"
    assert describe("previous", 2) == "2 earlier contacts", "earlier contacts misread"
