"""The figures Evidently 0.7 lacks, as metrics of its own, so that they live in the snapshot.

Importing this module imports Evidently (seconds: 7 s on the 2-core test machine), so the
Evidently adapter and its dashboards import it inside the functions that need it: importing
`telescore.validation.evidently` stays cheap for the jobs, flows and CLI that load it and never
evaluate a window. Being a module, it defines each metric once per process, which Evidently
needs: it registers a metric's type by its class name (`evidently:metric_v2:LabelledQuality`)
on the class's definition, and the UI reads stored values by that name, without this code.
"""

from __future__ import annotations

from typing import Any

from evidently.core.metric_types import (
    CountCalculation,
    CountMetric,
    SingleValueCalculation,
    SingleValueMetric,
)

from telescore.validation.evidently import LABEL, quality_statistic


class LabelledQuality(SingleValueMetric):
    """One quality figure of the ranking on the labelled rows of the window."""

    statistic: str


class LabelledQualityCalculation(SingleValueCalculation[LabelledQuality]):
    """Computes a `LabelledQuality` figure on the window, and on the reference rows."""

    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        """Return the figure on the window's labelled rows (and the reference's, if any)."""
        value = quality_statistic(current_data.as_dataframe(), self.metric.statistic)
        if value is None:
            raise ValueError(f"{self.metric.statistic} is undefined on this window")
        reference = (
            None
            if reference_data is None
            else quality_statistic(reference_data.as_dataframe(), self.metric.statistic)
        )
        return self.result(value), None if reference is None else self.result(reference)

    def display_name(self) -> str:
        """Return the figure's title in the report."""
        return f"{self.metric.statistic} (labelled rows)"


class LabelCoverage(CountMetric):
    """How many rows of the window have a known outcome, and their share."""


class LabelCoverageCalculation(CountCalculation[LabelCoverage]):
    """Counts the window's labelled rows."""

    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        """Return the labelled rows and their share of the window."""
        frame = current_data.as_dataframe()
        labelled = int(frame[LABEL].notna().sum())
        return self.result(labelled, labelled / len(frame) if len(frame) else 0.0)

    def display_name(self) -> str:
        """Return the figure's title in the report."""
        return "Labelled rows"


class RetrainingDecision(SingleValueMetric):
    """1 when the window led to retraining, else 0; the reason is in the snapshot metadata."""


class RetrainingDecisionCalculation(SingleValueCalculation[RetrainingDecision]):
    """Never run: the decision is recorded after the window's evaluation."""

    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        """Refuse: the figure is recorded, not computed."""
        raise NotImplementedError("recorded after the window's evaluation, never computed")

    def display_name(self) -> str:
        """Return the figure's title in the report."""
        return "Retraining decision"


class ReleaseDecision(SingleValueMetric):
    """1 promote, 0 wait, -1 roll back: what the promotion flow decided on a release.

    The reason, the versions and the routing mode are in the snapshot metadata.
    """


class ReleaseDecisionCalculation(SingleValueCalculation[ReleaseDecision]):
    """Never run: the decision is recorded when the promotion flow decides."""

    def calculate(self, context: Any, current_data: Any, reference_data: Any) -> Any:
        """Refuse: the figure is recorded, not computed."""
        raise NotImplementedError("recorded when the promotion flow decides, never computed")

    def display_name(self) -> str:
        """Return the figure's title in the report."""
        return "Release decision"
