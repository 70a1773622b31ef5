"""Scoring requests: check the inputs of a V2 request and turn them into feature columns.

Pure logic, no server types: a transport (the MLServer runtime) hands over each input's name,
datatype, shape and data, and gets back validated columns or an `InvalidRequestError` that
names the offending field. Every check runs before the model sees a single row.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Final, NoReturn, Protocol

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
_ALLOWED_BYTES: Final = {
    name: frozenset(value.encode() for value in values) for name, values in _ALLOWED_VALUES.items()
}
_EXPECTED: Final = frozenset(FEATURES)
_INTEGER_TYPES: Final = frozenset({int})
_NUMBER_TYPES: Final = frozenset({int, float})
_NO_TYPES: Final[frozenset[type]] = frozenset()
_NESTED: Final = (list, tuple)
_CATEGORY, _INTEGER, _FLOAT = "category", "integer", "float"
_KINDS: Final = {
    name: _CATEGORY
    if name in CATEGORICAL_VALUES
    else _INTEGER
    if name in INTEGER_FEATURES
    else _FLOAT
    for name in FEATURES
}
_BOUNDS: Final = [(name, *NUMERIC_BOUNDS[name]) for name in NUMERIC_FEATURES]
SMALL_BATCH: Final = 8
"""Up to this many rows, validation, scoring and flags work value by value, in plain Python."""
_INTEGER_FEATURES: Final = frozenset(INTEGER_FEATURES)
_LOW: Final = np.array([[NUMERIC_BOUNDS[name][0]] for name in NUMERIC_FEATURES], dtype=np.float64)
_HIGH: Final = np.array([[NUMERIC_BOUNDS[name][1]] for name in NUMERIC_FEATURES], dtype=np.float64)
"""Plausible bounds as (features x 1) columns, to compare with a (features x rows) matrix."""


class InvalidRequestError(ValueError):
    """A request the model must not score; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"invalid input {_show(field)}: {message}")
        self.field = field
        """The input (or `inputs` for the request as a whole) that is wrong."""


class TensorLike(Protocol):
    """One named input of a V2 request, as a transport delivers it.

    MLServer's REST inputs carry an enum datatype and wrap their data (`.root`); its gRPC inputs
    carry plain strings and lists. Both are read as they are, with no copy per input.
    """

    @property
    def name(self) -> str:
        """The input's name: a feature of the schema."""

    @property
    def datatype(self) -> Any:
        """A V2 datatype (INT64, FP64, BYTES...), as a string or an enum with `.value`."""

    @property
    def shape(self) -> Sequence[int]:
        """[rows] or [rows, 1]."""

    @property
    def data(self) -> Any:
        """The values: a list, or a wrapper holding it as `.root`."""


@dataclass(frozen=True)
class InputTensor:
    """One named input of a V2 request, built by hand (tests, in-process callers)."""

    name: str
    datatype: str
    shape: Sequence[int]
    data: Any


@dataclass(frozen=True)
class FeatureBatch:
    """The validated features of one request."""

    columns: Mapping[str, list[Any]]
    """Each feature's values as sent, one per row (nested rows unwrapped, gRPC bytes decoded)."""
    n_rows: int

    @cached_property
    def numeric(self) -> np.ndarray:
        """The numeric features as one float64 matrix, one row per feature (NUMERIC_FEATURES)."""
        values = [self.columns[name] for name in NUMERIC_FEATURES]
        return np.array(values, dtype=np.float64).reshape(len(values), self.n_rows)

    @property
    def small(self) -> bool:
        """Whether plain Python beats NumPy on this batch (NumPy's cost is per call)."""
        return self.n_rows <= SMALL_BATCH

    @classmethod
    def of(cls, columns: Mapping[str, Sequence[Any]]) -> FeatureBatch:
        """Build a batch from columns already known to be valid (a training frame's)."""
        values = {name: list(columns[name]) for name in FEATURES}
        return cls(columns=values, n_rows=len(values[FEATURES[0]]))

    def rows(self) -> list[dict[str, Any]]:
        """Return the rows as plain dicts in schema order."""
        values = zip(*(self.columns[name] for name in FEATURES), strict=True)
        return [dict(zip(FEATURES, row, strict=True)) for row in values]


