"""The prediction journal: frames read back in order, sealing, rotation, failures, torn tails."""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path
from typing import NamedTuple

import pytest

from telescore.io.journal import (
    HEADER,
    MAGIC,
    MAX_PAYLOAD,
    CorruptFrameError,
    Frame,
    JournalError,
    JournalWriter,
    Progress,
    Segment,
    encode_frame,
    read_progress,
    remove_segment,
    segment_paths,
    shipped_path,
    shipper_lock,
    write_progress,
)

METADATA = {"model_name": "telemarketing", "model_version": "3", "route": "champion"}
HEADER_FRAME_BYTES = len(encode_frame(json.dumps(METADATA).encode(), 0))
"""Size of the header frame that opens every segment of these tests."""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "journal"


@pytest.fixture
def writer(root: Path) -> Iterator[JournalWriter]:
    journal = JournalWriter(root, METADATA)
    yield journal
    journal.close()


def _data_frames(path: Path) -> list[Frame]:
    """Every frame after the header of one segment."""
    with closing(Segment(path)) as segment:
        assert segment.read_metadata(), f"{path.name} has no readable header"
        return list(segment.frames(segment.data_start))


def _payloads(path: Path) -> list[bytes]:
    return [frame.payload for frame in _data_frames(path)]


def _metadata(path: Path) -> dict[str, object] | None:
    with closing(Segment(path)) as segment:
        segment.read_metadata()
        return segment.metadata


def _sealed(path: Path) -> bool:
    with closing(Segment(path)) as segment:
        return segment.sealed()


def test_frames_read_back_in_order_after_the_header(root: Path, writer: JournalWriter) -> None:
    # Given three appended requests
    writer.append(b"first", 1)
    writer.append(b"second request", 2)
    writer.append(b"third", 3)
    writer.close()

    # When the one segment is read
    [path] = segment_paths(root)
    with closing(Segment(path)) as segment:
        known = segment.read_metadata()
        header = next(segment.frames(0))
        frames = list(segment.frames(segment.data_start))
        size = segment.size()

    # Then the header holds the metadata, and the frames come back as written, in order
    assert known, "the header must be readable"
    assert header.rows == 0, "the header frame counts no rows"
    assert [frame.payload for frame in frames] == [b"first", b"second request", b"third"]
    assert [frame.rows for frame in frames] == [1, 2, 3], "rows of each frame"
    ends = [frame.end for frame in frames]
    assert ends == sorted(set(ends)), f"each frame must end after the previous: {ends}"
    assert frames[0].end == header.end + HEADER.size + len(b"first"), "end is just after a frame"
    assert ends[-1] == size, "the last frame ends at the end of the file"
    assert writer.appended_rows == 6, "the writer counts the rows it made durable"


def test_frames_resume_from_any_frame_end(root: Path, writer: JournalWriter) -> None:
    # Given a segment of three frames, the first of which was already read
    for payload in (b"a", b"b", b"c"):
        writer.append(payload, 1)
    [path] = segment_paths(root)
    first = _data_frames(path)[0]

    # When reading resumes at the end of that frame
    with closing(Segment(path)) as segment:
        rest = [frame.payload for frame in segment.frames(first.end)]

    # Then the remaining frames follow, and nothing is read twice
    assert rest == [b"b", b"c"], f"resuming from a frame end gave {rest}"


@pytest.mark.parametrize(
    ("max_rows", "expected"),
    [(1, [b"a"]), (3, [b"a", b"b"]), (4, [b"a", b"b"])],
)
def test_frames_stop_once_max_rows_is_reached(
    root: Path, writer: JournalWriter, max_rows: int, expected: list[bytes]
) -> None:
    # Given frames of 2 rows each
    for payload in (b"a", b"b", b"c", b"d"):
        writer.append(payload, 2)
    [path] = segment_paths(root)

    # When at most `max_rows` rows are asked for
    with closing(Segment(path)) as segment:
        segment.read_metadata()
        frames = list(segment.frames(segment.data_start, max_rows=max_rows))

    # Then whole frames are read until that many rows are reached, and not one frame more
    assert [frame.payload for frame in frames] == expected, f"max_rows={max_rows} read {frames}"


