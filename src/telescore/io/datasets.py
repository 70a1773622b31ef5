"""Where training rows come from, and a fingerprint of exactly the rows used."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from telescore.core.params import DataParams


@dataclass(frozen=True)
class Dataset:
    """Training rows in time order, with where they came from."""

    frame: pd.DataFrame
    source: str
    fingerprint: str
    """sha256 of the rows used, in a canonical CSV form: the model's link to its data."""


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


def source_from_params(params: DataParams, root: Path = Path()) -> DatasetSource:
    """Return the source named by the data parameters, relative to the project root."""
    return CsvSource(root / params.path, params.sample_rows, params.drop_columns)
