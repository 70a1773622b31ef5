"""Reasons for the rows shown: worked out once per call list, from the version that scored them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from tests.testdata.prospects import PROSPECT

from telescore.core.prospects import PROSPECT_FIELDS
from telescore.io.registry import ModelVersionRef
from telescore.jobs.explanations import Explainer

PROFILE = {field: PROSPECT[field] for field in PROSPECT_FIELDS}


class SuccessModel:
    """Scores high only the prospects whose last campaign succeeded; counts its rows."""

    def __init__(self) -> None:
        self.rows_scored = 0

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        self.rows_scored += len(frame)
        subscribed = np.where(frame["poutcome"] == "success", 0.9, 0.1)
        return np.column_stack([1 - subscribed, subscribed])


class FakeRegistry:
    """Gives `SuccessModel` for every version, and remembers which were loaded."""

    model_name = "telemarketing"

    def __init__(self) -> None:
        self.model = SuccessModel()
        self.loaded: list[str] = []

    def load_model(self, ref: ModelVersionRef) -> Any:
        self.loaded.append(ref.version)
        return self.model


def _shown(*poutcomes: str) -> list[dict[str, Any]]:
    """Rows as the call list shows them, one per last-campaign outcome."""
    return [
        {"prospect_id": f"P{n:05d}", **PROFILE, "poutcome": each, "model_version": "3"}
        for n, each in enumerate(poutcomes, start=1)
    ]


def _explainer(registry: Any) -> Explainer:
    return Explainer(lambda: registry, lambda frame: frame.loc[:, list(PROSPECT_FIELDS)])


def test_a_row_is_explained_once_per_list_by_the_version_that_scored_it() -> None:
    # given a list of three prospects, one of whom a past campaign won over
    registry = FakeRegistry()
    explainer = _explainer(registry)
    rows = _shown("nonexistent", "success", "nonexistent")
    explainer.set_population(pd.DataFrame(rows).set_index("prospect_id"))
    # when the rows shown are explained twice
    first = explainer.reasons(rows)
    scored = registry.model.rows_scored
    again = explainer.reasons(rows)
    # then only the won-over prospect has a reason, its last campaign, and the model of the
    # version that scored the rows was loaded and run once
    assert first == {"P00001": "", "P00002": "last campaign: success", "P00003": ""}, first
    assert again == first, "the same rows should get the same reasons"
    assert registry.loaded == ["3"], "the scoring version should be loaded once"
    assert registry.model.rows_scored == scored > 0, "a row shown again should not be rescored"


def test_a_new_list_explains_its_rows_again() -> None:
    # given rows explained for one list
    registry = FakeRegistry()
    explainer = _explainer(registry)
    rows = _shown("success", "nonexistent")
    explainer.set_population(pd.DataFrame(rows).set_index("prospect_id"))
    explainer.reasons(rows)
    scored = registry.model.rows_scored
    # when a new list is ranked (a new population) and the rows are shown again
    explainer.set_population(pd.DataFrame(rows).set_index("prospect_id"))
    explainer.reasons(rows)
    # then they are explained again, with the model already loaded
    assert registry.model.rows_scored == 2 * scored, "a new list should explain its rows anew"
    assert registry.loaded == ["3"], "a loaded version should be kept"


def test_a_version_that_cannot_be_loaded_gives_no_reasons_and_no_error() -> None:
    # given a registry that cannot be reached
    def unreachable() -> Any:
        raise ConnectionError("MLflow is down")

    explainer = Explainer(unreachable, lambda frame: frame.loc[:, list(PROSPECT_FIELDS)])
    rows = _shown("nonexistent", "success")
    explainer.set_population(pd.DataFrame(rows).set_index("prospect_id"))
    # when the rows shown are explained / then none gets a reason, and the page no error
    assert explainer.reasons(rows) == {"P00001": "", "P00002": ""}