def test_read_metadata_returns_the_header_dict(root: Path, writer: JournalWriter) -> None:
    # Given a segment a writer opened
    path = writer.open()

    # When a reader reads its header
    with closing(Segment(path)) as segment:
        known = segment.read_metadata()
        metadata = segment.metadata

    # Then it is the metadata the writer was given
    assert known, "a whole header must be readable"
    assert metadata == METADATA, f"metadata read back: {metadata}"


def test_read_metadata_waits_for_a_whole_header(tmp_path: Path) -> None:
    # Given a segment file holding only half of its header frame
    path = tmp_path / "half.journal"
    path.write_bytes(encode_frame(b'{"model_name": "telemarketing"}', 0)[:20])

    # When its header is read / Then it is not known yet, rather than guessed or refused
    with closing(Segment(path)) as segment:
        assert not segment.read_metadata(), "half a header must not count as read"
        assert segment.metadata is None, "metadata must stay unknown"


def test_a_segment_is_sealed_only_once_its_writer_lets_go(
    root: Path, writer: JournalWriter
) -> None:
    # Given a segment the writer holds
    writer.append(b"held", 1)
    [path] = segment_paths(root)

    # When a reader looks before and after the writer closes
    held = _sealed(path)
    frames_while_held = _payloads(path)
    writer.close()
    after = _sealed(path)

    # Then it is open while held (and its frames already readable), sealed after
    assert not held, "a segment its writer holds must not look sealed"
    assert frames_while_held == [b"held"], "an appended frame must be readable at once"
    assert after, "a closed writer's segment must be sealed"


def test_writer_rotates_to_a_new_segment_when_one_is_full(root: Path) -> None:
    # Given a writer whose segments hold the header and exactly two 100-byte frames
    payloads = [bytes([65 + index]) * 100 for index in range(5)]
    segment_bytes = HEADER_FRAME_BYTES + 2 * (HEADER.size + 100)
    writer = JournalWriter(root, METADATA, segment_bytes=segment_bytes)

    # When five frames are appended
    for payload in payloads:
        writer.append(payload, 1)
    paths = segment_paths(root)
    sealed = [_sealed(path) for path in paths]
    writer.close()

    # Then they fill three segments in turn, listed oldest first, none over the limit
    assert [_payloads(path) for path in paths] == [payloads[0:2], payloads[2:4], payloads[4:]], (
        "frames must fill each segment up to its limit, then go to the next, oldest listed first"
    )
    assert paths == sorted(paths), "segment_paths lists the oldest segment first"
    assert sealed == [True, True, False], (
        f"rotated segments must be sealed, the current one held: {sealed}"
    )
    sizes = [path.stat().st_size for path in paths]
    assert max(sizes) <= segment_bytes, f"a segment outgrew its limit: {sizes}"
    assert all(_metadata(path) == METADATA for path in paths), "each segment has its own header"


def test_segment_paths_of_a_missing_root_is_empty(tmp_path: Path) -> None:
    # Given no journal folder / When listed / Then there is nothing, and no error
    assert segment_paths(tmp_path / "missing") == [], "a missing root holds no segments"


class Observation(NamedTuple):
    """What a reader could see at the moment the writer wrote some bytes."""

    header: bool
    """Whether the bytes were a segment's header frame."""
    file: Path
    """The file being written, under whatever name it had then."""
    locked: bool
    listed: list[tuple[Path, bool, bool]]
    """Each segment `segment_paths` listed: its path, header readable, sealed."""


