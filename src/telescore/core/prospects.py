"""Prospects, the indicators in force, and the ranked call list: pure logic of the web app.

A prospect is a person the bank may call: profile fields and campaign history, stored in the
`prospects` collection. The model also needs the call's calendar (month, weekday) and the five
socio-economic indicators; a caller never types those. The calendar is today's, and the
indicators are the latest dated record ops entered (`indicators` collection).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import Annotated, Any, Final, Literal

import numpy as np
import pandas as pd
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema

from telescore.core.schema import (
    CATEGORICAL_VALUES,
    FEATURES,
    FLOAT_FEATURES,
    NUMERIC_BOUNDS,
)

ID: Final = "_id"
"""A prospect's id: "P" and the dataset row number, e.g. P00042."""
PROFILE_FIELDS: Final = ("age", "job", "marital", "education", "default", "housing", "loan")
HISTORY_FIELDS: Final = ("contact", "campaign", "pdays", "previous", "poutcome")
"""How the bank reaches the prospect and what earlier campaigns gave."""
PROSPECT_FIELDS: Final = PROFILE_FIELDS + HISTORY_FIELDS
CALENDAR_FIELDS: Final = ("month", "day_of_week")
INDICATOR_FIELDS: Final = FLOAT_FEATURES
"""The five macro columns, named as the model knows them (`emp.var.rate`, ...)."""

AGE_BANDS: Final[dict[str, tuple[int, int]]] = {
    "17-29": (17, 29),
    "30-39": (30, 39),
    "40-49": (40, 49),
    "50-59": (50, 59),
    "60+": (60, 200),
}
CallResult = Literal["subscribed", "declined", "no_answer"]
"""What a call gave; only the first two are outcomes (labels) of the prediction shown."""
MAX_PAGE_SIZE: Final = 200


def _categorical(field: str) -> AfterValidator:
    allowed = CATEGORICAL_VALUES[field]

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return AfterValidator(check)


def _enum(field: str) -> WithJsonSchema:
    """Document a categorical field's values in the OpenAPI schema (`_categorical` checks)."""
    return WithJsonSchema({"type": "string", "enum": list(CATEGORICAL_VALUES[field])})


def _bounds(field: str) -> dict[str, float]:
    low, high = NUMERIC_BOUNDS[field]
    return {"ge": low, "le": high}


class Prospect(BaseModel):
    """A prospect's profile and history: every model input but the calendar and indicators."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    age: Annotated[int, Field(strict=True, **_bounds("age"))]
    job: Annotated[str, _categorical("job"), _enum("job")]
    marital: Annotated[str, _categorical("marital"), _enum("marital")]
    education: Annotated[str, _categorical("education"), _enum("education")]
    default: Annotated[str, _categorical("default"), _enum("default")]
    housing: Annotated[str, _categorical("housing"), _enum("housing")]
    loan: Annotated[str, _categorical("loan"), _enum("loan")]
    contact: Annotated[str, _categorical("contact"), _enum("contact")]
    campaign: Annotated[int, Field(strict=True, **_bounds("campaign"))]
    """Calls made to this prospect in the current campaign."""
    pdays: Annotated[int, Field(strict=True, **_bounds("pdays"))]
    """Days since the last call of an earlier campaign; 999 means never called."""
    previous: Annotated[int, Field(strict=True, **_bounds("previous"))]
    poutcome: Annotated[str, _categorical("poutcome"), _enum("poutcome")]


class Indicators(BaseModel):
    """The socio-economic indicators in force, as ops enter them (names without dots)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    emp_var_rate: Annotated[float, Field(strict=True, **_bounds("emp.var.rate"))]
    """Employment variation rate, quarterly."""
    cons_price_idx: Annotated[float, Field(strict=True, **_bounds("cons.price.idx"))]
    """Consumer price index, monthly."""
    cons_conf_idx: Annotated[float, Field(strict=True, **_bounds("cons.conf.idx"))]
    """Consumer confidence index, monthly."""
    euribor3m: Annotated[float, Field(strict=True, **_bounds("euribor3m"))]
    """Euribor 3-month rate, daily."""
    nr_employed: Annotated[float, Field(strict=True, **_bounds("nr.employed"))]
    """Number of employees, quarterly (thousands)."""

    def as_features(self) -> dict[str, float]:
        """Return the indicators under the model's column names."""
        values = (
            self.emp_var_rate,
            self.cons_price_idx,
            self.cons_conf_idx,
            self.euribor3m,
            self.nr_employed,
        )
        return dict(zip(INDICATOR_FIELDS, values, strict=True))

    @classmethod
    def from_features(cls, values: Mapping[Any, Any]) -> Indicators:
        """Read indicators from a row keyed by the model's column names."""
        return cls(**{name.replace(".", "_"): float(values[name]) for name in INDICATOR_FIELDS})


