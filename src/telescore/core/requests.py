"""Scoring requests: check the inputs of a V2 request and turn them into feature columns.

Pure logic, no server types: a transport (the MLServer runtime) hands over each input's name,
datatype, shape and data, and gets back validated columns or an `InvalidRequestError` that
names the offending field. Every check runs before the model sees a single row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from telescore.core.schema import (
    CATEGORICAL_VALUES,
    FEATURES,
    INTEGER_FEATURES,
    NUMERIC_BOUNDS,
    NUMERIC_FEATURES,
)

DEFAULT_MAX_ROWS: Final = 1000
"""Largest batch one request may carry: bigger ones are refused, not split."""
REQUEST_FIELD: Final = "inputs"
"""Field named by errors about the request as a whole (no inputs, an empty batch)."""

_INTEGER_DATATYPES: Final = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_FLOAT_DATATYPES: Final = frozenset({"FP16", "FP32", "FP64"})
_NUMERIC_DATATYPES: Final = _INTEGER_DATATYPES | _FLOAT_DATATYPES
_STRING_DATATYPE: Final = "BYTES"
_ALLOWED_VALUES: Final = {name: frozenset(values) for name, values in CATEGORICAL_VALUES.items()}
_EXPECTED: Final = frozenset(FEATURES)


class InvalidRequestError(ValueError):
    """A request the model must not score; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid input '{field}': {message}")
        self.field = field
        """The input (or `inputs` for the request as a whole) that is wrong."""


@dataclass(frozen=True)
class InputTensor:
    """One named input of a V2 request, as received."""

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any


@dataclass(frozen=True)
class FeatureBatch:
    """Validated feature columns of one request, one value per row in each."""

    columns: Mapping[str, np.ndarray]
    """Integer features as int64, float features as float64, categorical ones as str objects."""
    n_rows: int

    def rows(self) -> list[dict[str, Any]]:
        """Return the rows as plain Python dicts in schema order (for the prediction log)."""
        as_lists = {name: self.columns[name].tolist() for name in FEATURES}
        return [{name: as_lists[name][row] for name in FEATURES} for row in range(self.n_rows)]


def validate_inputs(
    inputs: Sequence[InputTensor], max_rows: int = DEFAULT_MAX_ROWS
) -> FeatureBatch:
    """Check a request's inputs against the schema; return its feature columns."""
    _check_names(inputs)
    by_name = {tensor.name: tensor for tensor in inputs}
    n_rows = _check_row_counts(by_name, max_rows)
    columns = {
        name: _categorical_column(by_name[name])
        if name in _ALLOWED_VALUES
        else _numeric_column(by_name[name])
        for name in FEATURES
    }
    return FeatureBatch(columns=columns, n_rows=n_rows)


def out_of_range_features(
    batch: FeatureBatch, feature_ranges: Mapping[str, Sequence[float]]
) -> list[list[str]]:
    """Name, per row, the numeric features outside the range the model was trained on."""
    names = [name for name in NUMERIC_FEATURES if name in feature_ranges]
    if not names:
        return [[] for _ in range(batch.n_rows)]
    outside = np.column_stack(
        [
            (batch.columns[name] < feature_ranges[name][0])
            | (batch.columns[name] > feature_ranges[name][1])
            for name in names
        ]
    )
    flagged = np.flatnonzero(outside.any(axis=1))
    flags: list[list[str]] = [[] for _ in range(batch.n_rows)]
    for row in flagged.tolist():
        flags[row] = [name for name, out in zip(names, outside[row], strict=True) if out]
    return flags


def _check_names(inputs: Sequence[InputTensor]) -> None:
    if not inputs:
        raise InvalidRequestError(REQUEST_FIELD, f"the request has no inputs; expected {FEATURES}")
    seen: set[str] = set()
    for tensor in inputs:
        if tensor.name in seen:
            raise InvalidRequestError(tensor.name, "sent more than once")
        seen.add(tensor.name)
    unknown = [tensor.name for tensor in inputs if tensor.name not in _EXPECTED]
    if unknown:
        raise InvalidRequestError(
            unknown[0], f"unknown input (unknown: {unknown}); expected {FEATURES}"
        )
    missing = [name for name in FEATURES if name not in seen]
    if missing:
        raise InvalidRequestError(missing[0], f"missing input (missing: {missing})")


def _check_row_counts(by_name: Mapping[str, InputTensor], max_rows: int) -> int:
    """Check every input's shape against its data; return the common number of rows."""
    n_rows: int | None = None
    first = ""
    for name in FEATURES:
        tensor = by_name[name]
        rows = _rows_of(tensor)
        if n_rows is None:
            n_rows, first = rows, name
        elif rows != n_rows:
            raise InvalidRequestError(
                name, f"has {rows} rows but '{first}' has {n_rows}: one value per row per input"
            )
    assert n_rows is not None  # noqa: S101 - _check_names guarantees at least one input
    if n_rows == 0:
        raise InvalidRequestError(REQUEST_FIELD, "the batch is empty: send at least one row")
    if n_rows > max_rows:
        raise InvalidRequestError(
            REQUEST_FIELD, f"the batch has {n_rows} rows, more than the limit of {max_rows}"
        )
    return n_rows