def test_a_segment_is_never_visible_before_it_is_locked_and_headed(root: Path) -> None:
    # Given a writer whose space reservation first records what a reader would see then
    seen: list[Observation] = []

    def observing_allocate(fd: int, offset: int, length: int) -> None:
        inode = os.fstat(fd).st_ino
        [current] = [path for path in root.iterdir() if path.stat().st_ino == inode]
        listed = []
        for path in segment_paths(root):
            with closing(Segment(path)) as segment:
                listed.append((path, segment.read_metadata(), segment.sealed()))
        seen.append(Observation(True, current, not _sealed(current), listed))
        os.posix_fallocate(fd, offset, length)

    segment_bytes = HEADER_FRAME_BYTES + HEADER.size + 10
    writer = JournalWriter(root, METADATA, segment_bytes=segment_bytes, allocate=observing_allocate)

    # When frames are appended across several segments
    for _ in range(3):
        writer.append(b"0123456789", 1)
    writer.close()

    # Then each segment was locked before it was written, and not listed before its header
    assert len(seen) == 3, "one segment per frame"
    for each in seen:
        assert each.locked, f"{each.file.name} was written before it was locked"
        paths = [path for path, _, _ in each.listed]
        assert each.file not in paths, f"{each.file.name} was listed before its header"
        # And every segment a reader could list had a whole header and was sealed
        for path, headed, sealed in each.listed:
            assert headed, f"{path.name} was listed without a readable header"
            assert sealed, f"{path.name} is still held after its writer moved on"
    assert [len(_payloads(path)) for path in segment_paths(root)] == [1, 1, 1]


class FullDisk:
    """A space reservation that works, or fails with ENOSPC, as the test says."""

    def __init__(self) -> None:
        self.full = False

    def __call__(self, fd: int, offset: int, length: int) -> None:
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        os.posix_fallocate(fd, offset, length)


def test_a_full_disk_refuses_the_append_that_needs_a_new_segment_and_then_recovers(
    root: Path,
) -> None:
    # Given a writer whose segment holds two frames, both written, and then a full disk
    disk = FullDisk()
    frame_bytes = len(encode_frame(b"request", 1))
    writer = JournalWriter(
        root, METADATA, segment_bytes=HEADER_FRAME_BYTES + 2 * frame_bytes, allocate=disk
    )
    writer.append(b"request", 1)
    writer.append(b"request", 1)
    [first] = segment_paths(root)
    disk.full = True

    # When the next append needs a new segment
    with pytest.raises(JournalError) as caught:
        writer.append(b"request", 2)

    # Then it is refused as a full disk, the full segment is sealed with its frames whole,
    # and nothing else is left on disk
    assert caught.value.errno == errno.ENOSPC, f"errno {caught.value.errno}: {caught.value}"
    assert _payloads(first) == [b"request", b"request"], "the earlier frames must be intact"
    assert _sealed(first), "the full segment must be sealed, so it can be shipped and deleted"
    assert sorted(path.name for path in root.iterdir()) == [first.name], "no half-made file"
    assert writer.appended_rows == 2, "the refused frame's rows must not count as durable"

    # And once there is space again, the next append goes to a new segment
    disk.full = False
    writer.append(b"next request", 1)
    writer.close()
    paths = segment_paths(root)
    assert paths[0] == first and len(paths) == 2, [path.name for path in paths]
    assert _payloads(paths[1]) == [b"next request"], "the next append is in the new segment"


def test_a_full_disk_at_the_first_segment_exposes_nothing_and_recovers(root: Path) -> None:
    # Given a disk with no room for a first segment
    disk = FullDisk()
    disk.full = True
    writer = JournalWriter(root, METADATA, allocate=disk)

    # When an append needs a segment / Then it is refused and no file (not even hidden) is left
    with pytest.raises(JournalError) as caught:
        writer.append(b"lost request", 1)
    assert caught.value.errno == errno.ENOSPC, f"errno {caught.value.errno}: {caught.value}"
    assert sorted(root.iterdir()) == [], "a failed segment creation left files behind"

    # And when the disk has room again, the next append succeeds
    disk.full = False
    writer.append(b"next request", 1)
    writer.close()
    [path] = segment_paths(root)
    assert _payloads(path) == [b"next request"], "the append after a failed creation"


