"""Request validation: every bad input is refused naming its field, good ones become columns."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tests.testdata.prospects import PROSPECT

from telescore.core.requests import (
    DEFAULT_MAX_ROWS,
    SMALL_BATCH,
    InputTensor,
    InvalidRequestError,
    out_of_range_features,
    validate_inputs,
)
from telescore.core.schema import CATEGORICAL_VALUES, FEATURES, INTEGER_FEATURES, NUMERIC_FEATURES


def _datatype(name: str) -> str:
    if name in CATEGORICAL_VALUES:
        return "BYTES"
    return "INT64" if name in INTEGER_FEATURES else "FP64"


def _inputs(rows: int = 1, **overrides: Any) -> dict[str, InputTensor]:
    """One tensor per feature holding `rows` copies of PROSPECT; overrides replace tensors."""
    tensors = {
        name: InputTensor(name, _datatype(name), [rows], [PROSPECT[name]] * rows)
        for name in FEATURES
    }
    tensors.update(overrides)
    return tensors


def _refused(tensors: dict[str, InputTensor] | list[InputTensor], **kwargs: Any) -> str:
    """Validate, expect a refusal, return the field it names."""
    inputs = list(tensors.values()) if isinstance(tensors, dict) else tensors
    with pytest.raises(InvalidRequestError) as caught:
        validate_inputs(inputs, **kwargs)
    assert caught.value.field in str(caught.value), "the message must name the field"
    return caught.value.field


def test_a_valid_request_becomes_typed_columns() -> None:
    batch = validate_inputs(list(_inputs(rows=3).values()))

    assert batch.n_rows == 3, "row count"
    assert batch.columns["age"] == [41] * 3, "values kept as sent"
    assert batch.columns["job"] == ["technician"] * 3, "categories kept as sent"
    assert batch.numeric.shape == (len(NUMERIC_FEATURES), 3), "numeric features x rows"
    assert batch.numeric.dtype == np.float64, "the numeric matrix is float64"
    age_row = batch.numeric[NUMERIC_FEATURES.index("age")]
    assert age_row.tolist() == [41.0] * 3, "each numeric feature is its row of the matrix"
    assert batch.rows()[0] == PROSPECT, "rows give back the inputs as sent"


def test_inputs_may_come_in_any_order_and_as_nested_rows() -> None:
    # given [rows, 1]-shaped nested data, inputs reversed
    tensors = [
        InputTensor(name, _datatype(name), [2, 1], [[PROSPECT[name]], [PROSPECT[name]]])
        for name in reversed(FEATURES)
    ]

    batch = validate_inputs(tensors)

    assert batch.n_rows == 2, "nested [[v], [v]] is two rows"
    assert batch.columns["month"] == ["may", "may"], "nested values flattened"


def test_grpc_bytes_are_decoded_and_floats_with_whole_values_accepted_for_integers() -> None:
    tensors = _inputs(
        job=InputTensor("job", "BYTES", [1], [b"retired"]),
        age=InputTensor("age", "FP64", [1], [52.0]),
    )

    batch = validate_inputs(list(tensors.values()))

    assert batch.columns["job"] == ["retired"], "gRPC bytes decoded to str"
    assert batch.columns["age"] == [52.0], "52.0 accepted for an integer input, kept as sent"


def test_enum_datatypes_from_rest_are_understood() -> None:
    class Datatype:  # stands in for mlserver.types.Datatype: an enum with .value
        def __init__(self, value: str) -> None:
            self.value = value

    tensors = _inputs(age=InputTensor("age", Datatype("INT64"), [1], [30]))  # type: ignore[arg-type]

    assert validate_inputs(list(tensors.values())).columns["age"] == [30]


def test_data_wrapped_by_the_transport_is_read_as_it_is() -> None:
    class Wrapped:  # stands in for MLServer's TensorData: the list is `.root`
        def __init__(self, values: list[Any]) -> None:
            self.root = values

    tensors = _inputs(job=InputTensor("job", "BYTES", [1], Wrapped(["retired"])))

    assert validate_inputs(list(tensors.values())).columns["job"] == ["retired"]


BAD: dict[str, tuple[dict[str, InputTensor] | list[InputTensor], str]] = {
    "no inputs": ([], "inputs"),
    "missing input": (
        {n: t for n, t in _inputs().items() if n != "pdays"},
        "pdays",
    ),
    "unknown input": (
        [*_inputs().values(), InputTensor("salary", "FP64", [1], [1.0])],
        "salary",
    ),
    "duplicate input": ([*_inputs().values(), _inputs()["loan"]], "loan"),
    "numeric datatype for a category": (
        _inputs(job=InputTensor("job", "INT64", [1], [3])),
        "job",
    ),
    "bytes datatype for a number": (
        _inputs(age=InputTensor("age", "BYTES", [1], ["41"])),
        "age",
    ),
    "bool datatype": (_inputs(age=InputTensor("age", "BOOL", [1], [True])), "age"),
    "string in a numeric input": (_inputs(age=InputTensor("age", "INT64", [1], ["abc"])), "age"),
    "null in a numeric input": (
        _inputs(euribor3m=InputTensor("euribor3m", "FP64", [1], [None])),
        "euribor3m",
    ),
    "boolean in a numeric input": (_inputs(age=InputTensor("age", "INT64", [1], [True])), "age"),
    "non-integer under an integer datatype": (
        _inputs(age=InputTensor("age", "INT64", [1], [41.5])),
        "age",
    ),
    "fraction for an integer input": (
        _inputs(campaign=InputTensor("campaign", "FP64", [1], [1.5])),
        "campaign",
    ),
    "number in a categorical input": (_inputs(job=InputTensor("job", "BYTES", [1], [7])), "job"),
    "null in a categorical input": (_inputs(job=InputTensor("job", "BYTES", [1], [None])), "job"),
    "two categories in one row": (
        _inputs(job=InputTensor("job", "BYTES", [1], [["admin.", "retired"]])),
        "job",
    ),
    "dict in a categorical input": (
        _inputs(job=InputTensor("job", "BYTES", [1], [{"job": "admin."}])),
        "job",
    ),
    "invalid utf-8": (_inputs(job=InputTensor("job", "BYTES", [1], [b"\xff"])), "job"),
    "unknown category": (_inputs(job=InputTensor("job", "BYTES", [1], ["astronaut"])), "job"),
    "category in the wrong case": (
        _inputs(month=InputTensor("month", "BYTES", [1], ["May"])),
        "month",
    ),
    "nan": (
        _inputs(euribor3m=InputTensor("euribor3m", "FP64", [1], [float("nan")])),
        "euribor3m",
    ),
    "infinity": (
        _inputs(euribor3m=InputTensor("euribor3m", "FP64", [1], [float("-inf")])),
        "euribor3m",
    ),
    "integer too large for a float": (
        _inputs(campaign=InputTensor("campaign", "INT64", [1], [10**400])),
        "campaign",
    ),
    "age above its bound": (_inputs(age=InputTensor("age", "INT64", [1], [101])), "age"),
    "age below its bound": (_inputs(age=InputTensor("age", "INT64", [1], [16])), "age"),
    "employment above its bound": (
        _inputs(**{"nr.employed": InputTensor("nr.employed", "FP64", [1], [6000.0])}),
        "nr.employed",
    ),
    "shape larger than data": (_inputs(age=InputTensor("age", "INT64", [2], [41])), "age"),
    "lengths differ between inputs": (
        _inputs(loan=InputTensor("loan", "BYTES", [2], ["no", "yes"])),
        "loan",
    ),
    "two values per row": (_inputs(age=InputTensor("age", "INT64", [1, 2], [[41, 42]])), "age"),
    "ragged nested data": (
        _inputs(rows=2, age=InputTensor("age", "INT64", [2, 1], [[41], [42, 43]])),
        "age",
    ),
    "scalar instead of a list": (_inputs(age=InputTensor("age", "INT64", [1], 41)), "age"),
    "string instead of a list": (_inputs(job=InputTensor("job", "BYTES", [1], "a")), "job"),
    "empty shape": (_inputs(age=InputTensor("age", "INT64", [], [41])), "age"),
    "negative shape": (_inputs(age=InputTensor("age", "INT64", [-1], [])), "age"),
    "empty batch": (_inputs(rows=0), "inputs"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_inputs_are_refused_naming_the_field(case: str) -> None:
    tensors, field = BAD[case]

    assert _refused(tensors) == field, f"{case}: wrong field named"


def test_batches_over_the_limit_are_refused_and_the_limit_is_configurable() -> None:
    assert _refused(_inputs(rows=DEFAULT_MAX_ROWS + 1)) == "inputs", "default limit"
    assert validate_inputs(list(_inputs(rows=DEFAULT_MAX_ROWS).values())).n_rows == 1000
    assert _refused(_inputs(rows=6), max_rows=5) == "inputs", "configured limit"


def test_bounds_are_inclusive() -> None:
    tensors = _inputs(rows=2, age=InputTensor("age", "INT64", [2], [17, 100]))

    assert validate_inputs(list(tensors.values())).columns["age"] == [17, 100]


def test_the_message_says_which_row_and_value() -> None:
    tensors = _inputs(rows=3, age=InputTensor("age", "INT64", [3], [30, 40, 150]))

    with pytest.raises(InvalidRequestError, match=r"'age'.*row 2 is 150"):
        validate_inputs(list(tensors.values()))


def test_messages_do_not_echo_huge_client_values() -> None:
    tensors = _inputs(job=InputTensor("job", "BYTES", [1], ["x" * 100_000]))

    with pytest.raises(InvalidRequestError) as caught:
        validate_inputs(list(tensors.values()))

    assert len(str(caught.value)) < 500, "the message must not carry the whole value"


def test_rows_outside_the_training_range_are_flagged_per_row() -> None:
    # given a batch whose second row is older than anyone seen in training
    tensors = _inputs(
        rows=3,
        age=InputTensor("age", "INT64", [3], [40, 95, 41]),
        campaign=InputTensor("campaign", "INT64", [3], [1, 60, 2]),
    )
    batch = validate_inputs(list(tensors.values()))
    ranges = {"age": [18.0, 90.0], "campaign": [1.0, 40.0], "euribor3m": [0.6, 5.0]}

    flags = out_of_range_features(batch, ranges)

    assert flags == [[], ["age", "campaign"], []], f"flags: {flags}"


def test_no_training_ranges_flags_nothing() -> None:
    batch = validate_inputs(list(_inputs(rows=2).values()))

    assert out_of_range_features(batch, {}) == [[], []]


NUMBER_FAULTS = {
    "above its bound": ("age", 150, "row {row} is 150, outside the plausible range"),
    "below its bound": ("campaign", -1, "row {row} is -1, outside the plausible range"),
    "nan": ("euribor3m", float("nan"), "row {row} is nan: values must be finite"),
    "infinity": ("cons.conf.idx", float("inf"), "row {row} is inf: values must be finite"),
    "too large for a float": ("pdays", 10**400, "a value is too large to be a number"),
}


@pytest.mark.parametrize("rows", [1, SMALL_BATCH, SMALL_BATCH + 3], ids=["1", "small", "large"])
@pytest.mark.parametrize("fault", list(NUMBER_FAULTS), ids=list(NUMBER_FAULTS))
def test_a_bad_number_is_refused_alike_in_small_and_large_batches(rows: int, fault: str) -> None:
    # given a batch whose last row holds one bad number (small batches are checked value by
    # value, large ones as a NumPy matrix)
    name, value, message = NUMBER_FAULTS[fault]
    datatype = _datatype(name)
    tensors = _inputs(rows=rows)
    tensors[name] = InputTensor(name, datatype, [rows], [PROSPECT[name]] * (rows - 1) + [value])

    # when validated / then the same field, row and reason are named
    with pytest.raises(InvalidRequestError) as caught:
        validate_inputs(list(tensors.values()))
    assert caught.value.field == name, f"{fault}: wrong field {caught.value.field}"
    assert message.format(row=rows - 1) in str(caught.value), str(caught.value)


def test_training_range_flags_agree_in_small_and_large_batches() -> None:
    # given rows, some outside the training ranges, and those ranges
    ages = [40, 95, 41, 17, 60, 99, 30, 45, 50, 18, 92, 33]
    campaigns = [1, 60, 2, 3, 45, 1, 2, 50, 1, 1, 2, 70]
    tensors = _inputs(
        rows=len(ages),
        age=InputTensor("age", "INT64", [len(ages)], ages),
        campaign=InputTensor("campaign", "INT64", [len(ages)], campaigns),
    )
    large = validate_inputs(list(tensors.values()))
    assert not large.small, "the whole batch must take the NumPy path"
    ranges = {"age": [18.0, 90.0], "campaign": [1.0, 40.0]}

    # when flagged as one large batch and row by row
    one_by_one = [
        out_of_range_features(
            validate_inputs(
                list(
                    _inputs(
                        age=InputTensor("age", "INT64", [1], [age]),
                        campaign=InputTensor("campaign", "INT64", [1], [campaign]),
                    ).values()
                )
            ),
            ranges,
        )[0]
        for age, campaign in zip(ages, campaigns, strict=True)
    ]

    # then the flags agree, row for row, and name the features in schema order
    assert out_of_range_features(large, ranges) == one_by_one
    assert one_by_one[1] == ["age", "campaign"], one_by_one[1]
