"""Deepchecks (tabular) adapter: train-test and model evaluation checks that gate registration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from telescore.core.params import ValidationParams
from telescore.core.schema import CATEGORICAL_FEATURES
from telescore.validation.base import ValidationReport

LABEL = "label"


def _suite(params: ValidationParams) -> Any:
    from deepchecks.tabular import Suite
    from deepchecks.tabular.checks import (
        DatasetsSizeComparison,
        FeatureDrift,
        NewCategoryTrainTest,
        NewLabelTrainTest,
        RocReport,
        SimpleModelComparison,
        TrainTestPerformance,
        TrainTestSamplesMix,
    )

    # Conditions catch a broken pipeline or a useless model, not the economy moving: drift of
    # the macro indicators is expected and handled by retraining, so it is allowed in number.
    return Suite(
        "telescore model validation",
        DatasetsSizeComparison().add_condition_test_size_greater_or_equal(100),
        TrainTestSamplesMix().add_condition_duplicates_ratio_less_or_equal(params.max_samples_mix),
        NewLabelTrainTest().add_condition_new_labels_number_less_or_equal(0),
        # A later period brings calendar months the training rows never saw: that is time
        # passing, not a data error, so `month` is left out of the new-category gate.
        NewCategoryTrainTest(
            ignore_columns=["month"]
        ).add_condition_new_category_ratio_less_or_equal(params.max_new_category_ratio),
        FeatureDrift().add_condition_drift_score_less_than(
            max_allowed_categorical_score=params.max_categorical_drift,
            max_allowed_numeric_score=params.max_numeric_drift,
            allowed_num_features_exceeding_threshold=params.drifting_features_allowed,
        ),
        RocReport().add_condition_auc_greater_than(params.min_roc_auc),
        TrainTestPerformance(
            scorers=["roc_auc"]
        ).add_condition_train_test_relative_degradation_less_than(params.max_auc_degradation),
        SimpleModelComparison(
            strategy="most_frequent", scorers=["roc_auc"]
        ).add_condition_gain_greater_than(params.min_gain_over_constant),
    )


def labelled_rows(features: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Return model inputs with their 0/1 label in a `label` column, as the validator takes them."""
    return features.assign(**{LABEL: labels})


@dataclass(frozen=True)
class DeepchecksValidator:
    """A fitted model on its holdout (current) against its training rows (reference).

    Rows are the model inputs and a 0/1 `label` column (`labelled_rows`). Any failed condition
    or errored check fails the report.
    """

    model: Any
    params: ValidationParams
    feature_importance: dict[str, float] | None = None
    """Importances to use; without them the checks skip the permutation fallback (a minute)."""

    def validate(
        self, current: pd.DataFrame, *, reference: pd.DataFrame | None = None, report_dir: Path
    ) -> ValidationReport:
        """Run the checks on the model; write the HTML report under `report_dir`."""
        if reference is None:
            raise ValueError("Deepchecks compares the holdout with the training rows: none given")
        from deepchecks.tabular import Dataset

        def dataset(rows: pd.DataFrame) -> Any:
            return Dataset(rows, label=LABEL, cat_features=list(CATEGORICAL_FEATURES))

        importance = self.feature_importance
        result = _suite(self.params).run(
            train_dataset=dataset(reference),
            test_dataset=dataset(current),
            model=self.model,
            feature_importance=pd.Series(importance) if importance else None,
            # Without given importances, skip the permutation fallback: it alone takes about a
            # minute.
            feature_importance_timeout=120 if importance else 0,
        )
        return _report(result, report_dir)


def _report(result: Any, report_dir: Path) -> ValidationReport:
    from deepchecks.core.check_result import CheckFailure, CheckResult

    failures: list[str] = []
    passed_conditions = 0
    for check in result.results:
        if isinstance(check, CheckFailure):
            # An errored check is a failure, never a silent pass.
            failures.append(f"{check.header}: check errored: {check.exception}")
        elif isinstance(check, CheckResult):
            for condition in check.conditions_results:
                if condition.is_pass():
                    passed_conditions += 1
                else:
                    failures.append(f"{check.get_header()}: {condition.name}: {condition.details}")
    report_dir.mkdir(parents=True, exist_ok=True)
    artifact = report_dir / "deepchecks.html"
    result.save_as_html(str(artifact), as_widget=False)
    return ValidationReport(
        tool="deepchecks",
        passed=not failures,
        metrics={
            "deepchecks_failed_conditions": float(len(failures)),
            "deepchecks_passed_conditions": float(passed_conditions),
        },
        artifact_path=artifact,
        failures=tuple(failures),
    )
