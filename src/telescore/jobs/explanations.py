"""Reasons for the rows a caller sees, from the very model version that scored them.

The app loads each served version once from the registry (scikit-learn flavour) and keeps it;
a version that cannot be loaded gives no reasons, never an error on the page. A row's reason is
worked out once per call list (its population): page views after the first cost a lookup.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from telescore.core.explanations import contributions, reasons, typical_values
from telescore.core.prospects import PROSPECT_FIELDS
from telescore.io.registry import ModelVersionRef, Registry

logger = logging.getLogger(__name__)


class Explainer:
    """Explains rows with the version that scored them; loads each version once."""

    def __init__(
        self,
        registry: Callable[[], Registry],
        inputs: Callable[[pd.DataFrame], pd.DataFrame],
    ) -> None:
        """`inputs` gives the model's inputs of profiles indexed by id, as they are scored."""
        # Opened on the first page view: a client sets MLflow's URIs for the whole process.
        self._open_registry = registry
        self._inputs = inputs
        self._registry: Registry | None = None
        self._lock = threading.Lock()
        self._models: dict[str, Any] = {}
        self._typical: dict[str, Any] | None = None
        self._reasons_lock = threading.Lock()
        self._reasons: dict[str, str] = {}

    def set_population(self, prospects: pd.DataFrame) -> None:
        """Take the typical values that contributions are measured against (a new call list)."""
        self._typical = typical_values(prospects, PROSPECT_FIELDS)
        with self._reasons_lock:
            self._reasons = {}

    def reasons(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        """Return why each shown row of the call list scores high (its top fields), by id."""
        if not rows:
            return {}
        frame = pd.DataFrame(list(rows)).set_index("prospect_id")
        with self._reasons_lock:
            missing = [each for each in frame.index if each not in self._reasons]
        if missing:
            chosen = frame.loc[missing]
            explained = self.explain(self._inputs(chosen), chosen["model_version"])
            with self._reasons_lock:
                self._reasons.update({each: explained.get(each, "") for each in missing})
        with self._reasons_lock:
            return {each: self._reasons.get(each, "") for each in frame.index}

    def explain(self, rows: pd.DataFrame, versions: pd.Series) -> dict[str, str]:
        """Return a reason per row (indexed by prospect id), for the versions that scored them."""
        if self._typical is None or rows.empty:
            return {}
        explained: dict[str, str] = {}
        for version, index in rows.groupby(versions).groups.items():
            model = self._model(str(version))
            if model is None:
                continue
            chosen = rows.loc[index]
            table = contributions(model_scores(model), chosen, self._typical)
            for position, prospect_id in enumerate(chosen.index):
                row = chosen.iloc[position].to_dict()
                explained[str(prospect_id)] = reasons(table.iloc[position], row)
        return explained

    def _model(self, version: str) -> Any | None:
        with self._lock:
            if version not in self._models:
                try:
                    self._registry = self._registry or self._open_registry()
                    ref = ModelVersionRef(self._registry.model_name, version)
                    self._models[version] = self._registry.load_model(ref)
                except Exception as error:  # noqa: BLE001 - reasons are a nicety, never a failure
                    logger.warning("no reasons: version %s cannot be loaded: %s", version, error)
                    self._models[version] = None
            return self._models[version]


def model_scores(model: Any) -> Callable[[pd.DataFrame], np.ndarray]:
    """Return a function giving a scikit-learn classifier's probability of a subscription."""

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(model.predict_proba(frame)[:, 1])

    return predict
