"""The prediction log shipper: moves journaled predictions from local disk into MongoDB.

MLServer appends each scored request to the journal (`io.journal`) before it answers; this
process, started by the runtime (`serving.shipping`), does everything else, out of the
server's process:

- reads every segment under the journal root, of any model or writer, live or left over,
  oldest first, and inserts one document per row (`insert_many`, unordered);
- records how far each segment is shipped, and deletes a segment once it is sealed and
  shipped. A crash between an insert and that record re-sends rows whose ids are stored
  already, which count as stored: at least once into MongoDB, exactly once by the id;
- while MongoDB is down, leaves the rows where they are and retries with back-off;
- sets aside a record MongoDB refuses (after `refusal_retries` more tries) in the
  dead-letter file `<root>/dead-letter/predictions.jsonl`, with the reason, and goes on;
- fsyncs the segments every `fsync_interval` seconds: what a machine crash can lose;
- reports a JSON status line on stdout every `status_interval` seconds;
- stores the request counts its server sends on stdin (one JSON line each time they change)
  in `serving_counters`, at most every `counters_interval` seconds, on standby too: the
  promotion sums them over every MLServer process.

One shipper per root holds `<root>/.shipper.lock`; another one started meanwhile waits on
standby. It stops when its stdin closes or the server that started it is gone: it then ships
for up to `drain_timeout` seconds, and leaves the rest on disk for the next shipper.

    python -m telescore.serving.shipper   (the config arrives as one JSON line on stdin)
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo.errors import PyMongoError

from telescore.core.predictions import ServedModel, entry_records, read_entry
from telescore.core.serving_counts import ProcessCounts
from telescore.core.shipping import ShippingPolicy, ship_now
from telescore.io.journal import (
    CorruptFrameError,
    Frame,
    Progress,
    Segment,
    fsync_directory,
    read_progress,
    remove_segment,
    segment_paths,
    shipper_lock,
    write_progress,
)
from telescore.io.prediction_store import InsertOutcome, PredictionStore, Refused
from telescore.io.serving_counter_store import ServingCounterStore

logger = logging.getLogger(__name__)

DEAD_LETTER_DIR: Final = "dead-letter"
DEAD_LETTER_FILE: Final = "predictions.jsonl"
IDLE_WINDOW: Final = 0.1
"""Seconds over which idle CPU is measured before shipping on a machine that may be busy."""


class ShipperConfig(BaseModel):
    """What one shipper ships, where to, and how often."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: Path
    """Journal root: every segment under it is shipped."""
    mongodb_uri: str
    database: str
    # The policy's fields, with its defaults, checked here as the config arrives.
    batch_rows: int = Field(default=ShippingPolicy.batch_rows, gt=0)
    """Rows per `insert_many`; a batch this full is shipped at once."""
    max_delay: float = Field(default=ShippingPolicy.max_delay, ge=0)
    """Seconds a row waits for a fuller batch."""
    min_idle_cores: float = Field(default=ShippingPolicy.min_idle_cores, ge=0)
    """Idle CPU below which the machine counts as busy serving, and rows wait."""
    max_defer: float = Field(default=ShippingPolicy.max_defer, ge=0)
    """Seconds rows may wait for idle CPU before they are shipped anyway; 0 never waits."""
    poll_interval: float = Field(default=0.05, gt=0)
    """Seconds between looks at the journal once everything is shipped."""
    fsync_interval: float = Field(default=1.0, gt=0)
    """Seconds between fsyncs of the journal: at most what a machine crash loses."""
    status_interval: float = Field(default=0.25, gt=0)
    drain_timeout: float = Field(default=10.0, ge=0)
    """Seconds to keep shipping after being asked to stop; the rest waits on disk."""
    max_backoff: float = Field(default=5.0, gt=0)
    """Longest wait between tries while MongoDB is down."""
    refusal_retries: int = Field(default=2, ge=0)
    """Further tries of a record MongoDB refused, before it is set aside."""
    counters_interval: float = Field(default=1.0, gt=0)
    """Seconds between two stores of the server's request counts (only when they changed)."""
    counters_heartbeat: float = Field(default=60.0, gt=0)
    """Seconds after which unchanged counts are stored again: a silent document is a dead one."""

    def policy(self) -> ShippingPolicy:
        """Return when to ship, as the pure policy states it."""
        return ShippingPolicy(
            batch_rows=self.batch_rows,
            max_delay=self.max_delay,
            min_idle_cores=self.min_idle_cores,
            max_defer=self.max_defer,
        )


