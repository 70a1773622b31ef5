"""The prediction journal: an append-only local log, written before a prediction is answered.

MLServer appends every scored request here, on the request path, before it answers; a shipper
process reads it and writes MongoDB. A segment's space is reserved on disk when it is created
and the file is mapped into memory: an append is a copy into the page cache, with no system
call, and once it is done the bytes outlive a killed process. The shipper fsyncs the files
every second or so, which bounds what a machine crash can take.

Layout of a journal root folder:

    <root>/<created>-<writer>.<sequence>.journal   segments, shipped oldest first
    <root>/<segment>.shipped                       "<offset> <rows>": how far it was shipped
    <root>/.shipper.lock                           held by the one shipper of this root

A writer holds an exclusive `flock` on the segment it appends to; a segment nobody holds is
sealed (its writer rotated, closed, or died) and will never grow again. Until its writer seals
it, a segment ends in the zeros of its reserved space: a zero header is the end of its frames
(a writer killed before sealing leaves them; sealing cuts them off).

Every segment starts with a header frame (rows = 0) holding JSON metadata: which model wrote
it. Then one frame per scored request. A frame is

    2 bytes  magic b"TJ"
    4 bytes  payload length       (big-endian, as the three below)
    4 bytes  rows in the payload
    4 bytes  CRC-32 of the payload
    payload
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import mmap
import os
import secrets
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, NamedTuple

logger = logging.getLogger(__name__)

MAGIC: Final = b"TJ"
UNWRITTEN: Final = b"\x00\x00"
HEADER: Final = struct.Struct("!2sIII")
SUFFIX: Final = ".journal"
SHIPPED_SUFFIX: Final = ".shipped"
SHIPPER_LOCK: Final = ".shipper.lock"
DEFAULT_SEGMENT_BYTES: Final = 16 << 20
READ_CHUNK: Final = 64 << 10
MAX_PAYLOAD: Final = 256 << 20
"""Larger lengths are corruption: no request the server accepts comes near it."""

Allocate = Callable[[int, int, int], None]
"""`os.posix_fallocate`, replaceable so that tests can make the disk full."""


class JournalError(OSError):
    """A frame could not be appended: the prediction is not durable and must not be answered."""


def encode_frame(payload: bytes, rows: int) -> bytes:
    """Return one frame holding `payload`, which describes `rows` predictions."""
    return HEADER.pack(MAGIC, len(payload), rows, zlib.crc32(payload)) + payload


class JournalWriter:
    """Appends frames to segments of one writer under a journal root; one per served model.

    A segment's disk space is reserved when it is created (`posix_fallocate`) and the file is
    mapped into memory, so an append is a copy into the page cache: no system call, and no
    way to fail once the segment exists. A full disk shows when a segment cannot be created.
    """

    def __init__(
        self,
        root: Path,
        metadata: Mapping[str, Any],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        allocate: Allocate = os.posix_fallocate,
    ) -> None:
        """Prepare a writer; the first segment is created on the first append or `open`."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._metadata = encode_frame(json.dumps(dict(metadata)).encode(), 0)
        self._segment_bytes = max(segment_bytes, len(self._metadata))
        self._allocate = allocate
        self.name = f"{os.getpid()}-{secrets.token_hex(4)}"
        """This writer's part of the segment names, which start with their creation time."""
        self._sequence = 0
        self._fd: int | None = None
        self._map: mmap.mmap | None = None
        self._size = 0
        self.appended_rows = 0
        """Rows made durable by this writer (as the `journaled` counter)."""

    def open(self, at_least: int = 0) -> Path:
        """Create the next segment, with room for `at_least` bytes of frames; return its path."""
        self._close_segment()
        self._sequence += 1
        created = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.root / f"{created}-{self.name}.{self._sequence:06d}{SUFFIX}"
        # Locked and headed under another name first: a reader must never see a segment that
        # no writer holds yet, and take it for a sealed, empty one.
        creating = path.with_name(f".{path.name}.new")
        capacity = max(self._segment_bytes, len(self._metadata) + at_least)
        fd = os.open(creating, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._allocate(fd, 0, capacity)
            segment_map = mmap.mmap(fd, capacity)
        except OSError:
            os.close(fd)
            creating.unlink(missing_ok=True)
            raise
        self._fd, self._map, self._size = fd, segment_map, 0
        self._copy(self._metadata)
        try:
            creating.rename(path)
        except OSError:
            self._close_segment()
            creating.unlink(missing_ok=True)
            raise
        return path

    def append(self, payload: bytes, rows: int) -> None:
        """Append one frame; raise JournalError if there is no room for it on disk."""
        if not payload:
            raise ValueError("a frame's payload must not be empty: readers take it for damage")
        frame = encode_frame(payload, rows)
        if self._map is None or self._size + len(frame) > len(self._map):
            try:
                self.open(len(frame))
            except OSError as error:
                raise JournalError(
                    error.errno, f"prediction journal in {self.root}: {error}"
                ) from None
        self._copy(frame)
        self.appended_rows += rows

    def close(self) -> None:
        """Seal the current segment: the shipper may delete it once shipped."""
        self._close_segment()

    def _copy(self, frame: bytes) -> None:
        assert self._map is not None  # noqa: S101 - opened by the caller
        end = self._size + len(frame)
        self._map[self._size : end] = frame
        self._size = end

    def _close_segment(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd is not None:
            fd, self._fd = self._fd, None
            # The reserved space beyond the last frame goes back; a writer killed before this
            # leaves zeros there, which readers take as the end of the frames.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)
            os.close(fd)  # releases the flock: the segment is sealed


class Frame(NamedTuple):
    """One frame read back: its payload and the offset just after it."""

    payload: bytes
    rows: int
    end: int


class CorruptFrameError(ValueError):
    """Bytes at `offset` of a segment are not a frame (a crash tore or damaged them)."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path.name} at byte {offset}: {reason}")
        self.offset = offset


class Segment:
    """One segment file as a reader sees it: its metadata, frames, and whether it is sealed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] = path.open("rb")
        self.metadata: dict[str, Any] | None = None
        """The header frame's JSON; None until the writer has written it whole."""
        self.data_start = 0

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def sealed(self) -> bool:
        """Tell whether no writer holds the segment (it can no longer grow)."""
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        return True

    def size(self) -> int:
        """Bytes in the file now."""
        return os.fstat(self._file.fileno()).st_size

    def fsync(self) -> None:
        """Make what the writer appended so far durable (fsync works through any descriptor)."""
        os.fsync(self._file.fileno())

    def read_metadata(self) -> bool:
        """Read the header frame if it is whole; return whether it is known now."""
        if self.metadata is None:
            frames = list(self.frames(0, limit_frames=1))
            if frames:
                self.metadata = json.loads(frames[0].payload)
                self.data_start = frames[0].end
        return self.metadata is not None

    def frames(
        self,
        offset: int,
        *,
        max_rows: int | None = None,
        headers_only: bool = False,
        limit_frames: int | None = None,
    ) -> Iterator[Frame]:
        """Yield the whole frames from `offset`, up to about `max_rows` rows.

        Stops quietly at an incomplete frame (the writer may be writing it); raises
        CorruptFrameError at bytes that are not a frame.
        """
        size = self.size()
        rows = frames = 0
        # Whole chunks rather than a read per frame: a frame is a few hundred bytes.
        chunk, chunk_start = b"", offset
        while offset + HEADER.size <= size:
            if (max_rows is not None and rows >= max_rows) or (
                limit_frames is not None and frames >= limit_frames
            ):
                return
            at = offset - chunk_start
            if at + HEADER.size > len(chunk):
                chunk, chunk_start, at = self._read(offset, size), offset, 0
            magic, length, count, checksum = HEADER.unpack_from(chunk, at)
            if magic == UNWRITTEN and not (length or count or checksum):
                return  # space the writer reserved and has not written (yet)
            if magic != MAGIC or not 0 < length <= MAX_PAYLOAD:
                raise CorruptFrameError(self.path, offset, "no frame header")
            end = offset + HEADER.size + length
            if end > size:
                return
            if not headers_only and at + HEADER.size + length > len(chunk):
                chunk, chunk_start, at = self._read(offset, size, HEADER.size + length), offset, 0
            payload = b""
            if not headers_only:
                payload = chunk[at + HEADER.size : at + HEADER.size + length]
                if zlib.crc32(payload) != checksum:
                    raise CorruptFrameError(self.path, offset, "checksum mismatch")
            yield Frame(payload, count, end)
            rows += count
            frames += 1
            offset = end

    def _read(self, offset: int, size: int, at_least: int = 0) -> bytes:
        """Read from `offset`: a chunk, or `at_least` bytes, whichever is more (up to `size`)."""
        return os.pread(self._file.fileno(), min(max(READ_CHUNK, at_least), size - offset), offset)

    def read_raw(self, offset: int) -> bytes:
        """Return the bytes from `offset` to the end, less reserved zeros (to set them aside)."""
        self._file.seek(offset)
        return self._file.read().rstrip(b"\x00")

    def exhausted(self, offset: int) -> bool:
        """Tell whether no frame starts at `offset`: the end of the file, or reserved zeros."""
        size = self.size()
        if offset + HEADER.size > size:
            return True
        head = os.pread(self._file.fileno(), HEADER.size, offset)
        return head == bytes(HEADER.size)


@dataclass
class Progress:
    """How far a segment has been shipped: a byte offset and the rows before it."""

    offset: int
    rows: int


def shipped_path(segment: Path) -> Path:
    """Return the file that records how far `segment` was shipped."""
    return segment.with_name(segment.name + SHIPPED_SUFFIX)


def read_progress(segment: Path) -> Progress | None:
    """Return the recorded progress of a segment; None if nothing was shipped yet."""
    try:
        offset, rows = shipped_path(segment).read_text().split()
        return Progress(int(offset), int(rows))
    except FileNotFoundError:
        return None
    except ValueError:
        # Torn by a crash: starting over only re-sends rows that the ids make idempotent.
        logger.warning("progress of %s unreadable; shipping it from the start", segment.name)
        return None


def write_progress(segment: Path, progress: Progress) -> None:
    """Record how far a segment was shipped (atomically; no fsync: losing it only re-ships)."""
    target = shipped_path(segment)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(f"{progress.offset} {progress.rows}")
    temporary.replace(target)


def remove_segment(segment: Path) -> None:
    """Delete a shipped, sealed segment and its progress file."""
    segment.unlink(missing_ok=True)
    shipped_path(segment).unlink(missing_ok=True)


def segment_paths(root: Path) -> list[Path]:
    """Return the segments under `root`, oldest name first."""
    if not root.is_dir():
        return []
    return sorted(path for path in root.iterdir() if path.name.endswith(SUFFIX))


def fsync_directory(directory: Path) -> None:
    """Make file creations and removals in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def shipper_lock(root: Path, *, wait: Callable[[], bool]) -> Iterator[bool]:
    """Hold the root's shipper lock; while another holds it, call `wait` until it says stop.

    Yields True once held, or False if `wait` gave up first.
    """
    root.mkdir(parents=True, exist_ok=True)
    with (root / SHIPPER_LOCK).open("ab") as lock:
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait():
                    yield False
                    return
                continue
            try:
                yield True
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
            return
