"""One interface over the validation tools: every adapter is called the same way."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from telescore.core.params import ValidationParams
from telescore.validation.base import Validator
from telescore.validation.deepchecks import DeepchecksValidator
from telescore.validation.evidently import EvidentlyValidator
from telescore.validation.great_expectations import GreatExpectationsValidator

START = datetime(2010, 3, 1, tzinfo=UTC)
ADAPTERS = {
    "great_expectations": GreatExpectationsValidator(),
    "deepchecks": DeepchecksValidator(model=None, params=ValidationParams()),
    "evidently": EvidentlyValidator(START, START + timedelta(hours=1)),
}


@pytest.mark.parametrize("tool", ADAPTERS)
def test_every_adapter_validates_with_the_interfaces_signature(tool: str) -> None:
    # Given an adapter / When its `validate` is inspected
    own = inspect.signature(type(ADAPTERS[tool]).validate)

    # Then it takes exactly the interface's parameters, kinds, defaults and annotations
    assert own == inspect.signature(Validator.validate), f"{tool}: {own}"


@pytest.mark.parametrize(
    ("tool", "reference", "message"),
    [
        ("great_expectations", pd.DataFrame({"a": [1]}), "against its suite"),
        ("deepchecks", None, "compares the holdout with the training rows"),
        ("evidently", None, "compares the window with the training rows"),
    ],
)
def test_each_adapter_refuses_a_reference_it_cannot_use_or_its_absence(
    tool: str, reference: pd.DataFrame | None, message: str, tmp_path: Path
) -> None:
    # Given rows, with a reference where the tool has none or without where it needs one
    rows = pd.DataFrame({"a": [1, 2]})

    # When validated / Then refused before the tool runs, and nothing is written
    with pytest.raises(ValueError, match=message):
        ADAPTERS[tool].validate(rows, reference=reference, report_dir=tmp_path / "reports")
    assert not (tmp_path / "reports").exists(), "a refused validation wrote a report"
