"""The prediction log: records every prediction in MongoDB without ever making a request wait.

`submit` appends to an in-memory buffer under a lock and returns. A background thread writes the
buffer to MongoDB in unordered batches. When MongoDB fails, the batch goes to a durable local
spool and the writer backs off (exponentially, capped); buffered records are spooled while it
waits. When MongoDB answers again the spool is replayed, oldest first. Every record has a
deterministic `_id`, so a record written twice (a replay after a lost acknowledgement) is
stored once. Records are dropped only if the spool itself fails (disk full), and then loudly.

Threads, not asyncio: MLServer calls the runtime from its event loop, and a blocking pymongo
call must never run there.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from pymongo.errors import PyMongoError

from telescore.io.prediction_store import split_encodable
from telescore.io.spool import Opener, Record, Spool, SpoolError

logger = logging.getLogger(__name__)


class RecordStore(Protocol):
    """What the writer needs from a store: `PredictionStore` is one."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc_info: object) -> Any: ...

    def ensure_indexes(self) -> None:
        """Create the store's indexes (idempotent)."""

    def insert(self, records: Sequence[Mapping[str, Any]]) -> int:
        """Store records, treating already-stored ones as written; return how many."""


class Counted(Protocol):
    """What the gauges read from each open log."""

    @property
    def pending(self) -> int:
        """Records held in memory."""

    @property
    def spooled(self) -> int:
        """Records waiting in a spool."""


class LogMetrics:
    """The log metrics of one registry, shared by every open log that reports to it."""

    # Several logs may share a registry (champion and challenger in one MLServer process), and
    # a registry refuses a metric name twice: the gauges sum the open logs, read at scrape time
    # so they are never out of step with the buffers and spools they describe.

    def __init__(self, registry: CollectorRegistry) -> None:
        self._lock = threading.Lock()
        self._logs: weakref.WeakSet[Counted] = weakref.WeakSet()
        self.pending = Gauge(
            "telescore_prediction_log_pending",
            "Prediction records held in memory, not yet written to MongoDB or spooled.",
            registry=registry,
        )
        self.pending.set_function(lambda: self._total(lambda log: log.pending))
        self.spooled = Gauge(
            "telescore_prediction_log_spooled",
            "Prediction records waiting in the local spool for MongoDB.",
            registry=registry,
        )
        self.spooled.set_function(lambda: self._total(lambda log: log.spooled))
        self.written = Counter(
            "telescore_prediction_log_written",
            "Prediction records acknowledged by MongoDB (a record replayed after an "
            "ambiguous failure counts again).",
            registry=registry,
        )
        self.dropped = Counter(
            "telescore_prediction_log_dropped",
            "Prediction records lost: the spool could not take them, or MongoDB never can.",
            registry=registry,
        )

    def attach(self, log: Counted) -> None:
        """Count `log` in the gauges until it is detached (or garbage)."""
        with self._lock:
            self._logs.add(log)

    def detach(self, log: Counted) -> None:
        """Stop counting `log`: what it still holds now belongs to its spool's next owner."""
        with self._lock:
            self._logs.discard(log)

    def _total(self, value: Callable[[Counted], int]) -> float:
        with self._lock:
            logs = list(self._logs)
        return float(sum(value(log) for log in logs))


_metrics_lock = threading.Lock()
_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, LogMetrics] = (
    weakref.WeakKeyDictionary()
)


def log_metrics(registry: CollectorRegistry | None = None) -> LogMetrics:
    """Return the log metrics of `registry` (default: the global one), creating them once."""
    registry = REGISTRY if registry is None else registry
    with _metrics_lock:
        metrics = _metrics_by_registry.get(registry)
        if metrics is None:
            metrics = _metrics_by_registry[registry] = LogMetrics(registry)
        return metrics


