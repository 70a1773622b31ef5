"""The prospect schema: the 19 model inputs, their types and the values they may take."""

from __future__ import annotations

from typing import Final

TARGET: Final = "y"
"""Label column: did the prospect subscribe a term deposit ("yes"/"no")."""

LEAKING_COLUMNS: Final = ("duration",)
"""Known only after the call and nearly decides the label: never a model input."""

CATEGORICAL_VALUES: Final[dict[str, tuple[str, ...]]] = {
    "job": (
        "admin.",
        "blue-collar",
        "entrepreneur",
        "housemaid",
        "management",
        "retired",
        "self-employed",
        "services",
        "student",
        "technician",
        "unemployed",
        "unknown",
    ),
    "marital": ("divorced", "married", "single", "unknown"),
    "education": (
        "basic.4y",
        "basic.6y",
        "basic.9y",
        "high.school",
        "illiterate",
        "professional.course",
        "university.degree",
        "unknown",
    ),
    "default": ("no", "unknown", "yes"),
    "housing": ("no", "unknown", "yes"),
    "loan": ("no", "unknown", "yes"),
    "contact": ("cellular", "telephone"),
    # The calendar, not only the months seen: jan/feb never occur in 2008-2010 but are valid.
    "month": ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
    "day_of_week": ("mon", "tue", "wed", "thu", "fri"),
    "poutcome": ("failure", "nonexistent", "success"),
}
"""Every categorical input and its allowed values ("unknown" codes a missing value)."""

INTEGER_FEATURES: Final = ("age", "campaign", "pdays", "previous")
FLOAT_FEATURES: Final = (
    "emp.var.rate",
    "cons.price.idx",
    "cons.conf.idx",
    "euribor3m",
    "nr.employed",
)
NUMERIC_FEATURES: Final = INTEGER_FEATURES + FLOAT_FEATURES
CATEGORICAL_FEATURES: Final = tuple(CATEGORICAL_VALUES)

FEATURES: Final = (
    "age",
    "job",
    "marital",
    "education",
    "default",
    "housing",
    "loan",
    "contact",
    "month",
    "day_of_week",
    "campaign",
    "pdays",
    "previous",
    "poutcome",
    *FLOAT_FEATURES,
)
"""The model inputs in dataset order: the 20 raw inputs less the leaking `duration`."""

NUMERIC_BOUNDS: Final[dict[str, tuple[float, float]]] = {
    "age": (17, 100),
    "campaign": (1, 100),
    "pdays": (0, 999),
    "previous": (0, 50),
    "emp.var.rate": (-5.0, 5.0),
    "cons.price.idx": (85.0, 100.0),
    "cons.conf.idx": (-60.0, -20.0),
    "euribor3m": (0.0, 7.0),
    "nr.employed": (4800.0, 5400.0),
}
"""Plausible range of each numeric input: outside it a value is an error, not a prospect."""

NEVER_CONTACTED_PDAYS: Final = 999
"""`pdays` sentinel for a prospect never contacted before."""
