"""Prediction ids: one per scored row, assigned by the server, unique and sorted by time.

An id is a UUIDv7 (RFC 9562) in its usual text form. Its 128 bits are laid out as

    48 bits  Unix time in milliseconds
     4 bits  version (7)
    12 bits  sequence: counts the requests of one generator within one millisecond
     2 bits  variant (0b10)
    42 bits  random, drawn once per request
    20 bits  the row within the request

so the ids of one server sort by (millisecond, request, row), and ids of different servers
differ in their random bits. The generator never goes back in time, even if the clock does:
outcomes, monitoring windows and canary comparisons all rely on ids sorting as time does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

ROW_BITS: Final = 20
MAX_ROWS: Final = 1 << ROW_BITS
"""Most rows one request may have ids for."""
_SEQUENCE_LIMIT: Final = 1 << 12
_RANDOM_BITS: Final = 42
_VERSION_BITS: Final = 0x7 << 12
_VARIANT_BITS: Final = 0b10 << 62
_HEX_DIGITS: Final = frozenset("0123456789abcdef")
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class PredictionIds:
    """Generator of time-ordered prediction ids; one per process (it is not thread-safe)."""

    def __init__(
        self,
        clock_ns: Callable[[], int] = time.time_ns,
        random_bits: Callable[[int], int] = random.getrandbits,
    ) -> None:
        self._clock_ns = clock_ns
        self._random_bits = random_bits
        self._millisecond = 0
        self._sequence = 0

    def new(self, count: int) -> list[str]:
        """Return `count` new ids, one per row of one request, in row order."""
        if not 0 < count <= MAX_ROWS:
            raise ValueError(f"count must be between 1 and {MAX_ROWS}, not {count}")
        millisecond = self._clock_ns() // 1_000_000
        if millisecond > self._millisecond:
            self._millisecond, self._sequence = millisecond, 0
        else:
            # Same millisecond, or the clock stepped back: count on from the last id.
            self._sequence += 1
            if self._sequence == _SEQUENCE_LIMIT:
                self._millisecond, self._sequence = self._millisecond + 1, 0
        high = f"{(self._millisecond << 16) | _VERSION_BITS | self._sequence:016x}"
        low = f"{_VARIANT_BITS | (self._random_bits(_RANDOM_BITS) << ROW_BITS):016x}"
        # Only the last five hex digits (the row) differ between the ids of one request.
        prefix = f"{high[:8]}-{high[8:12]}-{high[12:]}-{low[:4]}-{low[4:11]}"
        return [f"{prefix}{row:05x}" for row in range(count)]


def is_prediction_id(text: str) -> bool:
    """Tell whether `text` is a prediction id in canonical form (lower-case UUIDv7)."""
    if len(text) != 36 or [text[i] for i in (8, 13, 18, 23)] != ["-"] * 4:
        return False
    digits = text.replace("-", "")
    return (
        len(digits) == 32
        and _HEX_DIGITS.issuperset(digits)
        and digits[12] == "7"
        and digits[16] in "89ab"
    )


def issued_at(prediction_id: str) -> datetime:
    """Return when a prediction id was issued (UTC, millisecond precision)."""
    if not is_prediction_id(prediction_id):
        raise ValueError(f"not a prediction id: {prediction_id[:60]!r}")
    milliseconds = int(prediction_id[:8] + prediction_id[9:13], 16)
    return EPOCH + timedelta(milliseconds=milliseconds)  # exact, unlike a float timestamp
