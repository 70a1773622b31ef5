"""The one interface every validation tool sits behind, and the report each one returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of one validation: passed or not, figures, failures and the tool's HTML report."""

    tool: str
    passed: bool
    metrics: dict[str, float] = field(default_factory=dict)
    artifact_path: Path | None = None
    failures: tuple[str, ...] = ()
    """One line per failed check, naming the check and the column it failed on."""
    details: dict[str, Any] = field(default_factory=dict)
    tool_result: Any = field(default=None, compare=False, repr=False)
    """The tool's own result, for a caller that keeps it (Evidently: the snapshot to store)."""

    def summary(self) -> str:
        """Return a one-paragraph, human-readable verdict."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"{self.tool}: {verdict}", *(f"  - {failure}" for failure in self.failures)]
        return "\n".join(lines)


class Validator(Protocol):
    """A validation tool: checks rows, against reference rows where it compares, and reports.

    What a tool checks with (a suite, a fitted model, a monitoring window, thresholds) is given
    when its adapter is built; every adapter is then called the same way. As zenml's
    `BaseDataValidator`, one interface over tools whose APIs break between releases.
    """

    def validate(
        self, current: pd.DataFrame, *, reference: pd.DataFrame | None = None, report_dir: Path
    ) -> ValidationReport:
        """Validate `current` (against `reference`); write the tool's HTML under `report_dir`."""
        ...


class ValidationFailedError(RuntimeError):
    """Raised by a pipeline step when a validation gate does not pass."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report