def validate_inputs(inputs: Sequence[TensorLike], max_rows: int = DEFAULT_MAX_ROWS) -> FeatureBatch:
    """Check a request's inputs against the schema; return its features."""
    columns = _columns(inputs)
    batch = FeatureBatch(columns=columns, n_rows=_row_count(columns, max_rows))
    if batch.small:
        _check_bounds_of_values(columns)
    else:
        _check_bounds_of_matrix(batch)
    return batch


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
        # Every numeric feature, in NUMERIC_FEATURES order: one comparison covers the batch, and
        # a feature the model has no range for can never be outside (-inf, inf).
        self._ranges = [
            (name, float(feature_ranges[name][0]), float(feature_ranges[name][1]))
            for name in NUMERIC_FEATURES
            if name in feature_ranges
        ]
        infinite = [-np.inf, np.inf]
        bounds = [feature_ranges.get(name, infinite) for name in NUMERIC_FEATURES]
        self._low = np.array([[low] for low, _ in bounds], dtype=np.float64)
        self._high = np.array([[high] for _, high in bounds], dtype=np.float64)

    def flags(self, batch: FeatureBatch) -> list[list[str]]:
        """Name, per row, the numeric features outside the range the model was trained on."""
        if batch.small:
            flags: list[list[str]] = [[] for _ in range(batch.n_rows)]
            for name, low, high in self._ranges:
                for row, value in enumerate(batch.columns[name]):
                    if value < low or value > high:
                        flags[row].append(name)
            return flags
        outside = (batch.numeric < self._low) | (batch.numeric > self._high)
        if not outside.any():
            return [[] for _ in range(batch.n_rows)]
        return [
            [name for name, out in zip(NUMERIC_FEATURES, column, strict=True) if out]
            for column in outside.T.tolist()
        ]


def out_of_range_features(
    batch: FeatureBatch, feature_ranges: Mapping[str, Sequence[float]]
) -> list[list[str]]:
    """Name, per row, the numeric features outside the range the model was trained on."""
    return TrainingRanges(feature_ranges).flags(batch)


def _columns(inputs: Sequence[TensorLike]) -> dict[str, list[Any]]:
    """Check names, shapes, datatypes and value types in one pass; return each input's values.

    Each input first gets the quick test a well-formed one passes (a flat list of the right
    length, values of the right types, known categories); anything else takes the checks that
    say exactly what is wrong, or accept what is merely unusual (nested rows, gRPC bytes).
    """
    if not inputs:
        raise InvalidRequestError(REQUEST_FIELD, f"the request has no inputs; expected {FEATURES}")
    columns: dict[str, list[Any]] = {}
    for tensor in inputs:
        name = tensor.name
        kind = _KINDS.get(name)
        if kind is None or name in columns:
            _refuse_name(tensor, inputs, columns)
        # What `_data` and `_datatype` do, and the checks below, are inlined on purpose: this
        # runs for every input of every request, and a call per input costs more than its work.
        data = tensor.data
        data = getattr(data, "root", data)
        shape = tensor.shape
        datatype = tensor.datatype
        datatype = getattr(datatype, "value", datatype)
        if not (
            type(data) is list
            and len(shape) == 1
            and shape[0] == len(data)
            and (not data or type(data[0]) not in _NESTED)
        ):
            data = _values(tensor, _rows_of(tensor))
        if kind is _CATEGORY:
            allowed = _ALLOWED_VALUES[name]
            try:
                known = datatype == _STRING_DATATYPE and allowed.issuperset(data)
                if not known and datatype == _STRING_DATATYPE:
                    # gRPC carries BYTES as raw bytes: known categories decode at once.
                    known = _ALLOWED_BYTES[name].issuperset(data)
                    data = [value.decode() for value in data] if known else data
            except TypeError:  # an unhashable value: the full check says which
                known = False
            if not known:
                data = _categorical(tensor, data, allowed)
        else:
            types = _quick_types(kind, datatype)
            for value in data:
                if type(value) not in types:
                    _check_numeric_values(tensor, data)
                    break
        columns[name] = data
    if len(columns) < len(FEATURES):
        missing = [name for name in FEATURES if name not in columns]
        raise InvalidRequestError(missing[0], f"missing input (missing: {missing})")
    return columns