class ShipperStatus(BaseModel):
    """What a shipper reports; counts are since this process started."""

    model_config = ConfigDict(extra="forbid")

    backlog: int = 0
    """Rows in the journal not yet acknowledged by MongoDB."""
    written: int = 0
    """Rows MongoDB acknowledged (a re-sent row already stored counts again)."""
    dead_lettered: int = 0
    """Rows set aside: refused by MongoDB, or unreadable in the journal."""
    segments: int = 0
    standby: bool = False
    """Another shipper holds the root; this one waits."""
    mongodb_down: bool = False
    """The last try to write failed; rows wait on disk."""


class DeadLetter:
    """Append-only file of what could not be stored, each line with its reason."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / DEAD_LETTER_FILE
        self.directory = directory

    def put(self, reason: str, segment: str, record: Any = None, raw: bytes | None = None) -> None:
        """Set one record (or raw bytes that are not one) aside, durably."""
        entry: dict[str, Any] = {
            "set_aside_at": datetime.now(UTC).isoformat(),
            "reason": reason,
            "segment": segment,
        }
        if record is not None:
            entry["record"] = record
        if raw is not None:
            entry["raw_base64"] = base64.b64encode(raw).decode()
        line = json.dumps(entry, default=str, separators=(",", ":")) + "\n"
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as file:
            file.write(line)
            file.flush()
            os.fsync(file.fileno())


@dataclass
class _Tracked:
    """A segment this shipper follows."""

    segment: Segment
    shipped: Progress
    """Durably recorded: everything before `offset` is in MongoDB (or set aside)."""
    counted: Progress
    """Frames counted so far (for the backlog), from the start of the segment."""
    model: ServedModel | None = None
    features: list[str] = field(default_factory=list)
    synced_offset: int = 0


@dataclass
class _Batch:
    """Records read for one insert, and the progress they make per segment."""

    records: list[dict[str, Any]] = field(default_factory=list)
    sources: list[_Tracked] = field(default_factory=list)
    """The segment of each record, to say where a refused record came from."""
    progress: dict[str, tuple[_Tracked, Progress]] = field(default_factory=dict)


class Shipper:
    """Ships the journal under one root into a store; the process loop is `run`."""

    def __init__(
        self,
        config: ShipperConfig,
        store: PredictionStore,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._store = store
        self._sleep = sleep
        self._dead_letter = DeadLetter(config.root / DEAD_LETTER_DIR)
        self._tracked: dict[str, _Tracked] = {}
        self.status = ShipperStatus()

    # -- reading the journal --------------------------------------------------------------------

    def refresh(self) -> None:
        """Follow new segments and count the rows waiting in every one."""
        paths = segment_paths(self.config.root)
        for path in paths:
            if path.name not in self._tracked:
                self._follow(path)
        for tracked in list(self._tracked.values()):
            self._count(tracked)
        self._remove_finished()

    def _follow(self, path: Path) -> None:
        try:
            segment = Segment(path)
        except FileNotFoundError:
            return  # shipped and removed by a previous shipper meanwhile
        shipped = read_progress(path) or Progress(0, 0)
        self._tracked[path.name] = _Tracked(
            segment, shipped, Progress(shipped.offset, shipped.rows)
        )

    def _count(self, tracked: _Tracked) -> None:
        segment = tracked.segment
        try:
            if tracked.model is None and not self._read_metadata(tracked):
                # A live writer may not have written it yet; a sealed segment never will.
                if segment.sealed():
                    self._drop_headless(tracked)
                return
            start = max(tracked.counted.offset, segment.data_start)
            for frame in segment.frames(start, headers_only=True):
                tracked.counted = Progress(frame.end, tracked.counted.rows + frame.rows)
        except CorruptFrameError:
            pass  # shipping meets it too, and decides what to do with it

    def _read_metadata(self, tracked: _Tracked) -> bool:
        """Read which model wrote the segment; False while unknown (or never knowable)."""
        segment = tracked.segment
        try:
            if not segment.read_metadata():
                return False
            metadata = segment.metadata or {}
            model = ServedModel(
                str(metadata["model_name"]), str(metadata["model_version"]), metadata["route"]
            )
            features = [str(name) for name in metadata["features"]]
        except (CorruptFrameError, ValueError, KeyError, TypeError) as error:
            logger.warning("prediction journal %s: unreadable header: %s", segment.path.name, error)
            return False
        tracked.model, tracked.features = model, features
        if tracked.shipped.offset < segment.data_start:
            tracked.shipped = Progress(segment.data_start, tracked.shipped.rows)
            tracked.counted = Progress(segment.data_start, tracked.counted.rows)
        return True

    # -- shipping -------------------------------------------------------------------------------

    def ship_once(self) -> bool:
        """Ship one batch; return whether anything moved (False: nothing waits).

        Raises a pymongo error when MongoDB cannot take the batch, and OSError when a refused
        record cannot be set aside: nothing advanced, the same rows are tried again later.
        """
        batch = self._read_batch()
        if batch.records:
            outcome = self._retry_refused(batch.records, self._store.insert(batch.records))
            for refused in outcome.refused:
                self._set_aside(batch, refused.index, refused.reason)
            self.status.written += outcome.stored
        for tracked, progress in batch.progress.values():
            tracked.shipped = progress
            tracked.counted = Progress(
                max(tracked.counted.offset, progress.offset),
                max(tracked.counted.rows, progress.rows),
            )
            try:
                write_progress(tracked.segment.path, progress)
            except OSError as error:
                # A full disk must not stall the shipping that frees it: a restart re-sends at
                # most this segment's shipped part, which the ids make harmless.
                logger.warning("progress of %s kept in memory: %s", tracked.segment.path, error)
        self._remove_finished()
        return bool(batch.progress)

    def _read_batch(self) -> _Batch:
        batch = _Batch()
        for tracked in self._tracked.values():
            budget = self.config.batch_rows - len(batch.records)
            if budget <= 0:
                break
            if tracked.model is not None:
                self._read_frames(tracked, budget, batch)
        return batch

    def _read_frames(self, tracked: _Tracked, budget: int, batch: _Batch) -> None:
        segment, model = tracked.segment, tracked.model
        assert model is not None  # noqa: S101 - read by the caller
        progress = Progress(tracked.shipped.offset, tracked.shipped.rows)
        try:
            for frame in segment.frames(progress.offset, max_rows=budget):
                self._add_frame(tracked, model, frame, batch)
                progress = Progress(frame.end, progress.rows + frame.rows)
        except CorruptFrameError as error:
            if segment.sealed():
                # Torn or damaged by a crash: set the rest aside rather than stop here forever.
                raw = segment.read_raw(error.offset)
                if raw:
                    self._dead_letter.put(str(error), segment.path.name, raw=raw)
                lost = max(0, tracked.counted.rows - progress.rows)
                self.status.dead_lettered += lost
                logger.error("prediction journal %s; %d bytes set aside", error, len(raw))
                progress = Progress(segment.size(), max(tracked.counted.rows, progress.rows))
            else:
                logger.warning("prediction journal %s; waiting for its writer", error)
        if progress.offset != tracked.shipped.offset:
            batch.progress[segment.path.name] = (tracked, progress)

    def _add_frame(
        self, tracked: _Tracked, model: ServedModel, frame: Frame, batch: _Batch
    ) -> None:
        try:
            records = entry_records(read_entry(frame.payload), model, tracked.features)
        except (ValueError, TypeError, KeyError) as error:
            self._dead_letter.put(
                f"unreadable journal entry: {error}", tracked.segment.path.name, raw=frame.payload
            )
            self.status.dead_lettered += frame.rows
            logger.error("prediction journal: %d rows set aside: %s", frame.rows, error)
            return
        batch.records.extend(records)
        batch.sources.extend([tracked] * len(records))

    def _drop_headless(self, tracked: _Tracked) -> None:
        """Set aside and delete a sealed segment with no readable header (a crash's doing)."""
        segment = tracked.segment
        raw = segment.read_raw(0)
        if raw:
            self._dead_letter.put("segment without a readable header", segment.path.name, raw=raw)
        logger.error("prediction journal %s has no readable header; set aside", segment.path.name)
        segment.close()
        remove_segment(segment.path)
        del self._tracked[segment.path.name]

    def _retry_refused(
        self, records: Sequence[dict[str, Any]], outcome: InsertOutcome
    ) -> InsertOutcome:
        """Try refused records again: some refusals (nx-27017 says 8 for any) pass later."""
        delay = 0.2
        for _ in range(self.config.refusal_retries):
            if not outcome.refused:
                break
            self._sleep(delay)
            delay *= 2
            again = [records[each.index] for each in outcome.refused]
            retried = self._store.insert(again)
            still = tuple(
                Refused(outcome.refused[each.index].index, each.reason) for each in retried.refused
            )
            outcome = InsertOutcome(outcome.stored + retried.stored, still)
        return outcome

    def _set_aside(self, batch: _Batch, index: int, reason: str) -> None:
        record = batch.records[index]
        segment = batch.sources[index].segment.path.name
        self._dead_letter.put(reason, segment, record=record)
        self.status.dead_lettered += 1
        logger.error(
            "prediction %s refused by MongoDB and set aside in %s: %s",
            record.get("_id"),
            self._dead_letter.path,
            reason,
        )

    def _remove_finished(self) -> None:
        """Delete sealed, shipped segments; update the counts the status reports."""
        for name, tracked in list(self._tracked.items()):
            segment = tracked.segment
            shipped = tracked.model is not None and segment.exhausted(tracked.shipped.offset)
            if shipped and segment.sealed():
                segment.close()
                remove_segment(segment.path)
                del self._tracked[name]
        self.status.segments = len(self._tracked)
        self.status.backlog = sum(t.counted.rows - t.shipped.rows for t in self._tracked.values())

    # -- durability -----------------------------------------------------------------------------

    def fsync(self) -> None:
        """Flush what writers appended since the last fsync, and the root's file list."""
        synced = False
        for tracked in self._tracked.values():
            # Frames appended since the last fsync, as far as they were counted (the reserved
            # size of a segment does not change as it fills).
            if tracked.counted.offset != tracked.synced_offset:
                tracked.segment.fsync()
                tracked.synced_offset = tracked.counted.offset
                synced = True
        if synced:
            fsync_directory(self.config.root)

    def close(self) -> None:
        """Close every segment file."""
        for tracked in self._tracked.values():
            tracked.segment.close()
        self._tracked.clear()


class _Control:
    """Tells the loop when to stop (stdin closed, or the server gone); keeps the counts sent."""

    def __init__(self, stdin: int) -> None:
        self._stdin = stdin
        self._parent = os.getppid()
        self._pending = b""
        self.stopping = False
        self.counts: ProcessCounts | None = None
        """The server's latest request counts (None until it sends some)."""

    def wait(self, seconds: float) -> bool:
        """Wait up to `seconds`, waking early on stdin; return True once asked to stop."""
        if self.stopping:
            time.sleep(seconds)
            return True
        readable, _, _ = select.select([self._stdin], [], [], seconds)
        if readable:
            data = os.read(self._stdin, 65536)
            if data:
                self._take(data)
            else:
                self.stopping = True
        if os.getppid() != self._parent:
            self.stopping = True
        return self.stopping

    def _take(self, data: bytes) -> None:
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            if line.strip():
                try:
                    self.counts = ProcessCounts.model_validate_json(line)
                except ValidationError as error:
                    logger.warning("unreadable request counts from the server: %.200s", error)


class CountsPublisher:
    """Stores the server's request counts when they change, and unchanged once a heartbeat."""

    def __init__(
        self,
        store: ServingCounterStore,
        config: ShipperConfig,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._interval = config.counters_interval
        self._heartbeat = config.counters_heartbeat
        self._max_backoff = config.max_backoff
        self._clock = clock
        self._published: ProcessCounts | None = None
        self._published_at = float("-inf")
        self._due = float("-inf")
        self._backoff = config.counters_interval

    def publish(self, counts: ProcessCounts | None, *, now_or_never: bool = False) -> None:
        """Store `counts` if they changed and are due (`now_or_never`: due now, one try)."""
        now = self._clock()
        unchanged = counts == self._published and now < self._published_at + self._heartbeat
        if counts is None or unchanged or (now < self._due and not now_or_never):
            return
        try:
            self._store.publish(counts, time.time())
        except PyMongoError as error:
            if self._backoff == self._interval:
                logger.warning("request counts not stored (%.200s); retrying", error)
            self._backoff = min(self._backoff * 2, self._max_backoff)
            self._due = now + self._backoff
            return
        self._published, self._published_at = counts, now
        self._backoff = self._interval
        self._due = now + self._interval


def run(config: ShipperConfig, control: _Control, report: Callable[[ShipperStatus], None]) -> None:
    """Ship until asked to stop, then drain for up to `drain_timeout` seconds."""
    standby = ShipperStatus(standby=True)
    with ServingCounterStore(config.mongodb_uri, config.database) as counter_store:
        counts = CountsPublisher(counter_store, config)

        def wait_for_lock() -> bool:
            report(standby)
            counts.publish(control.counts)  # a standby's server counts requests too
            return not control.wait(0.5)

        try:
            with shipper_lock(config.root, wait=wait_for_lock) as held:
                if not held:
                    return
                with PredictionStore(config.mongodb_uri, config.database) as store:
                    shipper = Shipper(config, store)
                    try:
                        _loop(shipper, store, control, report, counts)
                    finally:
                        shipper.fsync()
                        shipper.close()
                    report(shipper.status)
        finally:
            counts.publish(control.counts, now_or_never=True)


def _loop(
    shipper: Shipper,
    store: PredictionStore,
    control: _Control,
    report: Callable[[ShipperStatus], None],
    counts: CountsPublisher,
) -> None:
    config = shipper.config
    policy = config.policy()
    host = HostIdle()
    now = time.monotonic()
    next_fsync = next_status = retry_at = backlog_since = now
    backoff = config.poll_interval
    indexed = False
    deadline: float | None = None
    while True:
        now = time.monotonic()
        if control.stopping and deadline is None:
            deadline = now + config.drain_timeout
        shipper.refresh()
        if not shipper.status.backlog:
            backlog_since = now
        settled = False
        if now >= retry_at and _ready(shipper, policy, host, control, now - backlog_since):
            try:
                if not indexed:
                    store.ensure_indexes()
                    indexed = True
                settled = shipper.ship_once()
            except (PyMongoError, OSError) as error:
                if not shipper.status.mongodb_down:
                    logger.warning("MongoDB unavailable (%.200s); predictions wait on disk", error)
                shipper.status.mongodb_down = True
                backoff = min(max(backoff * 2, 0.25), config.max_backoff)
                retry_at = now + backoff
            else:
                if shipper.status.mongodb_down:
                    logger.info("MongoDB answers again; shipping %d rows", shipper.status.backlog)
                shipper.status.mongodb_down = False
                backoff = config.poll_interval
        if now >= next_fsync:
            shipper.fsync()
            next_fsync = now + config.fsync_interval
        if now >= next_status:
            report(shipper.status)
            next_status = now + config.status_interval
        counts.publish(control.counts)
        # Done once every segment is shipped and deleted: a server that just died may close its
        # segments a moment after its end of the pipe, so a shipped one may not be sealed yet.
        if deadline is not None and (shipper.status.segments == 0 or now >= deadline):
            if shipper.status.backlog:
                logger.warning("%d rows left on disk for the next shipper", shipper.status.backlog)
            return
        # While busy shipping, still read stdin: the counts, or the request to stop.
        control.wait(0 if settled else config.poll_interval)


def _ready(
    shipper: Shipper, policy: ShippingPolicy, host: HostIdle, control: _Control, waited: float
) -> bool:
    """Apply the shipping policy, measuring idle CPU only when it can decide."""
    backlog, stopping = shipper.status.backlog, control.stopping

    def decide(idle_cores: float | None) -> bool:
        return ship_now(
            policy, backlog=backlog, waited=waited, idle_cores=idle_cores, stopping=stopping
        )

    if not decide(None) or decide(0.0):
        return decide(None)  # the machine's load cannot change the answer
    # Measured over a moment in which this shipper (and so MongoDB's work for it) is still:
    # its own inserts would otherwise count as load and hold it back.
    host.idle_cores()
    control.wait(IDLE_WINDOW)
    return decide(host.idle_cores())


class HostIdle:
    """The machine's idle CPU between two readings, in cores, from /proc/stat."""

    def __init__(
        self, path: Path = Path("/proc/stat"), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._path = path
        self._clock = clock
        self._ticks_per_second = os.sysconf("SC_CLK_TCK")
        self._last: tuple[float, float] | None = self._sample()

    def idle_cores(self) -> float | None:
        """Return the idle cores since the last reading; None where /proc/stat is missing."""
        sample = self._sample()
        last, self._last = self._last, sample
        if sample is None or last is None or sample[0] - last[0] <= 0:
            return None
        return (sample[1] - last[1]) / self._ticks_per_second / (sample[0] - last[0])

    def _sample(self) -> tuple[float, float] | None:
        try:
            fields = self._path.read_text().split("\n", 1)[0].split()
        except OSError:
            return None
        # cpu user nice system idle iowait ...: idle and iowait are time no one wanted the CPU.
        return self._clock(), float(fields[4]) + float(fields[5])


def main() -> int:
    """Entry point of `python -m telescore.serving.shipper`."""
    # The server decides when this process ends, by closing stdin: a Ctrl-C or SIGTERM sent
    # to the whole process group must not cut a batch short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [shipper %(process)d] %(message)s",
    )
    # Status lines own stdout; anything else printing there would corrupt them.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    stdin = sys.stdin.fileno()
    try:
        config = ShipperConfig.model_validate_json(_read_line(stdin))
    except Exception as error:
        logger.exception("prediction log shipper cannot start")
        out.write(json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
        return 1

    def report(status: ShipperStatus) -> None:
        with contextlib.suppress(OSError, ValueError):  # the server no longer listens
            out.write(status.model_dump_json() + "\n")

    run(config, _Control(stdin), report)
    return 0


def _read_line(fd: int) -> bytes:
    """Read the first line of `fd` byte by byte (a buffered reader would hide later input)."""
    line = bytearray()
    while not line.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        line += chunk
    return bytes(line)


if __name__ == "__main__":
    sys.exit(main())
