"""Where training rows come from, and a fingerprint of exactly the rows used."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

import pandas as pd

from telescore.core.params import DataParams

DATASET_FILE: Final = Path("data") / "bank-additional-full.csv.gz"
"""The versioned dataset (UCI Bank Marketing, `;`-separated), relative to the project root."""


@dataclass(frozen=True)
class Dataset:
    """Training rows in time order, with where they came from."""

    frame: pd.DataFrame
    source: str
    fingerprint: str
    """sha256 of the rows used, in a canonical CSV form: the model's link to its data."""
    production_rows: int = 0
    """How many of the rows (the last ones) are labelled production predictions."""
    production_ids: tuple[str, ...] = ()
    """Prediction ids of the production rows, in row order (they are the last rows)."""

    @property
    def last_prediction_id(self) -> str | None:
        """Return the newest production prediction among the rows, if any."""
        return self.production_ids[-1] if self.production_ids else None


class DatasetSource(Protocol):
    """Anything that yields labelled rows in time order (a file now; MongoDB outcomes later)."""

    def load(self) -> Dataset:
        """Return the rows."""
        ...


def fingerprint_rows(frame: pd.DataFrame) -> str:
    """Return the sha256 of the rows in a canonical `;`-separated CSV form."""
    canonical = frame.to_csv(sep=";", index=False, lineterminator="\n").encode()
    return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class CsvSource:
    """The versioned dataset file (plain or gzipped), optionally cut to its most recent rows."""

    path: Path
    sample_rows: int | None = None
    drop_columns: tuple[str, ...] = ()

    def load(self) -> Dataset:
        """Read the file, keep the last `sample_rows` rows less `drop_columns`, fingerprint them."""
        if not self.path.exists():
            raise FileNotFoundError(f"dataset not found: {self.path}")
        # Read every column as it is written; dtypes are validated later, not coerced here.
        frame = pd.read_csv(self.path, sep=";")
        if self.sample_rows is not None:
            frame = frame.iloc[-self.sample_rows :].reset_index(drop=True)
        frame = frame.drop(columns=[c for c in self.drop_columns if c in frame.columns])
        return Dataset(frame, str(self.path), fingerprint_rows(frame))


def with_production_rows(base: Dataset, production: pd.DataFrame) -> Dataset:
    """Append labelled production rows (oldest first) after the base rows, and fingerprint both.

    `production` has the prediction id and timestamp besides the base columns; only the base
    columns are kept, in their order, so the gates and the model see one schema.
    """
    if production.empty:
        return base
    missing = [column for column in base.frame.columns if column not in production.columns]
    if missing:
        raise ValueError(f"production rows lack the columns {missing}")
    frame = pd.concat([base.frame, production.loc[:, list(base.frame.columns)]], ignore_index=True)
    return Dataset(
        frame,
        f"{base.source} + {len(production)} labelled production rows",
        fingerprint_rows(frame),
        production_rows=len(production),
        production_ids=tuple(str(each) for each in production["prediction_id"]),
    )


def write_snapshot(dataset: Dataset, path: Path) -> Path:
    """Write exactly the rows used (gzipped, in the fingerprint's CSV form) so a run can repeat."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same rows give the same bytes.
    dataset.frame.to_csv(
        path, sep=";", index=False, lineterminator="\n", compression={"method": "gzip", "mtime": 0}
    )
    return path


def read_snapshot(path: Path, fingerprint: str) -> pd.DataFrame:
    """Read a snapshot written by `write_snapshot`; raise if its rows are not `fingerprint`'s."""
    frame = pd.read_csv(path, sep=";")
    found = fingerprint_rows(frame)
    if found != fingerprint:
        raise ValueError(f"snapshot {path} holds rows {found[:12]}, expected {fingerprint[:12]}")
    return frame


def source_from_params(params: DataParams, root: Path = Path()) -> DatasetSource:
    """Return the source named by the data parameters, relative to the project root."""
    return CsvSource(root / params.path, params.sample_rows, params.drop_columns)
