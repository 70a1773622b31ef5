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
ID_FIELD: Final = "id"
"""The V2 request id: the client's own reference, echoed in the answer and logged."""
MAX_ID_LENGTH: Final = 128

_INTEGER_DATATYPES: Final = frozenset(
    {"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_FLOAT_DATATYPES: Final = frozenset({"FP16", "FP32", "FP64"})
_NUMERIC_DATATYPES: Final = _INTEGER_DATATYPES | _FLOAT_DATATYPES
_STRING_DATATYPE: Final = "BYTES"
_ALLOWED_VALUES: Final = {name: frozenset(values) for name, values in CATEGORICAL_VALUES.items()}
_EXPECTED: Final = frozenset(FEATURES)
_INTEGERS: Final = frozenset(INTEGER_FEATURES)
_INTEGER_TYPES: Final = frozenset({int})
_NUMBER_TYPES: Final = frozenset({int, float})
_NUMERIC_INDEX: Final = {name: index for index, name in enumerate(NUMERIC_FEATURES)}
_INTEGER_ROWS: Final = [_NUMERIC_INDEX[name] for name in INTEGER_FEATURES]
_LOW: Final = np.array([NUMERIC_BOUNDS[name][0] for name in NUMERIC_FEATURES], dtype=np.float64)
_HIGH: Final = np.array([NUMERIC_BOUNDS[name][1] for name in NUMERIC_FEATURES], dtype=np.float64)


class InvalidRequestError(ValueError):
    """A request the model must not score; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid input {_show(field)}: {message}")
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
    numeric: np.ndarray
    """The numeric features as one float64 matrix, one row per feature in NUMERIC_FEATURES order."""

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
    numeric = _numeric_matrix([by_name[name] for name in NUMERIC_FEATURES], n_rows)
    columns: dict[str, np.ndarray] = {}
    for name in FEATURES:
        if name in _ALLOWED_VALUES:
            columns[name] = _categorical_column(by_name[name])
        else:
            values = numeric[_NUMERIC_INDEX[name]]
            columns[name] = values.astype(np.int64) if name in _INTEGERS else values
    return FeatureBatch(columns=columns, n_rows=n_rows, numeric=numeric)


def check_request_id(request_id: str) -> None:
    """Refuse a client id over MAX_ID_LENGTH characters or holding anything but printable ASCII."""
    # It is echoed in the answer, in MLServer's response headers too (Ce-Id, which HTTP
    # encodes as Latin-1), and stored with every row: bounded and plain, checked before scoring.
    if len(request_id) > MAX_ID_LENGTH:
        raise InvalidRequestError(
            ID_FIELD, f"{len(request_id)} characters, more than the limit of {MAX_ID_LENGTH}"
        )
    if not (request_id.isascii() and request_id.isprintable()):
        raise InvalidRequestError(
            ID_FIELD, f"{_show(request_id)} holds characters other than printable ASCII"
        )


class TrainingRanges:
    """The [min, max] of each numeric input seen in training, as vectors for a whole batch."""

    def __init__(self, feature_ranges: Mapping[str, Sequence[float]]) -> None:
        self.names = [name for name in NUMERIC_FEATURES if name in feature_ranges]
        self._index = [_NUMERIC_INDEX[name] for name in self.names]
        self._low = np.array([feature_ranges[name][0] for name in self.names], dtype=np.float64)
        self._high = np.array([feature_ranges[name][1] for name in self.names], dtype=np.float64)

    def flags(self, batch: FeatureBatch) -> list[list[str]]:
        """Name, per row, the numeric features outside the range the model was trained on."""
        flags: list[list[str]] = [[] for _ in range(batch.n_rows)]
        if not self.names:
            return flags
        values = batch.numeric[self._index]
        outside = (values < self._low[:, None]) | (values > self._high[:, None])
        for row in np.flatnonzero(outside.any(axis=0)).tolist():
            flags[row] = [
                name for name, out in zip(self.names, outside[:, row], strict=True) if out
            ]
        return flags


def out_of_range_features(
    batch: FeatureBatch, feature_ranges: Mapping[str, Sequence[float]]
) -> list[list[str]]:
    """Name, per row, the numeric features outside the range the model was trained on."""
    return TrainingRanges(feature_ranges).flags(batch)


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
            unknown[0], f"unknown input (unknown: {_show(unknown, 200)}); expected {FEATURES}"
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
    rows = shape[0]
    if type(rows) is not int or rows < 0:
        raise InvalidRequestError(tensor.name, f"shape {shape} holds a negative size")
    data = tensor.data
    # `type(...) is list` first: the Sequence ABC check is slow and transports send lists.
    if type(data) is not list and (isinstance(data, str | bytes) or not isinstance(data, Sequence)):
        raise InvalidRequestError(tensor.name, "data must be a list with one value per row")
    # Nested data ([[v], [v]]) holds one single-item list per row; flat data one value per row.
    if len(data) != rows:
        raise InvalidRequestError(
            tensor.name, f"shape {shape} declares {rows} rows but data holds {len(data)}"
        )
    return rows


def _values(tensor: InputTensor) -> list[Any]:
    """Return the data as one value per row, unwrapping nested [[v], [v]] data."""
    data = tensor.data
    if data and isinstance(data[0], list | tuple):
        if not all(isinstance(row, list | tuple) and len(row) == 1 for row in data):
            raise InvalidRequestError(tensor.name, "data must hold one value per row")
        return [row[0] for row in data]
    return data if type(data) is list else list(data)


def _numeric_values(tensor: InputTensor) -> list[Any]:
    """Return a numeric input's values after checking its datatype and each value's type."""
    name = tensor.name
    datatype = _datatype(tensor)
    if datatype not in _NUMERIC_DATATYPES:
        raise InvalidRequestError(name, f"datatype {datatype} is not numeric (use INT64 or FP64)")
    values = _values(tensor)
    # Each value's own type, not only the declared datatype: "35" or null in an FP64 input must
    # be refused here rather than coerced, or crash the model with a 500. `type(v) in` also
    # refuses booleans, which isinstance(v, int) would let through.
    integers_only = datatype in _INTEGER_DATATYPES
    allowed = _INTEGER_TYPES if integers_only else _NUMBER_TYPES
    for row, value in enumerate(values):
        if type(value) not in allowed:
            # NumPy scalars only come from in-process callers; accept them the slow way.
            if isinstance(value, np.integer) or (
                not integers_only and isinstance(value, np.floating)
            ):
                continue
            if integers_only and type(value) in _NUMBER_TYPES:
                raise InvalidRequestError(
                    name, f"row {row} is {_show(value)} but the datatype is {datatype}"
                )
            raise InvalidRequestError(name, f"row {row} is {_describe(value)}, expected a number")
    return values


def _numeric_matrix(tensors: Sequence[InputTensor], n_rows: int) -> np.ndarray:
    """Check every numeric input at once; return them as a (features x rows) float64 matrix."""
    # One matrix for all numeric inputs: a handful of NumPy calls per request instead of a
    # handful per input, which is what a single-row request spends most of its time on.
    values = [_numeric_values(tensor) for tensor in tensors]
    try:
        matrix = np.array(values, dtype=np.float64).reshape(len(tensors), n_rows)
    except OverflowError:
        # An integer too large for a float64 (JSON allows any number of digits).
        name = next(t.name for t, v in zip(tensors, values, strict=True) if not _fits_float(v))
        raise InvalidRequestError(name, "a value is too large to be a number") from None
    finite = np.isfinite(matrix)
    if not finite.all():
        feature, row = _first(~finite)
        raise InvalidRequestError(
            tensors[feature].name, f"row {row} is {matrix[feature, row]}: values must be finite"
        )
    outside = (matrix < _LOW[:, None]) | (matrix > _HIGH[:, None])
    if outside.any():
        feature, row = _first(outside)
        low, high = _LOW[feature], _HIGH[feature]
        raise InvalidRequestError(
            tensors[feature].name,
            f"row {row} is {matrix[feature, row]:g}, "
            f"outside the plausible range [{low:g}, {high:g}]",
        )
    integers = matrix[_INTEGER_ROWS]
    fractional = integers != np.round(integers)
    if fractional.any():
        feature, row = _first(fractional)
        raise InvalidRequestError(
            tensors[_INTEGER_ROWS[feature]].name,
            f"row {row} is {integers[feature, row]:g}: must be a whole number",
        )
    return matrix


def _first(mask: np.ndarray) -> tuple[int, int]:
    """Return (feature, row) of the first True in a (features x rows) mask."""
    feature, row = np.argwhere(mask)[0]
    return int(feature), int(row)


def _datatype(tensor: InputTensor) -> str:
    # REST requests carry a Datatype enum, gRPC ones the plain string.
    return str(getattr(tensor.datatype, "value", tensor.datatype))


def _categorical_column(tensor: InputTensor) -> np.ndarray:
    name = tensor.name
    datatype = _datatype(tensor)
    if datatype != _STRING_DATATYPE:
        raise InvalidRequestError(name, f"datatype {datatype} is not BYTES (a string category)")
    values = _values(tensor)
    allowed = _ALLOWED_VALUES[name]
    # One set operation in C for the usual, valid batch; the row loop only runs to explain a
    # refusal or to decode gRPC bytes. Unhashable values (nested lists) also take the loop.
    with contextlib.suppress(TypeError):
        if allowed.issuperset(values):
            return _object_array(values)
    values = list(values)  # a copy: decoded bytes replace their row, the request stays as sent
    for row, value in enumerate(values):
        if isinstance(value, bytes):
            # gRPC carries BYTES as raw bytes: decode them to compare with the schema.
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequestError(name, f"row {row} is not UTF-8 text") from None
            values[row] = value
        if not isinstance(value, str):
            raise InvalidRequestError(name, f"row {row} is {_describe(value)}, expected a string")
        if value not in allowed:
            raise InvalidRequestError(
                name, f"row {row} is {_show(value)}, not one of {CATEGORICAL_VALUES[name]}"
            )
    return _object_array(values)


def _object_array(values: list[Any]) -> np.ndarray:
    """Return a 1-D object array of the values (np.array would nest list-like values)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _describe(value: Any) -> str:
    """Say what a refused value is, for error messages."""
    if value is None:
        return "null"
    return f"{type(value).__name__} {_show(value)}"


def _show(value: Any, limit: int = 60) -> str:
    """Return a value's repr cut to `limit` characters: error messages echo client data."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _fits_float(values: list[Any]) -> bool:
    try:
        np.array(values, dtype=np.float64)
    except OverflowError:
        return False
    return True
