"""Great Expectations (1.x) adapter: validate training rows against the suite kept in the repo."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from telescore.validation.base import ValidationReport

SUITE_PATH = Path(__file__).with_name("suites") / "bank_marketing.json"


def suite_hash(path: Path = SUITE_PATH) -> str:
    """Return the sha256 of the suite file, recorded on the model as lineage."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _describe_failure(result: Any) -> str:
    config = result.expectation_config
    column = config.kwargs.get("column")
    where = f"column '{column}'" if column else "table"
    observed = result.result or {}
    detail = ""
    if "details" in observed and "mismatched" in observed["details"]:
        detail = f": {observed['details']['mismatched']}"
    elif "observed_value" in observed:
        detail = f": observed {observed['observed_value']!r}"
    elif observed.get("partial_unexpected_list"):
        sample = sorted({str(value) for value in observed["partial_unexpected_list"]})[:5]
        detail = f": {observed.get('unexpected_percent', 0):.2f}% unexpected, e.g. {sample}"
    elif result.exception_info and result.exception_info.get("raised_exception"):
        detail = f": error {result.exception_info.get('exception_message')}"
    return f"{config.type} on {where}{detail}"


@dataclass(frozen=True)
class GreatExpectationsValidator:
    """Rows against the expectation suite kept in the repo: the suite is their reference."""

    suite_path: Path = SUITE_PATH

    def validate(
        self, current: pd.DataFrame, *, reference: pd.DataFrame | None = None, report_dir: Path
    ) -> ValidationReport:
        """Validate `current` with the suite; write the HTML report under `report_dir`."""
        if reference is not None:
            raise ValueError("Great Expectations checks rows against its suite, not other rows")
        import great_expectations as gx
        from great_expectations.render.renderer import ValidationResultsPageRenderer
        from great_expectations.render.view import DefaultJinjaPageView

        context = gx.get_context(mode="ephemeral")
        batch_definition = (
            context.data_sources.add_pandas("training")
            .add_dataframe_asset("rows")
            .add_batch_definition_whole_dataframe("all")
        )
        suite = context.suites.add(gx.ExpectationSuite(**json.loads(self.suite_path.read_text())))
        result = batch_definition.get_batch(batch_parameters={"dataframe": current}).validate(
            suite, result_format="SUMMARY"
        )

        report_dir.mkdir(parents=True, exist_ok=True)
        artifact = report_dir / "great_expectations.html"
        artifact.write_text(
            DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
        )
        failures = tuple(_describe_failure(r) for r in result.results if not r.success)
        statistics = result.statistics
        return ValidationReport(
            tool="great_expectations",
            passed=bool(result.success),
            metrics={
                "gx_evaluated_expectations": float(statistics["evaluated_expectations"]),
                "gx_successful_expectations": float(statistics["successful_expectations"]),
                "gx_success_percent": float(statistics["success_percent"] or 0.0),
            },
            artifact_path=artifact,
            failures=failures,
            details={"suite_sha256": suite_hash(self.suite_path), "rows": len(current)},
        )