def _refuse_name(
    tensor: TensorLike, inputs: Sequence[TensorLike], columns: Mapping[str, Any]
) -> NoReturn:
    name = tensor.name
    if name in columns:
        raise InvalidRequestError(name, "sent more than once")
    unknown = [each.name for each in inputs if each.name not in _EXPECTED]
    raise InvalidRequestError(
        name, f"unknown input (unknown: {_show(unknown, 200)}); expected {FEATURES}"
    )


def _quick_types(kind: str, datatype: str) -> frozenset[type]:
    """The value types a numeric input passes the quick test with (none: take the full checks)."""
    if datatype in _INTEGER_DATATYPES:
        return _INTEGER_TYPES
    if datatype in _FLOAT_DATATYPES and kind is _FLOAT:
        return _NUMBER_TYPES
    return _NO_TYPES  # e.g. 52.0 for an integer input: it must be checked to be whole


def _row_count(columns: Mapping[str, list[Any]], max_rows: int) -> int:
    """Return the number of rows every input has; refuse an empty or oversized batch."""
    n_rows = len(columns[FEATURES[0]])
    for name in FEATURES:
        if len(columns[name]) != n_rows:
            raise InvalidRequestError(
                name,
                f"has {len(columns[name])} rows but '{FEATURES[0]}' has {n_rows}: "
                "one value per row per input",
            )
    if n_rows == 0:
        raise InvalidRequestError(REQUEST_FIELD, "the batch is empty: send at least one row")
    if n_rows > max_rows:
        raise InvalidRequestError(
            REQUEST_FIELD, f"the batch has {n_rows} rows, more than the limit of {max_rows}"
        )
    return n_rows


def _data(tensor: TensorLike) -> Any:
    # MLServer's REST inputs wrap their list in a RootModel; gRPC ones hold it directly.
    data = tensor.data
    return getattr(data, "root", data)


def _rows_of(tensor: TensorLike) -> int:
    """Return the rows a tensor's shape declares: [rows] or [rows, 1]."""
    shape = tensor.shape
    if not shape or len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise InvalidRequestError(
            tensor.name, f"shape {list(shape)} is not [rows] or [rows, 1]: one value per row"
        )
    rows = shape[0]
    if type(rows) is not int or rows < 0:
        raise InvalidRequestError(tensor.name, f"shape {list(shape)} holds a negative size")
    return rows


def _values(tensor: TensorLike, rows: int) -> list[Any]:
    """Return the data as one value per row (unwrapping nested [[v], [v]] data)."""
    data = _data(tensor)
    # `type(...) is list` first: the Sequence ABC check is slow and transports send lists.
    if type(data) is not list and (isinstance(data, str | bytes) or not isinstance(data, Sequence)):
        raise InvalidRequestError(tensor.name, "data must be a list with one value per row")
    if len(data) != rows:
        raise InvalidRequestError(
            tensor.name,
            f"shape {list(tensor.shape)} declares {rows} rows but data holds {len(data)}",
        )
    if data and isinstance(data[0], list | tuple):
        if not all(isinstance(row, list | tuple) and len(row) == 1 for row in data):
            raise InvalidRequestError(tensor.name, "data must hold one value per row")
        return [row[0] for row in data]
    return data if type(data) is list else list(data)