def _rows_of(tensor: InputTensor) -> int:
    """Return the rows a tensor declares, after checking that its data fills its shape."""
    shape = list(tensor.shape)
    if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InvalidRequestError(
            tensor.name, f"shape {shape} is not [rows] or [rows, 1]: one value per row"
        )
    if any(not isinstance(size, int) or size < 0 for size in shape):
        raise InvalidRequestError(tensor.name, f"shape {shape} holds a negative size")
    data = tensor.data
    if isinstance(data, str | bytes) or not isinstance(data, Sequence):
        raise InvalidRequestError(tensor.name, "data must be a list with one value per row")
    # Nested data ([[v], [v]]) holds one single-item list per row; flat data one value per row.
    if len(data) != shape[0]:
        raise InvalidRequestError(
            tensor.name, f"shape {shape} declares {shape[0]} rows but data holds {len(data)}"
        )
    return shape[0]


def _flat(tensor: InputTensor, dtype: type | None = None) -> np.ndarray:
    """Return the data as a one-dimensional array, refusing ragged or over-nested data."""
    try:
        array = np.asarray(tensor.data, dtype=dtype)
    except (ValueError, TypeError) as error:
        raise InvalidRequestError(
            tensor.name, "data is ragged or mixes lists and values"
        ) from error
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise InvalidRequestError(tensor.name, "data must hold one value per row")
    return array


def _datatype(tensor: InputTensor) -> str:
    # REST requests carry a Datatype enum, gRPC ones the plain string.
    return str(getattr(tensor.datatype, "value", tensor.datatype))


def _numeric_column(tensor: InputTensor) -> np.ndarray:
    name = tensor.name
    datatype = _datatype(tensor)
    if datatype not in _NUMERIC_DATATYPES:
        raise InvalidRequestError(name, f"datatype {datatype} is not numeric (use INT64 or FP64)")
    array = _flat(tensor)
    # Checking the decoded kind, not only the declared datatype: "35" or null in an FP64 input
    # must be refused here rather than coerced, or crash the model with a 500.
    if array.dtype.kind not in "iuf":
        raise InvalidRequestError(name, f"expected numbers, got {_describe(array)}")
    if datatype in _INTEGER_DATATYPES and array.dtype.kind == "f":
        raise InvalidRequestError(name, f"datatype {datatype} but data holds non-integer numbers")
    values = array.astype(np.float64, copy=False)
    finite = np.isfinite(values)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise InvalidRequestError(name, f"row {row} is {values[row]}: values must be finite")
    low, high = NUMERIC_BOUNDS[name]
    outside = (values < low) | (values > high)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise InvalidRequestError(
            name, f"row {row} is {values[row]:g}, outside the plausible range [{low:g}, {high:g}]"
        )
    if name in INTEGER_FEATURES:
        whole = values == np.round(values)
        if not whole.all():
            row = int(np.flatnonzero(~whole)[0])
            raise InvalidRequestError(name, f"row {row} is {values[row]:g}: must be a whole number")
        return values.astype(np.int64)
    return values


def _categorical_column(tensor: InputTensor) -> np.ndarray:
    name = tensor.name
    datatype = _datatype(tensor)
    if datatype != _STRING_DATATYPE:
        raise InvalidRequestError(name, f"datatype {datatype} is not BYTES (a string category)")
    array = _flat(tensor, dtype=object)
    allowed = _ALLOWED_VALUES[name]
    values = array.tolist()
    # One set operation in C for the usual, valid batch; the row loop only runs to explain a
    # refusal or to decode gRPC bytes. Unhashable values (nested lists) also take the loop.
    with contextlib.suppress(TypeError):
        if allowed.issuperset(values):
            return array
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            # gRPC carries BYTES as raw bytes: decode them to compare with the schema.
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequestError(name, f"row {row} is not UTF-8 text") from None
            array[row] = value
        if not isinstance(value, str):
            raise InvalidRequestError(
                name, f"row {row} is {type(value).__name__} {value!r}, expected a string"
            )
        if value not in allowed:
            raise InvalidRequestError(
                name, f"row {row} is {value!r}, not one of {CATEGORICAL_VALUES[name]}"
            )
    return array


def _describe(array: np.ndarray) -> str:
    """Say what kind of values a refused array holds, for error messages."""
    if array.dtype.kind in "US":
        return "strings"
    if array.dtype.kind == "b":
        return "booleans"
    if any(value is None for value in array.tolist()):
        return "null values"
    return "non-numeric values"
