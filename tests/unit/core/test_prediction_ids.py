"""Prediction ids: canonical UUIDv7 text, one per row, sorted by time even when the clock is not."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from telescore.core.prediction_ids import MAX_ROWS, PredictionIds, is_prediction_id, issued_at

# 2024-05-06 07:08:09.123456789 UTC, in nanoseconds since the epoch.
NOW_NS = 1_714_979_289_123_456_789
NOW_MS = NOW_NS // 1_000_000
MS = 1_000_000
"""One millisecond in nanoseconds."""
RANDOM_BITS = 42
SEQUENCE_LIMIT = 4096


class Clock:
    """A clock the test moves by hand, in nanoseconds."""

    def __init__(self, now_ns: int = NOW_NS) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


class FallingRandom:
    """Random bits that get smaller at every draw: ordering must never come from them."""

    def __init__(self) -> None:
        self.next_value = (1 << RANDOM_BITS) - 1
        self.requested: list[int] = []

    def __call__(self, bits: int) -> int:
        self.requested.append(bits)
        value, self.next_value = self.next_value, self.next_value - 1
        return value


def _generator(clock: Clock | None = None) -> PredictionIds:
    return PredictionIds(clock_ns=clock or Clock(), random_bits=FallingRandom())


def _fields(prediction_id: str) -> dict[str, int]:
    """Split an id into the fields the module docstring lays out."""
    value = uuid.UUID(prediction_id).int
    return {
        "millisecond": value >> 80,
        "version": (value >> 76) & 0xF,
        "sequence": (value >> 64) & 0xFFF,
        "variant": (value >> 62) & 0b11,
        "random": (value >> 20) & ((1 << RANDOM_BITS) - 1),
        "row": value & 0xFFFFF,
    }


def _strictly_increasing(ids: list[str]) -> bool:
    return all(earlier < later for earlier, later in zip(ids, ids[1:], strict=False))


def test_ids_are_canonical_lower_case_uuidv7() -> None:
    # Given a generator / When one request of three rows gets its ids
    ids = _generator().new(3)

    # Then each is the canonical text of an RFC 4122-variant, version 7 UUID
    for prediction_id in ids:
        parsed = uuid.UUID(prediction_id)
        assert parsed.version == 7, f"{prediction_id} is not version 7"
        assert parsed.variant == uuid.RFC_4122, f"{prediction_id} is not the RFC 4122 variant"
        assert prediction_id == str(parsed), f"{prediction_id} is not in canonical lower-case form"
        assert len(prediction_id) == 36, f"{prediction_id} is not 36 characters"
        assert is_prediction_id(prediction_id), f"is_prediction_id refuses {prediction_id}"


def test_bits_follow_the_documented_layout() -> None:
    # Given a known clock and known random bits
    random_bits = FallingRandom()
    generator = PredictionIds(clock_ns=Clock(), random_bits=random_bits)

    # When a request of two rows gets its ids
    ids = generator.new(2)

    # Then the ids hold the millisecond, version, sequence, variant, random bits and row
    first, second = (_fields(prediction_id) for prediction_id in ids)
    assert first["millisecond"] == NOW_MS, "the top 48 bits must be the clock's millisecond"
    assert first["version"] == 7, "version bits"
    assert first["sequence"] == 0, "the first request of a millisecond has sequence 0"
    assert first["variant"] == 0b10, "variant bits"
    assert first["random"] == (1 << RANDOM_BITS) - 1, "the 42 random bits must be the drawn ones"
    assert random_bits.requested == [RANDOM_BITS], "random bits are drawn once per request"
    assert (first["row"], second["row"]) == (0, 1), "the low 20 bits are the row"
    assert second["random"] == first["random"], "rows of one request share their random bits"


def test_ids_of_one_request_are_distinct_and_in_row_order() -> None:
    # Given a generator / When a request of 1000 rows gets its ids
    ids = _generator().new(1000)

    # Then they are all different, one per row, and sort in row order
    assert len(ids) == 1000, "one id per row"
    assert len(set(ids)) == 1000, "ids of one request must be distinct"
    assert _strictly_increasing(ids), "ids must sort in row order"
    assert [_fields(each)["row"] for each in ids] == list(range(1000)), "row field out of order"


def test_ids_sort_by_time_across_requests() -> None:
    # Given a clock that moves forward between requests (and random bits that move backwards)
    clock = Clock()
    generator = _generator(clock)

    # When requests are scored at increasing times
    ids: list[str] = []
    for step_ms in (0, 1, 7, 1000, 86_400_000):
        clock.now_ns = NOW_NS + step_ms * MS
        ids.extend(generator.new(3))

    # Then the ids of all requests, taken together, sort as they were issued
    assert _strictly_increasing(ids), "later requests must get larger ids"
    assert _fields(ids[-1])["sequence"] == 0, "a new millisecond starts the sequence over"


def test_two_generators_in_the_same_millisecond_give_different_ids() -> None:
    # Given two servers whose clocks agree, with their own (real) random bits
    clock = Clock()
    first, second = PredictionIds(clock_ns=clock), PredictionIds(clock_ns=clock)

    # When each scores a request in the same millisecond
    ids = first.new(2) + second.new(2)

    # Then no id is shared: the random bits tell the servers apart
    assert len(set(ids)) == 4, f"two servers issued the same id: {ids}"


def test_requests_in_the_same_millisecond_still_increase() -> None:
    # Given a clock that does not move
    generator = _generator()

    # When ten requests are scored within one millisecond
    ids = [generator.new(2) for _ in range(10)]

    # Then each request's ids come after the previous request's, counted by the sequence
    flat = [each for request in ids for each in request]
    assert _strictly_increasing(flat), "ids within one millisecond must still increase"
    sequences = [_fields(request[0])["sequence"] for request in ids]
    assert sequences == list(range(10)), f"sequence must count the requests: {sequences}"
    assert {_fields(each)["millisecond"] for each in flat} == {NOW_MS}, "millisecond changed"


def test_more_than_4096_requests_in_one_millisecond_borrow_the_next_one() -> None:
    # Given a clock that does not move
    clock = Clock()
    generator = _generator(clock)

    # When more requests are scored in that millisecond than the sequence can count
    ids = [generator.new(1)[0] for _ in range(SEQUENCE_LIMIT + 10)]

    # Then ids keep increasing: the generator moves on to the next millisecond
    assert _strictly_increasing(ids), "ids must increase past the 4096th request"
    assert _fields(ids[SEQUENCE_LIMIT - 1])["millisecond"] == NOW_MS, "4096 fit in a millisecond"
    borrowed = _fields(ids[SEQUENCE_LIMIT])
    assert (borrowed["millisecond"], borrowed["sequence"]) == (NOW_MS + 1, 0), (
        f"the 4097th request must open the next millisecond: {borrowed}"
    )

    # And when the clock reaches the borrowed millisecond, ids still increase
    clock.now_ns = NOW_NS + MS
    later = generator.new(1)[0]
    assert later > ids[-1], "catching up with a borrowed millisecond must not reuse its ids"


def test_a_clock_that_steps_back_never_makes_ids_go_backwards() -> None:
    # Given a clock that steps back an hour after the first request, then recovers
    clock = Clock()
    generator = _generator(clock)
    ids = generator.new(2)

    # When requests are scored while the clock is behind, and after it recovers
    clock.now_ns = NOW_NS - 3_600_000 * MS
    behind = generator.new(2)
    clock.now_ns = NOW_NS
    recovered = generator.new(2)

    # Then every id is larger than the ones before it
    assert _strictly_increasing(ids + behind + recovered), "ids went backwards with the clock"
    assert issued_at(behind[0]) >= issued_at(ids[0]), "an id must not claim an earlier time"


@pytest.mark.parametrize(
    ("clock_ns", "expected"),
    [
        (NOW_NS, datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (951_782_400_999_999_999, datetime(2000, 2, 29, 0, 0, 0, 999000, tzinfo=UTC)),
        (4_102_444_799_999 * MS, datetime(2099, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)),
    ],
)
def test_issued_at_is_the_clock_millisecond_in_utc(clock_ns: int, expected: datetime) -> None:
    # Given an id issued at a known clock reading
    prediction_id = _generator(Clock(clock_ns)).new(1)[0]

    # When its time is read back
    when = issued_at(prediction_id)

    # Then it is that reading, cut to the millisecond, in UTC
    assert when == expected, f"issued_at gave {when}, expected {expected}"
    assert when.utcoffset() == timedelta(0), "issued_at must be in UTC"


def test_issued_at_refuses_what_is_not_a_prediction_id() -> None:
    # Given a huge string that is not an id / When its time is asked / Then it is refused briefly
    with pytest.raises(ValueError, match="not a prediction id") as caught:
        issued_at("x" * 10_000)
    assert "x" * 61 not in str(caught.value), "the message must not echo the whole input"


@pytest.mark.parametrize("count", [0, -1, MAX_ROWS + 1])
def test_row_counts_out_of_bounds_are_refused(count: int) -> None:
    # Given a generator / When ids are asked for an impossible number of rows / Then it refuses
    with pytest.raises(ValueError, match="count must be between 1 and"):
        _generator().new(count)


def test_the_largest_request_gets_one_id_per_row() -> None:
    # Given a generator / When a request of MAX_ROWS rows gets its ids
    ids = _generator().new(MAX_ROWS)

    # Then every row has an id, the first for row 0 and the last for row MAX_ROWS - 1
    assert len(ids) == MAX_ROWS, "one id per row"
    assert _fields(ids[0])["row"] == 0, "first row"
    assert _fields(ids[-1])["row"] == MAX_ROWS - 1, "last row"
    assert ids[0] < ids[-1], "the last row's id must sort after the first's"
    assert is_prediction_id(ids[-1]), "the last id must still be a valid id"


VALID = "018f4c3a-5b2d-7000-8abc-def012345678"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (VALID[:-1], "35 characters"),
        (VALID + "0", "37 characters"),
        ("", "empty"),
        (VALID.upper(), "upper case"),
        (VALID[:-1] + "F", "one upper-case digit"),
        (VALID[:14] + "4" + VALID[15:], "version 4"),
        (VALID[:14] + "8" + VALID[15:], "version 8"),
        (VALID[:19] + "c" + VALID[20:], "variant 0b11"),
        (VALID[:19] + "7" + VALID[20:], "variant 0b0"),
        (VALID[:-1] + "g", "non-hex digit"),
        (VALID[:-1] + " ", "trailing space"),
        (VALID.replace("-", "") + "abcd", "no dashes"),
        (VALID[:8] + VALID[9] + "-" + VALID[10:], "dash out of place"),
        ("{" + VALID[1:-1] + "}", "braces"),
        (str(uuid.UUID(int=0x1234, version=4)), "a UUIDv4"),
    ],
)
def test_is_prediction_id_refuses_anything_but_canonical_uuidv7(text: str, why: str) -> None:
    # Given text that is not a canonical UUIDv7 / When checked / Then it is refused
    assert not is_prediction_id(text), f"accepted {why}: {text!r}"


def test_is_prediction_id_accepts_any_canonical_uuidv7() -> None:
    # Given UUIDv7 text made elsewhere, for each variant digit / When checked / Then it is accepted
    for variant_digit in "89ab":
        text = VALID[:19] + variant_digit + VALID[20:]
        assert is_prediction_id(text), f"refused a valid id with variant digit {variant_digit}"