def test_a_segment_left_by_a_killed_writer_ends_at_its_reserved_zeros(root: Path) -> None:
    # Given a live segment as a killed writer leaves it: frames, then the zeros of its
    # reserved space (copied while the writer holds it, so the copy is not sealed by it)
    writer = JournalWriter(root, METADATA, segment_bytes=4096)
    writer.append(b"one", 1)
    writer.append(b"two", 1)
    [live] = segment_paths(root)
    left = live.with_name("0-left-over.000001.journal")
    left.write_bytes(live.read_bytes())
    writer.close()
    assert left.stat().st_size == 4096, "the reserved space is still there"

    # When read / Then its frames come back, and reading stops at the zeros
    with closing(Segment(left)) as segment:
        segment.read_metadata()
        frames = list(segment.frames(segment.data_start))
        assert [frame.payload for frame in frames] == [b"one", b"two"]
        assert segment.exhausted(frames[-1].end), "zeros after the last frame: nothing more"
        assert not segment.exhausted(segment.data_start), "a frame starts at the first offset"
        assert segment.read_raw(frames[-1].end) == b"", "set aside, the zeros are nothing"
    # and a sealed segment no longer holds the reserved space
    assert live.stat().st_size == HEADER_FRAME_BYTES + 2 * len(encode_frame(b"one", 1))


def _sealed_segment(root: Path, payloads: list[bytes]) -> Path:
    writer = JournalWriter(root, METADATA)
    for payload in payloads:
        writer.append(payload, 1)
    writer.close()
    [path] = segment_paths(root)
    return path


def _append_raw(path: Path, data: bytes) -> int:
    """Append bytes by hand; return the offset they start at."""
    offset = path.stat().st_size
    with path.open("ab") as file:
        file.write(data)
    return offset


@pytest.mark.parametrize(
    "tail",
    [
        encode_frame(b"half written request", 1)[:-5],
        encode_frame(b"header only", 1)[: HEADER.size],
        encode_frame(b"header cut", 1)[:7],
        b"TJ",
    ],
    ids=["half a frame", "header without payload", "half a header", "magic only"],
)
def test_a_torn_tail_ends_the_frames_quietly(root: Path, tail: bytes) -> None:
    # Given a sealed segment whose last frame was torn by a crash
    path = _sealed_segment(root, [b"one", b"two"])
    _append_raw(path, tail)

    # When its frames are read / Then the whole ones come back and reading stops there
    assert _payloads(path) == [b"one", b"two"], "an incomplete frame must end the read quietly"


@pytest.mark.parametrize(
    ("tail", "reason"),
    [
        (b"XX" + encode_frame(b"not a frame at all", 1)[2:], "no frame header"),
        (struct.pack("!2sIII", MAGIC, MAX_PAYLOAD + 1, 1, 0), "no frame header"),
        (struct.pack("!2sIII", MAGIC, 0, 1, 0), "no frame header"),
    ],
    ids=["bad magic", "impossible length", "empty payload"],
)
def test_bytes_that_are_not_a_frame_are_corrupt(root: Path, tail: bytes, reason: str) -> None:
    # Given a sealed segment followed by bytes that are not a frame
    path = _sealed_segment(root, [b"one"])
    offset = _append_raw(path, tail)

    # When its frames are read
    read: list[bytes] = []
    with closing(Segment(path)) as segment:
        segment.read_metadata()
        with pytest.raises(CorruptFrameError, match=reason) as caught:
            read.extend(frame.payload for frame in segment.frames(segment.data_start))

    # Then the good frames come first, then an error that says where the damage starts
    assert read == [b"one"], f"frames before the damage: {read}"
    assert caught.value.offset == offset, f"damage at {caught.value.offset}, expected {offset}"
    assert path.name in str(caught.value), "the message must name the segment"


def test_a_checksum_mismatch_is_corrupt(root: Path) -> None:
    # Given a sealed segment whose second frame had one payload byte changed
    path = _sealed_segment(root, [b"one", b"two"])
    second = _data_frames(path)[1]
    data = bytearray(path.read_bytes())
    data[second.end - 1] ^= 0xFF
    path.write_bytes(bytes(data))
    start = second.end - len(b"two") - HEADER.size

    # When its frames are read
    read: list[bytes] = []
    with closing(Segment(path)) as segment:
        segment.read_metadata()
        with pytest.raises(CorruptFrameError) as caught:
            read.extend(frame.payload for frame in segment.frames(segment.data_start))

    # Then the first frame is read and the damaged one is refused, not returned
    assert read == [b"one"], f"frames before the damage: {read}"
    assert "checksum mismatch" in str(caught.value), f"wrong reason: {caught.value}"
    assert caught.value.offset == start, f"damage at {caught.value.offset}, expected {start}"