def _check_numeric_values(tensor: TensorLike, values: list[Any]) -> None:
    """Check a numeric input's datatype and each value's own type."""
    name = tensor.name
    datatype = _datatype(tensor)
    if datatype not in _NUMERIC_DATATYPES:
        raise InvalidRequestError(name, f"datatype {datatype} is not numeric (use INT64 or FP64)")
    # Each value's own type, not only the declared datatype: "35" or null in an FP64 input must
    # be refused here rather than coerced, or crash the model with a 500. `type(v) in` also
    # refuses booleans, which isinstance(v, int) would let through.
    integers_only = datatype in _INTEGER_DATATYPES
    allowed = _INTEGER_TYPES if integers_only else _NUMBER_TYPES
    whole = name in _INTEGER_FEATURES
    for row, value in enumerate(values):
        kind = type(value)
        if kind not in allowed:
            # NumPy scalars only come from in-process callers; accept them the slow way.
            if isinstance(value, np.integer) or (
                not integers_only and isinstance(value, np.floating)
            ):
                kind = float
            elif integers_only and kind in _NUMBER_TYPES:
                raise InvalidRequestError(
                    name, f"row {row} is {_show(value)} but the datatype is {datatype}"
                )
            else:
                raise InvalidRequestError(
                    name, f"row {row} is {_describe(value)}, expected a number"
                )
        # An integer feature sent as FP64 is fine if whole (52.0); NaN and inf are refused
        # later with their own message.
        if whole and kind is float and math.isfinite(value) and not float(value).is_integer():
            raise InvalidRequestError(name, f"row {row} is {value:g}: must be a whole number")


def _check_bounds_of_values(columns: Mapping[str, list[Any]]) -> None:
    """Check every numeric value against its plausible range, value by value (small batches)."""
    for name, low, high in _BOUNDS:
        for row, value in enumerate(columns[name]):
            # NaN compares false both ways: it fails here along with everything outside.
            if not low <= value <= high:
                _refuse_number(name, row, value, low, high)


def _check_bounds_of_matrix(batch: FeatureBatch) -> None:
    """Check the numeric matrix against the plausible ranges in a few NumPy calls."""
    try:
        matrix = batch.numeric
    except OverflowError:
        # An integer too large for a float64 (JSON allows any number of digits).
        name = next(n for n in NUMERIC_FEATURES if not _fits_float(batch.columns[n]))
        raise InvalidRequestError(name, "a value is too large to be a number") from None
    # NaN compares false both ways, so it fails this one check along with everything outside.
    inside = (matrix >= _LOW) & (matrix <= _HIGH)
    if not inside.all():
        feature, row = _first(~inside)
        name, low, high = _BOUNDS[feature]
        _refuse_number(name, row, batch.columns[name][row], low, high)


def _refuse_number(name: str, row: int, value: Any, low: float, high: float) -> None:
    """Raise the error for a numeric value outside its plausible range, or not finite."""
    try:
        number = float(value)
    except OverflowError:
        raise InvalidRequestError(name, "a value is too large to be a number") from None
    if not math.isfinite(number):
        raise InvalidRequestError(name, f"row {row} is {number}: values must be finite")
    raise InvalidRequestError(
        name, f"row {row} is {number:g}, outside the plausible range [{low:g}, {high:g}]"
    )


def _first(mask: np.ndarray) -> tuple[int, int]:
    """Return (feature, row) of the first True in a (features x rows) mask."""
    feature, row = np.argwhere(mask)[0]
    return int(feature), int(row)


def _datatype(tensor: TensorLike) -> str:
    # REST requests carry a Datatype enum, gRPC ones the plain string.
    return str(getattr(tensor.datatype, "value", tensor.datatype))


def _categorical(tensor: TensorLike, values: list[Any], allowed: frozenset[str]) -> list[Any]:
    """Check a categorical input; return its values (gRPC bytes decoded to str)."""
    name = tensor.name
    datatype = _datatype(tensor)
    if datatype != _STRING_DATATYPE:
        raise InvalidRequestError(name, f"datatype {datatype} is not BYTES (a string category)")
    # One set operation in C for the usual, valid batch; the row loop only runs to explain a
    # refusal or to decode gRPC bytes. Unhashable values (nested lists) also take the loop.
    try:
        if allowed.issuperset(values):
            return values
    except TypeError:
        pass
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
    return values


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
