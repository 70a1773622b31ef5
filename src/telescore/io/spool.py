"""A durable local spool: records that could not reach their store wait here, in order, on disk.

Layout of the spool folder (one folder per writer process, guarded by a lock file):

- `active.jsonl`: new records are appended here, one JSON object per line, fsynced per append.
- `segment-<n>.jsonl`: closed files awaiting replay, oldest first; `active.jsonl` is renamed to
  the next segment when replay has drained the older ones, so appends never wait on a replay.
- `segment-<n>.offset`: byte offset up to which a segment has been consumed, so that a replay
  interrupted by a failure (or a crash) resumes where it stopped instead of from the start.

A crash mid-append leaves a torn last line; it is skipped (and logged) on replay, never fatal.
Datetimes are written as `{"$datetime": "<ISO 8601>"}` so that they come back as datetimes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final

logger = logging.getLogger(__name__)

Record = dict[str, Any]
Opener = Callable[[Path], IO[bytes]]
"""Opens a spool file for appending bytes; replaceable so tests can simulate a full disk."""
Consumer = Callable[[list[Record]], object]
"""Takes one batch of spooled records; raising means the batch was not consumed."""

ACTIVE_NAME: Final = "active.jsonl"
LOCK_NAME: Final = ".lock"
DATETIME_KEY: Final = "$datetime"
_SEGMENT = re.compile(r"^segment-(\d+)\.jsonl$")
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


class SpoolError(Exception):
    """Records could not be written to the spool: the caller must count them as dropped."""

    def __init__(self, message: str, records: int) -> None:
        super().__init__(message)
        self.records = records
        """How many records were not spooled."""


class SpoolFullError(SpoolError):
    """The spool's disk (or quota) is full."""


class SpoolLockedError(RuntimeError):
    """Another spool (in this or another process) already owns the folder."""


@dataclass(frozen=True)
class ReplayResult:
    """What one replay did."""

    replayed: int
    """Records handed to the consumer and accepted."""
    skipped: int
    """Lines that could not be decoded (torn or corrupt) and were discarded."""
    remaining: int
    """Records still in the spool afterwards."""


def encode_record(record: Record) -> bytes:
    """Encode one record as a JSON line (datetimes included)."""
    return json.dumps(record, default=_encode_value, separators=(",", ":")).encode() + b"\n"


def decode_record(line: bytes) -> Record:
    """Decode one JSON line written by `encode_record`; raise ValueError if it is not one."""
    value = json.loads(line, object_hook=_decode_object)
    if not isinstance(value, dict):
        raise ValueError(f"a spool line holds a JSON object, not {type(value).__name__}")
    return value


def _encode_value(value: object) -> object:
    if isinstance(value, datetime):
        return {DATETIME_KEY: value.isoformat()}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _decode_object(value: dict[str, Any]) -> object:
    if len(value) == 1 and isinstance(value.get(DATETIME_KEY), str):
        return datetime.fromisoformat(value[DATETIME_KEY])
    return value


def _open_for_append(path: Path) -> IO[bytes]:
    return path.open("ab")