def test_progress_round_trips(tmp_path: Path) -> None:
    # Given a segment whose progress is recorded twice
    segment = tmp_path / "x.000001.journal"
    write_progress(segment, Progress(offset=120, rows=7))
    write_progress(segment, Progress(offset=4096, rows=99))

    # When it is read back / Then the last record is returned, and no temporary file is left
    assert read_progress(segment) == Progress(4096, 99), "the last progress written"
    assert sorted(path.name for path in tmp_path.iterdir()) == [shipped_path(segment).name], (
        "only the progress file must remain"
    )


def test_progress_of_a_segment_never_shipped_is_none(tmp_path: Path) -> None:
    # Given no progress file / When read / Then there is no progress
    assert read_progress(tmp_path / "x.000001.journal") is None, "missing progress must be None"


@pytest.mark.parametrize(
    "content",
    [b"", b"120", b"120 7 3", b"abc 7", b"120 7.5", b"\xff\xfe\x00"],
    ids=["empty", "one number", "three numbers", "not a number", "fraction", "binary"],
)
def test_unreadable_progress_is_none(tmp_path: Path, content: bytes) -> None:
    # Given a progress file torn by a crash
    segment = tmp_path / "x.000001.journal"
    shipped_path(segment).write_bytes(content)

    # When read / Then it counts as no progress (the segment is shipped again), not an error
    assert read_progress(segment) is None, f"progress {content!r} must read as None"


def test_remove_segment_deletes_it_and_its_progress(root: Path) -> None:
    # Given a shipped, sealed segment with its progress
    path = _sealed_segment(root, [b"one"])
    write_progress(path, Progress(path.stat().st_size, 1))

    # When it is removed (twice: a crash may interrupt the first)
    remove_segment(path)
    remove_segment(path)

    # Then neither file is left
    assert list(root.iterdir()) == [], f"left behind: {list(root.iterdir())}"


def test_a_second_shipper_waits_and_gives_up_when_told(tmp_path: Path) -> None:
    # Given a shipper holding the lock, and a second one whose wait says stop on the third call
    calls: list[int] = []

    def wait() -> bool:
        calls.append(1)
        return len(calls) < 3

    # When the second tries to take it
    with (
        shipper_lock(tmp_path, wait=lambda: False) as first,
        shipper_lock(tmp_path, wait=wait) as second,
    ):
        pass

    # Then it waited, asked again after each wait, and gave up without the lock
    assert first, "the first shipper must get the free lock"
    assert len(calls) == 3, f"wait must be called until it says stop, called {len(calls)} times"
    assert not second, "a shipper that gave up must not believe it holds the lock"


def test_a_waiting_shipper_gets_the_lock_once_it_is_released(tmp_path: Path) -> None:
    # Given a first shipper holding the lock
    holder = ExitStack()
    assert holder.enter_context(shipper_lock(tmp_path, wait=lambda: False)), "first holder"
    calls: list[int] = []

    def wait() -> bool:
        calls.append(1)
        holder.close()  # the first shipper stops while the second waits
        return True

    # When a second shipper waits for it
    with shipper_lock(tmp_path, wait=wait) as second:
        held = second

    # Then it gets the lock after waiting once
    assert calls == [1], f"the second shipper must wait exactly once, waited {len(calls)}"
    assert held, "the second shipper must get the lock once it is released"


def test_the_lock_is_free_again_after_its_holder_leaves(tmp_path: Path) -> None:
    # Given a shipper that held the lock and left
    with shipper_lock(tmp_path, wait=lambda: False) as first:
        assert first, "the first shipper must get the free lock"

    # When another takes it / Then it gets it without waiting
    with shipper_lock(tmp_path, wait=lambda: False) as second:
        assert second, "a released lock must be free for the next shipper"