class IndicatorsRecord(BaseModel):
    """A dated indicators record: the latest revision is the one in force."""

    model_config = ConfigDict(frozen=True)

    revision: int = Field(ge=1)
    """1, 2, ...: part of the ranking cache's key, so a change rescores every prospect."""
    indicators: Indicators
    effective_from: date
    recorded_at: AwareDatetime
    recorded_by: str


def call_calendar(day: date) -> dict[str, str]:
    """Return the month and weekday the model sees for a call on `day`.

    Calls are made Monday to Friday (the only weekdays in the data): a weekend day scores as
    the Monday after it.
    """
    if day.weekday() >= 5:
        day += timedelta(days=7 - day.weekday())
    return {
        "month": CATEGORICAL_VALUES["month"][day.month - 1],
        "day_of_week": CATEGORICAL_VALUES["day_of_week"][day.weekday()],
    }


def model_rows(prospects: pd.DataFrame, indicators: Indicators, day: date) -> pd.DataFrame:
    """Return the model inputs of prospects (one row each) scored on `day` with `indicators`."""
    rows = prospects.loc[:, list(PROSPECT_FIELDS)].copy()
    for name, value in (call_calendar(day) | indicators.as_features()).items():
        rows[name] = value
    return rows.loc[:, list(FEATURES)]


def model_records(
    prospects: Sequence[Mapping[Any, Any]], indicators: Indicators, day: date
) -> list[dict[str, Any]]:
    """Return the model inputs of a few prospects as plain rows, in the schema's order."""
    context = call_calendar(day) | indicators.as_features()
    return [
        {name: context[name] if name in context else prospect[name] for name in FEATURES}
        for prospect in prospects
    ]


def prospects_from_dataset(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Build prospect documents from dataset rows; ids follow the row order (P00001, ...)."""
    width = max(5, len(str(len(frame))))
    records = frame.loc[:, list(PROSPECT_FIELDS)].to_dict(orient="records")
    return [
        {ID: f"P{number:0{width}d}", **_plain(record)}
        for number, record in enumerate(records, start=1)
    ]


def _plain(record: Mapping[Any, Any]) -> dict[str, Any]:
    # NumPy scalars become Python ones: BSON has no encoding for them.
    return {
        str(key): value.item() if isinstance(value, np.generic) else value
        for key, value in record.items()
    }


class RankingQuery(BaseModel):
    """Which prospects a caller wants to see, best first, one page at a time."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    job: Annotated[str, _categorical("job"), _enum("job")] | None = None
    age_band: Literal["17-29", "30-39", "40-49", "50-59", "60+"] | None = None
    min_score: float | None = Field(default=None, ge=0.0, le=1.0)
    """Only prospects scored at least this."""
    not_called: bool = False
    """Only prospects with no call recorded."""
    page: int = Field(default=1, ge=1)
    page_size: int = Field(default=25, ge=1, le=MAX_PAGE_SIZE)


def rank(scored: pd.DataFrame, query: RankingQuery) -> tuple[pd.DataFrame, int]:
    """Return one page of prospects, best score first, and how many match the filters.

    `scored` holds one row per prospect with its fields, `score` and `called`, indexed by
    prospect id, and is already sorted best first (the cache sorts it once per model and
    indicators version, so a page costs a filter and a slice).
    """
    mask = np.ones(len(scored), dtype=bool)
    if query.job is not None:
        mask &= (scored["job"] == query.job).to_numpy()
    if query.age_band is not None:
        low, high = AGE_BANDS[query.age_band]
        ages = scored["age"].to_numpy()
        mask &= (ages >= low) & (ages <= high)
    if query.min_score is not None:
        mask &= scored["score"].to_numpy() >= query.min_score
    if query.not_called:
        mask &= ~scored["called"].to_numpy(dtype=bool)
    matching = np.flatnonzero(mask)
    start = (query.page - 1) * query.page_size
    page = scored.iloc[matching[start : start + query.page_size]]
    return page, int(matching.size)


def outcome_label(result: CallResult) -> bool | None:
    """Return the label a call result gives its prediction (None: no answer is no outcome)."""
    return {"subscribed": True, "declined": False, "no_answer": None}[result]


def scored_this_profile(profile: Mapping[str, Any], features: Mapping[str, Any]) -> bool:
    """Tell whether a logged prediction's inputs are this prospect's profile (its stable fields).

    Only the profile (age, job, ...) is compared: the call history may have moved since.
    """
    return all(features.get(name) == profile.get(name) for name in PROFILE_FIELDS)
