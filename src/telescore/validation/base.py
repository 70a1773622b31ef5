"""The common result of every validation tool."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


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

    def summary(self) -> str:
        """Return a one-paragraph, human-readable verdict."""
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"{self.tool}: {verdict}", *(f"  - {failure}" for failure in self.failures)]
        return "\n".join(lines)


class ValidationFailedError(RuntimeError):
    """Raised by a pipeline step when a validation gate does not pass."""

    def __init__(self, report: ValidationReport) -> None:
        super().__init__(report.summary())
        self.report = report
