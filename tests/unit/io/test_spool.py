"""The durable spool: order, crash safety, partial consumption and a full disk."""

from __future__ import annotations

import errno
import io
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any

import pytest

from telescore.io.spool import (
    ACTIVE_NAME,
    Spool,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
    decode_record,
    encode_record,
)


def _records(start: int, stop: int) -> list[dict[str, Any]]:
    return [{"_id": f"r:{i}", "n": i} for i in range(start, stop)]


class _Collector:
    """A consumer that keeps the batches it is given and can be told to fail."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.calls = 0
        self.fail_on_call = fail_on_call

    def __call__(self, batch: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise ConnectionError("store down")
        self.batches.append(batch)

    @property
    def ids(self) -> list[str]:
        return [record["_id"] for batch in self.batches for record in batch]


def test_replay_hands_back_every_record_in_order_then_empties(tmp_path: Path) -> None:
    # Given three appends
    with Spool(tmp_path) as spool:
        for start, stop in ((0, 3), (3, 7), (7, 9)):
            spool.append(_records(start, stop))
        assert spool.pending == 9, "every appended record is pending"

        # When replayed in batches of 4
        consumer = _Collector()
        result = spool.replay(consumer, batch_size=4)

    # Then all come back once, in append order, batched, and the spool is empty
    assert consumer.ids == [f"r:{i}" for i in range(9)], "records must come back in order"
    assert [len(b) for b in consumer.batches] == [4, 4, 1], "batches of at most batch_size"
    assert (result.replayed, result.skipped, result.remaining) == (9, 0, 0), f"got {result}"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock"], "consumed files are removed"


def test_datetimes_round_trip(tmp_path: Path) -> None:
    # Given records holding aware datetimes, nested too
    when = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    local = when.astimezone(timezone(timedelta(hours=-3)))
    record = {"_id": "a:0", "timestamp": when, "nested": {"at": local}, "text": "é"}

    # When spooled and replayed
    with Spool(tmp_path) as spool:
        spool.append([record])
        consumer = _Collector()
        spool.replay(consumer)

    # Then they come back equal, as datetimes with their offset
    assert consumer.batches == [[record]], "the record must round-trip unchanged"
    replayed = consumer.batches[0][0]
    assert isinstance(replayed["timestamp"], datetime), "a datetime, not a string"
    assert replayed["nested"]["at"].utcoffset() == timedelta(hours=-3), "the offset is kept"


def test_torn_last_line_is_skipped_and_reported(tmp_path: Path) -> None:
    # Given a spool whose writer crashed in the middle of an append
    whole = b"".join(encode_record(r) for r in _records(0, 2))
    torn = encode_record(_records(2, 3)[0])[:-7]
    (tmp_path / ACTIVE_NAME).write_bytes(whole + torn)

    # When a new spool opens the folder, takes more records and replays
    with Spool(tmp_path) as spool:
        assert spool.pending == 2, "a torn line is not a record"
        spool.append(_records(3, 4))
        consumer = _Collector()
        result = spool.replay(consumer)

    # Then the whole records (old and new) come back, and the torn one is skipped and counted
    assert consumer.ids == ["r:0", "r:1", "r:3"], "whole records survive a torn last line"
    assert result.skipped == 1, "the torn line is reported"
    assert result.remaining == 0, "nothing is left behind"


def test_corrupt_line_in_the_middle_does_not_stop_replay(tmp_path: Path) -> None:
    # Given a segment with garbage between two records
    lines = [
        encode_record(_records(0, 1)[0]),
        b"\x00\xffnot json\n",
        encode_record(_records(1, 2)[0]),
    ]
    (tmp_path / ACTIVE_NAME).write_bytes(b"".join(lines))

    # When replayed
    with Spool(tmp_path) as spool:
        consumer = _Collector()
        result = spool.replay(consumer)

    # Then both records come back and the garbage is skipped
    assert consumer.ids == ["r:0", "r:1"], "records around a corrupt line are kept"
    assert (result.skipped, result.remaining) == (1, 0), f"got {result}"


def test_failed_batch_and_the_rest_stay_spooled(tmp_path: Path) -> None:
    # Given ten spooled records and a consumer that fails on its second batch
    with Spool(tmp_path) as spool:
        spool.append(_records(0, 10))
        failing = _Collector(fail_on_call=2)

        # When replayed
        with pytest.raises(ConnectionError):
            spool.replay(failing, batch_size=4)

        # Then only the first batch is consumed
        assert failing.ids == [f"r:{i}" for i in range(4)], "the first batch was consumed"
        assert spool.pending == 6, "the failed batch and the rest stay pending"

    # And a spool reopened on the folder (after a restart) resumes after the consumed batch
    with Spool(tmp_path) as reopened:
        assert reopened.pending == 6, "progress survives a restart"
        consumer = _Collector()
        reopened.replay(consumer, batch_size=4)
    assert consumer.ids == [f"r:{i}" for i in range(4, 10)], "resumes where it stopped"


def test_should_stop_pauses_between_batches(tmp_path: Path) -> None:
    # Given nine spooled records and a stop request after the first batch
    with Spool(tmp_path) as spool:
        spool.append(_records(0, 9))
        consumer = _Collector()

        # When replayed
        result = spool.replay(consumer, batch_size=3, should_stop=lambda: consumer.calls >= 1)

        # Then it stops after one batch and the rest waits for the next replay
        assert consumer.ids == ["r:0", "r:1", "r:2"], "one batch before pausing"
        assert result.remaining == 6, "the rest stays spooled"
        spool.replay(consumer, batch_size=3)
    assert consumer.ids == [f"r:{i}" for i in range(9)], "the next replay continues in order"


def test_appends_during_a_replay_are_kept_for_the_next(tmp_path: Path) -> None:
    # Given a replay whose consumer causes new appends (traffic while replaying)
    with Spool(tmp_path) as spool:
        spool.append(_records(0, 2))
        consumer = _Collector()

        def consume_and_append(batch: list[dict[str, Any]]) -> None:
            consumer(batch)
            if consumer.calls == 1:
                spool.append(_records(2, 4))

        # When replayed
        spool.replay(consume_and_append, batch_size=1)

        # Then the records appended meanwhile are replayed too, after the older ones
        assert spool.pending == 0, f"{spool.pending} records left"
    assert consumer.ids == ["r:0", "r:1", "r:2", "r:3"], "nothing lost, order kept"


def test_disk_full_on_open_raises_a_clear_error_and_counts_nothing(tmp_path: Path) -> None:
    # Given a spool whose disk is full
    def full_disk(path: Path) -> IO[bytes]:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    with Spool(tmp_path, opener=full_disk) as spool:
        # When records are appended / Then a SpoolFullError says how many were not spooled
        with pytest.raises(SpoolFullError, match="disk full") as raised:
            spool.append(_records(0, 5))
        assert raised.value.records == 5, "the caller must know how many to count as dropped"
        assert isinstance(raised.value.__cause__, OSError), "the OS error is chained"
        assert spool.pending == 0, "records that were not written are not pending"


def test_disk_full_mid_write_leaves_no_torn_record(tmp_path: Path) -> None:
    # Given a disk that fills up halfway through the second append
    calls = {"n": 0}

    class HalfWriter(io.FileIO):
        def write(self, data: Any) -> int:
            super().write(bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    def opener(path: Path) -> IO[bytes]:
        calls["n"] += 1
        return HalfWriter(path, "ab") if calls["n"] == 2 else path.open("ab")

    with Spool(tmp_path, opener=opener) as spool:
        spool.append(_records(0, 2))
        # When the second append fails and a third succeeds
        with pytest.raises(SpoolFullError):
            spool.append(_records(2, 4))
        spool.append(_records(4, 5))
        consumer = _Collector()
        result = spool.replay(consumer)

    # Then the half-written records leave no trace and the others replay cleanly
    assert consumer.ids == ["r:0", "r:1", "r:4"], "only records whose append succeeded"
    assert result.skipped == 0, "the partial write was cut off, not left as a torn line"


def test_other_write_errors_are_spool_errors(tmp_path: Path) -> None:
    # Given a spool whose file cannot be opened for another reason
    def read_only(path: Path) -> IO[bytes]:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    # When records are appended / Then a SpoolError (not a full-disk one) is raised
    with Spool(tmp_path, opener=read_only) as spool, pytest.raises(SpoolError) as raised:
        spool.append(_records(0, 1))
    assert not isinstance(raised.value, SpoolFullError), "only ENOSPC/EDQUOT mean disk full"


def test_unencodable_record_is_a_spool_error(tmp_path: Path) -> None:
    # Given a record JSON cannot encode / When appended / Then SpoolError, nothing written
    with Spool(tmp_path) as spool:
        with pytest.raises(SpoolError, match="cannot encode"):
            spool.append([{"_id": "x", "blob": object()}])
        assert spool.pending == 0, "nothing was spooled"


def test_one_spool_per_folder(tmp_path: Path) -> None:
    # Given an open spool / When a second one opens the same folder / Then it is refused
    with Spool(tmp_path), pytest.raises(SpoolLockedError):
        Spool(tmp_path)
    # And once the first is closed the folder can be reopened
    Spool(tmp_path).close()


def test_decode_refuses_a_non_object_line() -> None:
    # Given a JSON line that is not an object / When decoded / Then it is a ValueError
    with pytest.raises(ValueError, match="JSON object"):
        decode_record(b"[1, 2]\n")