def _fsync_dir(directory: Path) -> None:
    """Make a file creation, rename or removal in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Append-only, crash-safe, ordered spool of records in a local folder."""

    def __init__(self, directory: Path | str, *, opener: Opener = _open_for_append) -> None:
        self.directory = Path(directory)
        self._opener = opener
        self._lock = threading.Lock()  # appends, rotation and the count
        self._replay_lock = threading.Lock()  # one replay at a time
        self._torn_tail = False
        self._offsets: dict[str, int] = {}  # progress not yet (or not) persisted, by segment
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._acquire_folder_lock()
        segments = self._segments()
        self._next_segment = (segments[-1][0] + 1) if segments else 1
        # Whatever a previous process appended (maybe with a torn last line) becomes a closed
        # segment, so this process always appends to a file that ends on a whole line.
        if self._active_path.exists() and self._active_path.stat().st_size > 0:
            self._rotate_active()
        self._pending = sum(self._count_lines(path) for _, path in self._segments())

    @property
    def pending(self) -> int:
        """Records in the spool that have not been replayed yet."""
        return self._pending

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the folder; records stay on disk for the next spool on it."""
        if not self._lock_file.closed:
            self._lock_file.close()

    def append(self, records: Sequence[Record]) -> None:
        """Append records durably (fsynced); raise SpoolError if they could not be written."""
        if not records:
            return
        try:
            data = b"".join(encode_record(record) for record in records)
        except (TypeError, ValueError) as error:
            raise SpoolError(
                f"{len(records)} records not spooled: cannot encode them: {error}", len(records)
            ) from error
        with self._lock:
            if self._lock_file.closed:
                raise SpoolError(f"{len(records)} records not spooled: spool closed", len(records))
            if self._torn_tail:
                # End the fragment a failed write left, so it is skipped alone on replay.
                data = b"\n" + data
            path = self._active_path
            created = not path.exists()
            size_before = path.stat().st_size if not created else 0
            try:
                with self._opener(path) as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())
                if created:
                    _fsync_dir(self.directory)
            except OSError as error:
                self._undo_partial_write(path, size_before)
                kind = SpoolFullError if error.errno in _DISK_FULL else SpoolError
                reason = "disk full" if kind is SpoolFullError else "write failed"
                raise kind(
                    f"{len(records)} records not spooled to {path}: {reason}: {error}", len(records)
                ) from error
            if self._torn_tail:
                self._torn_tail = False
                self._pending += 1  # the fragment is now a whole (corrupt) line, counted like one
            self._pending += len(records)

    def replay(
        self,
        consumer: Consumer,
        *,
        batch_size: int = 500,
        should_stop: Callable[[], bool] | None = None,
    ) -> ReplayResult:
        """Hand spooled records to `consumer` in batches, oldest first, removing each consumed one.

        Stops at the first batch the consumer raises on (and re-raises it): that batch and the
        rest stay spooled. `should_stop` is asked between batches, to pause a long replay.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        replayed = skipped = 0
        with self._replay_lock:
            while not (should_stop and should_stop()):
                segment = self._oldest_segment()
                if segment is None:
                    break
                done, segment_replayed, segment_skipped = self._replay_segment(
                    segment, consumer, batch_size, should_stop
                )
                replayed += segment_replayed
                skipped += segment_skipped
                if not done:
                    break
        return ReplayResult(replayed=replayed, skipped=skipped, remaining=self._pending)

    # -- internals ------------------------------------------------------------------------------

    @property
    def _active_path(self) -> Path:
        return self.directory / ACTIVE_NAME

    def _acquire_folder_lock(self) -> IO[bytes]:
        lock_file = (self.directory / LOCK_NAME).open("ab")
        try:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            lock_file.close()
            # Two writers renaming and deleting the same segments would lose records.
            raise SpoolLockedError(
                f"spool folder {self.directory} is in use by another spool; "
                "give each process (and each model) its own folder"
            ) from error
        return lock_file

    def _segments(self) -> list[tuple[int, Path]]:
        found = []
        for path in self.directory.iterdir():
            match = _SEGMENT.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def _oldest_segment(self) -> Path | None:
        segments = self._segments()
        if segments:
            return segments[0][1]
        with self._lock:
            if not self._active_path.exists() or self._active_path.stat().st_size == 0:
                return None
            return self._rotate_active()

    def _rotate_active(self) -> Path:
        """Close the active file as the newest segment (caller holds the lock or is __init__)."""
        segment = self.directory / f"segment-{self._next_segment:09d}.jsonl"
        self._next_segment += 1
        self._active_path.rename(segment)
        _fsync_dir(self.directory)
        self._torn_tail = False  # the next append starts a new file
        return segment

    @staticmethod
    def _offset_path(segment: Path) -> Path:
        return segment.with_suffix(".offset")

    def _read_offset(self, segment: Path) -> int:
        if segment.name in self._offsets:
            return self._offsets[segment.name]
        try:
            return int(self._offset_path(segment).read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
            # A torn offset file: replaying from the start only re-sends records already
            # written, which the store accepts as duplicates.
            logger.warning("spool offset of %s unreadable; replaying it from the start", segment)
            return 0

    def _write_offset(self, segment: Path, offset: int) -> None:
        self._offsets[segment.name] = offset
        target = self._offset_path(segment)
        temporary = target.with_suffix(".offset.tmp")
        try:
            with temporary.open("w") as file:
                file.write(str(offset))
                file.flush()
                os.fsync(file.fileno())
            temporary.replace(target)
        except OSError as error:
            # A full disk must not stall the replay that would free it: progress is kept in
            # memory, and a restart re-sends at most this segment's consumed part (idempotent).
            logger.warning("spool offset of %s not saved (%s); kept in memory", segment, error)

    def _count_lines(self, segment: Path) -> int:
        """Whole lines after the consumed offset: the records this segment still holds."""
        with segment.open("rb") as file:
            file.seek(self._read_offset(segment))
            return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))

    def _lines(self, segment: Path, offset: int) -> Iterator[tuple[bytes, int]]:
        """Yield each line from `offset` with the offset just after it."""
        with segment.open("rb") as file:
            file.seek(offset)
            for line in file:
                offset += len(line)
                yield line, offset

    def _replay_segment(
        self,
        segment: Path,
        consumer: Consumer,
        batch_size: int,
        should_stop: Callable[[], bool] | None,
    ) -> tuple[bool, int, int]:
        """Replay one segment; return (fully consumed, records replayed, lines skipped)."""
        replayed = skipped = 0
        batch: list[Record] = []
        lines_in_batch = 0
        batch_end = self._read_offset(segment)

        def consume() -> None:
            nonlocal replayed, batch, lines_in_batch
            if batch:
                consumer(batch)  # raising leaves this batch and the rest on disk
            # Record progress before counting it: after a crash, at worst this batch is re-sent.
            self._write_offset(segment, batch_end)
            with self._lock:
                self._pending = max(0, self._pending - lines_in_batch)
            replayed += len(batch)
            batch, lines_in_batch = [], 0

        for number, (line, end) in enumerate(self._lines(segment, batch_end), start=1):
            whole = line.endswith(b"\n")
            try:
                batch.append(decode_record(line))
            except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                skipped += 1
                logger.warning(
                    "spool %s: skipped %s line %d after offset: %.200r",
                    segment.name,
                    "corrupt" if whole else "torn last",
                    number,
                    line,
                )
            lines_in_batch += int(whole)  # only whole lines were counted as pending
            batch_end = end
            if len(batch) >= batch_size:
                consume()
                if should_stop and should_stop():
                    return False, replayed, skipped
        consume()
        self._offset_path(segment).unlink(missing_ok=True)
        segment.unlink()
        self._offsets.pop(segment.name, None)
        _fsync_dir(self.directory)
        return True, replayed, skipped

    def _undo_partial_write(self, path: Path, size_before: int) -> None:
        """Cut a half-written append off the active file, or mark it to be ended later."""
        try:
            if path.exists() and path.stat().st_size != size_before:
                os.truncate(path, size_before)
        except OSError:
            self._torn_tail = True
        with contextlib.suppress(OSError):
            if path.exists() and path.stat().st_size == 0:
                path.unlink()