class PredictionLog:
    """Background, never-blocking, loss-free writer of prediction records."""

    def __init__(
        self,
        store_factory: Callable[[], RecordStore],
        spool_path: Path | str,
        *,
        max_buffer: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 0.5,
        initial_backoff: float = 0.5,
        max_backoff: float = 30.0,
        registry: CollectorRegistry | None = None,
        spool_opener: Opener | None = None,
    ) -> None:
        """Prepare the log; `spool_path` is a folder this log alone owns."""
        if batch_size < 1 or max_buffer < batch_size:
            raise ValueError("need 1 <= batch_size <= max_buffer")
        if flush_interval <= 0 or initial_backoff <= 0 or max_backoff < initial_backoff:
            raise ValueError("need flush_interval > 0 and 0 < initial_backoff <= max_backoff")
        self._store_factory = store_factory
        self._max_buffer = max_buffer
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._metrics = log_metrics(registry)
        self._spool = (
            Spool(spool_path) if spool_opener is None else Spool(spool_path, opener=spool_opener)
        )
        self._buffer: deque[Record] = deque()
        self._condition = threading.Condition()  # guards the buffer and the closing flags
        self._closed = False
        self._stop_deadline = float("inf")
        self._thread: threading.Thread | None = None
        # Records are numbered in the order they are submitted, so that `durable` can say which
        # prefix is safe: the buffer holds [_buffer_start, _submitted), and batches taken from it
        # but not yet written or spooled are in flight, keyed by their first number.
        self._submitted = 0
        self._buffer_start = 0
        self._in_flight: dict[int, int] = {}
        self._metrics.attach(self)
        self.written = 0
        """Records MongoDB acknowledged (as the `written` counter)."""
        self.dropped = 0
        """Records lost (as the `dropped` counter)."""
        # Owned by the writer thread only.
        self._store: RecordStore | None = None
        self._indexed = False
        self._down = False
        self._backoff = initial_backoff
        self._retry_at = 0.0

    # -- public API -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records held in memory: buffered, or being written."""
        with self._condition:
            return len(self._buffer) + sum(self._in_flight.values())

    @property
    def durable(self) -> int:
        """How many of the records submitted so far, from the first, are all written or spooled.

        Records dropped after being taken count too: nothing more can be done for them here.
        """
        with self._condition:
            return min([self._buffer_start, *self._in_flight])

    @property
    def spooled(self) -> int:
        """Records waiting in the spool."""
        return self._spool.pending

    def __enter__(self) -> PredictionLog:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the background writer (idempotent)."""
        with self._condition:
            if self._closed:
                raise RuntimeError("PredictionLog is closed")
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name="telescore-prediction-log", daemon=True
            )
        self._thread.start()

    def submit(self, records: Sequence[Record]) -> None:
        """Queue records for writing; never waits on MongoDB and never raises."""
        try:
            if not records:
                return
            batch = list(records)
            with self._condition:
                if self._closed:
                    overflow = None
                elif len(self._buffer) + len(batch) <= self._max_buffer:
                    self._buffer.extend(batch)
                    self._submitted += len(batch)
                    if len(self._buffer) >= self._batch_size:
                        self._condition.notify()
                    return
                else:
                    # Buffer full (MongoDB slower than traffic): spool the buffer, then the
                    # batch, so records still become durable in the order they came.
                    self._buffer.extend(batch)
                    self._submitted += len(batch)
                    overflow = self._take_locked(len(self._buffer))
            if overflow is None:
                self._drop(batch, "submitted after close()")
                return
            self._spool_taken(overflow)
        except Exception:
            logger.exception("prediction log: submit failed; these records are not logged")

    def close(self, timeout: float = 10.0) -> None:
        """Stop the writer: write what MongoDB takes within `timeout`, spool the rest."""
        with self._condition:
            if self._closed:
                return
            self._closed = True
            self._stop_deadline = time.monotonic() + timeout
            self._condition.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():
                logger.warning("prediction log writer still busy after %.1f s; spooling", timeout)
        self._spool_buffer()
        if thread is not None and thread.is_alive():
            return  # it may still spool its in-flight batch: keep the spool open for it
        self._spool.close()
        # The records left in the spool now belong to whichever log opens it next.
        self._metrics.detach(self)

    # -- writer thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._wait_for_work():
                try:
                    if self._down and time.monotonic() < self._retry_at:
                        # Backing off: make buffered records durable rather than hold them.
                        self._spool_buffer()
                    else:
                        self._write_all()
                except Exception:  # the writer must survive anything; the data is spooled
                    logger.exception("prediction log: unexpected error in the writer")
                    self._mark_down()
            self._finish()
        finally:
            self._close_store()

    def _wait_for_work(self) -> bool:
        """Wait for a full batch or the flush interval; return True once closing."""
        with self._condition:
            if not self._closed and len(self._buffer) < self._batch_size:
                self._condition.wait(self._flush_interval)
            return self._closed

    def _write_all(self) -> None:
        """Write the buffer, then replay the spool; on failure spool and back off."""
        try:
            store = self._open_store()
            self._write_buffer(store)
            if self._spool.pending:
                self._replay(store, self._should_pause_replay)
        except Exception as error:
            self._mark_down(error)
            self._spool_buffer()
        else:
            self._mark_up()

    def _finish(self) -> None:
        """Last pass when closing: write what MongoDB takes before the deadline."""
        deadline = self._stop_deadline

        def past_deadline() -> bool:
            return time.monotonic() >= deadline

        try:
            # When backing off, MongoDB was down moments ago: spool at once rather than spend
            # the close timeout waiting for it.
            if not past_deadline() and not (self._down and time.monotonic() < self._retry_at):
                store = self._open_store()
                self._write_buffer(store, until=past_deadline)
                if self._spool.pending and not past_deadline():
                    self._replay(store, past_deadline)
        except Exception as error:
            logger.warning("prediction log: MongoDB unavailable while closing (%s)", error)
        finally:
            self._spool_buffer()

    def _write_buffer(self, store: RecordStore, until: Callable[[], bool] | None = None) -> None:
        while not (until and until()):
            start, batch = self._take(self._batch_size)
            if not batch:
                return
            try:
                self._insert(store, batch)
            except Exception:
                self._spool_records(batch)
                raise
            finally:
                self._settle(start)

    def _replay(self, store: RecordStore, should_stop: Callable[[], bool]) -> None:
        result = self._spool.replay(
            lambda chunk: self._insert(store, chunk),
            batch_size=self._batch_size,
            should_stop=should_stop,
        )
        if result.replayed or result.skipped:
            logger.info(
                "prediction log: replayed %d spooled records (%d unreadable lines skipped), "
                "%d left",
                result.replayed,
                result.skipped,
                result.remaining,
            )

    def _should_pause_replay(self) -> bool:
        # Live records first: a long replay must not leave the buffer to overflow.
        return self._closed or len(self._buffer) >= self._batch_size

    def _insert(self, store: RecordStore, records: list[Record]) -> None:
        """Insert records; a record BSON cannot encode is dropped, not retried forever."""
        try:
            written = store.insert(records)
        except PyMongoError:
            raise
        except Exception:
            good, bad = split_encodable(records)
            if not bad:
                raise
            # Retrying would fail the same way and block the spool behind it forever.
            self._drop(bad, "cannot be encoded as BSON")
            written = store.insert(good) if good else 0
        self._metrics.written.inc(written)
        self.written += written

    def _open_store(self) -> RecordStore:
        if self._store is None:
            store = self._store_factory()
            store.__enter__()
            self._store = store
        if not self._indexed:
            self._store.ensure_indexes()
            self._indexed = True
        return self._store

    def _close_store(self) -> None:
        if self._store is not None:
            try:
                self._store.__exit__(None, None, None)
            except Exception:
                logger.exception("prediction log: closing the store failed")
            self._store = None

    def _mark_down(self, error: BaseException | None = None) -> None:
        if self._down:
            self._backoff = min(self._backoff * 2, self._max_backoff)
        else:
            self._backoff = self._initial_backoff
            logger.warning(
                "prediction log: MongoDB unavailable (%.200s); spooling, retrying in %.1f s",
                error,
                self._backoff,
            )
        self._down = True
        self._retry_at = time.monotonic() + self._backoff

    def _mark_up(self) -> None:
        if self._down:
            logger.info("prediction log: MongoDB answers again; %d records spooled", self.spooled)
        self._down = False
        self._backoff = self._initial_backoff

    # -- shared helpers ---------------------------------------------------------------------------

    def _take(self, limit: int) -> tuple[int, list[Record]]:
        """Take records off the buffer; the caller must `_settle` them once written or spooled."""
        with self._condition:
            return self._take_locked(limit)

    def _take_locked(self, limit: int) -> tuple[int, list[Record]]:
        """`_take`, for a caller that holds the condition; returns the first number and records."""
        count = min(limit, len(self._buffer))
        start = self._buffer_start
        batch = [self._buffer.popleft() for _ in range(count)]
        if count:
            self._in_flight[start] = count
            self._buffer_start += count
        return start, batch

    def _settle(self, start: int) -> None:
        # Called after the write or spool, so a record always shows in `pending` or `spooled`.
        with self._condition:
            self._in_flight.pop(start, None)

    def _spool_buffer(self) -> None:
        self._spool_taken(self._take(len(self._buffer)))

    def _spool_taken(self, taken: tuple[int, list[Record]]) -> None:
        start, batch = taken
        try:
            self._spool_records(batch)
        finally:
            self._settle(start)

    def _spool_records(self, records: list[Record]) -> None:
        if not records:
            return
        try:
            self._spool.append(records)
        except SpoolError as error:
            self._drop(records, str(error))

    def _drop(self, records: Sequence[Mapping[str, Any]], reason: str) -> None:
        self._metrics.dropped.inc(len(records))
        self.dropped += len(records)
        logger.error("prediction log: DROPPED %d prediction records: %s", len(records), reason)
