"""Inside MLServer: run the journal's shipper process, restart it if it dies, expose its counts.

One shipper per journal root, however many models write there: the first model loaded starts
it and the last one unloaded stops it, so a reload (new instance up before the old one goes)
never stops shipping. The counts it reports, with the journal writers' own, are Prometheus
metrics on MLServer's metrics port, read when scraped.

The process's request, failure and refusal counts (`request_counter`, counted by the runtime
per model and version) go to the shipper on its stdin, a JSON line whenever they changed, at
most every `counters_interval`; the shipper stores them in MongoDB for the promotion to sum
over every MLServer process (`core/serving_counts.py`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import os
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from pydantic import ValidationError

from telescore.core.serving_counts import ModelCounts, ProcessCounts
from telescore.io.journal import JournalWriter
from telescore.serving.shipper import ShipperConfig, ShipperStatus

logger = logging.getLogger(__name__)

SHIPPER_MODULE: Final = "telescore.serving.shipper"
PREFIX: Final = "telescore_prediction_log"
SERVING_PREFIX: Final = "telescore_serving"
RequestOutcome = Literal["answered", "failed", "refused"]
"""What became of a request: answered; failed by the server (5xx); refused, invalid (4xx)."""
DURATION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip
"""Upper bounds (seconds) of the runtime's request durations: one row takes tens of
microseconds, a batch of 1,000 a few milliseconds; the alert on p99 is at 100 ms."""


class ShipperStartError(RuntimeError):
    """The shipper process did not start, or refused its configuration."""


class RequestCounter:
    """Requests, failures and refusals per served model and version in this process.

    Thread-safe. A request is counted once: accepted (answered, or `failed` by the server) or
    `refused` for the caller's invalid input, which is not the model's doing.
    """

    def __init__(self) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.process = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:8]}"
        """This process's id in `serving_counters`: a restarted process is a new one."""
        self.started_at = time.time()
        self._counts: dict[tuple[str, str], list[int]] = {}
        self._durations: dict[tuple[str, str], _Durations] = {}
        self._lock = threading.Lock()

    def count(
        self, model: str, version: str, outcome: RequestOutcome, *, seconds: float | None = None
    ) -> None:
        """Count one request to `model` (its MLServer name) at `version`.

        `seconds`, the time the runtime took over it, goes into the duration histogram when the
        request was accepted (answered or failed): a refused one says nothing of the model.
        """
        with self._lock:
            tally = self._counts.setdefault((model, version), [0, 0, 0])
            if outcome == "refused":
                tally[2] += 1
                return
            tally[0] += 1
            tally[1] += outcome == "failed"
            if seconds is not None:
                self._durations.setdefault((model, version), _Durations()).observe(seconds)

    def durations(self) -> list[tuple[str, str, list[int], float]]:
        """Return (model, version, cumulative count per bucket and +Inf, sum) of each model."""
        with self._lock:
            return [
                (model, version, each.cumulative(), each.total)
                for (model, version), each in sorted(self._durations.items())
            ]

    def snapshot(self) -> ProcessCounts:
        """Return the counts so far."""
        with self._lock:
            counts = sorted((key, tuple(value)) for key, value in self._counts.items())
        return ProcessCounts(
            process=self.process,
            host=self.host,
            pid=self.pid,
            started_at=self.started_at,
            counts=tuple(
                ModelCounts(
                    model=model,
                    version=version,
                    requests=requests,
                    failures=failures,
                    refused=refused,
                )
                for (model, version), (requests, failures, refused) in counts
            ),
        )


class _Durations:
    """A histogram of request durations: a count per bucket (the last one +Inf) and the sum."""

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[int]:
        return list(itertools.accumulate(self.counts))


_request_counter: RequestCounter | None = None


def request_counter() -> RequestCounter:
    """Return this process's request counter, made once (after a fork: the child's own)."""
    global _request_counter  # noqa: PLW0603 - one counter per process
    if _request_counter is None or _request_counter.pid != os.getpid():
        _request_counter = RequestCounter()
    return _request_counter


class ShipperSupervisor:
    """Starts one shipper process and starts it again whenever it ends unasked."""

    def __init__(
        self,
        config: ShipperConfig,
        *,
        counter: RequestCounter | None = None,
        start_timeout: float = 60.0,
        max_restart_delay: float = 10.0,
    ) -> None:
        self.config = config
        self._counter = counter
        self._feeder: asyncio.Task[None] | None = None
        self._start_timeout = start_timeout
        self._max_restart_delay = max_restart_delay
        self._child: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._restarter: asyncio.Task[None] | None = None
        self._closing = False
        self.status = ShipperStatus()
        """The current process's last report."""
        self.written = 0
        """Rows written, summed over every process this supervisor started."""
        self.dead_lettered = 0
        self.restarts = 0
        """Shippers started again after ending unasked."""

    @property
    def pid(self) -> int | None:
        """The current shipper's process id."""
        return self._child.pid if self._child is not None else None

    async def start(self) -> None:
        """Start the shipper; raise ShipperStartError if it cannot run."""
        await self._spawn()

    async def stop(self) -> None:
        """Ask the shipper to finish (it drains for up to `drain_timeout`) and wait for it."""
        self._closing = True
        if self._restarter is not None:
            self._restarter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarter
        child = self._child
        if self._feeder is not None:
            self._feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._feeder
        if child is not None and child.stdin is not None:
            self._send_counts(child)  # the last counts, shipped as it drains
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), self.config.drain_timeout + 10.0)
            except TimeoutError:
                logger.error("prediction log shipper %d did not finish; killing it", child.pid)
                child.kill()
                await child.wait()
        if self._watcher is not None:
            await self._watcher

    async def _spawn(self) -> None:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            SHIPPER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None  # noqa: S101 - PIPE above
        assert child.stdout is not None  # noqa: S101 - PIPE above
        # The config holds the MongoDB URI, credentials included: stdin, not the command line.
        child.stdin.write(self.config.model_dump_json().encode() + b"\n")
        first = b""
        try:
            first = await asyncio.wait_for(child.stdout.readline(), self._start_timeout)
            status = ShipperStatus.model_validate_json(first)
        except (TimeoutError, ValidationError, ValueError) as error:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            reason = first.decode(errors="replace").strip() or type(error).__name__
            raise ShipperStartError(
                f"prediction log shipper for {self.config.root} did not start: {reason}"
            ) from None
        self._child = child
        self.status = ShipperStatus()
        self._apply(status)
        self._watcher = asyncio.create_task(self._watch(child))
        if self._counter is not None:
            self._feeder = asyncio.create_task(self._feed(child))
        logger.info("prediction log shipper %d ships %s", child.pid, self.config.root)

    async def _watch(self, child: asyncio.subprocess.Process) -> None:
        assert child.stdout is not None  # noqa: S101 - PIPE in _spawn
        while line := await child.stdout.readline():
            try:
                self._apply(ShipperStatus.model_validate_json(line))
            except ValidationError:
                logger.warning("prediction log shipper said: %.200s", line)
        code = await child.wait()
        self._watcher = None
        if self._feeder is not None and not self._closing:
            self._feeder.cancel()
            self._feeder = None
        if not self._closing:
            # Nothing is lost: every row it had not shipped is still in the journal.
            logger.error("prediction log shipper %d exited with %s; restarting it", child.pid, code)
            self._restarter = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                await self._spawn()
            except (ShipperStartError, OSError) as error:
                logger.error("%s; retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_restart_delay)
            else:
                self.restarts += 1
                self._restarter = None
                return

    async def _feed(self, child: asyncio.subprocess.Process) -> None:
        """Send the request counts to the shipper whenever they changed (a new one: at once)."""
        sent: ProcessCounts | None = None
        while True:
            sent = self._send_counts(child, unless=sent)
            await asyncio.sleep(self.config.counters_interval)

    def _send_counts(
        self, child: asyncio.subprocess.Process, unless: ProcessCounts | None = None
    ) -> ProcessCounts | None:
        if self._counter is None or child.stdin is None or child.stdin.is_closing():
            return unless
        counts = self._counter.snapshot()
        if counts != unless:
            with contextlib.suppress(OSError):  # it died: the next one gets them
                child.stdin.write(counts.model_dump_json().encode() + b"\n")
        return counts

    def _apply(self, status: ShipperStatus) -> None:
        previous = self.status
        self.written += max(0, status.written - previous.written)
        self.dead_lettered += max(0, status.dead_lettered - previous.dead_lettered)
        self.status = status


class PredictionLogMetrics(Collector):
    """The prediction log's Prometheus metrics, computed when scraped."""

    def __init__(self) -> None:
        self._writers: weakref.WeakSet[JournalWriter] = weakref.WeakSet()
        self._supervisors: weakref.WeakSet[ShipperSupervisor] = weakref.WeakSet()
        self._retired_rows = 0
        self._retired_written = 0
        self._retired_dead_lettered = 0
        self.refused = 0
        """Requests answered 503 because the journal could not take them."""

    def track_writer(self, writer: JournalWriter) -> None:
        """Count the rows `writer` journals."""
        self._writers.add(writer)

    def retire_writer(self, writer: JournalWriter) -> None:
        """Keep the rows of a closed writer in the total."""
        if writer in self._writers:
            self._writers.discard(writer)
            self._retired_rows += writer.appended_rows

    def track_supervisor(self, supervisor: ShipperSupervisor) -> None:
        """Report what `supervisor`'s shipper reports."""
        self._supervisors.add(supervisor)

    def retire_supervisor(self, supervisor: ShipperSupervisor) -> None:
        """Keep a stopped shipper's counts in the totals; its backlog is no longer reported."""
        if supervisor in self._supervisors:
            self._supervisors.discard(supervisor)
            self._retired_written += supervisor.written
            self._retired_dead_lettered += supervisor.dead_lettered

    def collect(self) -> Iterator[Metric]:
        """Yield the current values (called by the registry on every scrape)."""
        writers, supervisors = list(self._writers), list(self._supervisors)
        active = [s for s in supervisors if not s.status.standby]
        yield _counter(
            "journaled",
            "Prediction rows journaled on local disk before their answer was sent.",
            self._retired_rows + sum(w.appended_rows for w in writers),
        )
        yield _counter(
            "refused",
            "Requests answered 503 because the journal could not take them (disk full).",
            self.refused,
        )
        yield _gauge(
            "spooled",
            "Prediction rows on local disk not yet in MongoDB (the journal's backlog).",
            sum(s.status.backlog for s in active),
        )
        yield _counter(
            "written",
            "Prediction rows MongoDB acknowledged (a re-sent row already stored counts again).",
            self._retired_written + sum(s.written for s in supervisors),
        )
        yield _counter(
            "dead_lettered",
            "Prediction rows MongoDB refused, or unreadable, set aside in the dead-letter file.",
            self._retired_dead_lettered + sum(s.dead_lettered for s in supervisors),
        )
        yield _gauge(
            "mongodb_up",
            "1 while the shipper's last write to MongoDB succeeded, 0 while rows wait on disk.",
            float(all(not s.status.mongodb_down for s in active)),
        )
        counter = request_counter()
        yield from _request_metrics(counter.snapshot())
        yield _duration_metric(counter.process, counter.durations())


def _request_metrics(counts: ProcessCounts) -> Iterator[Metric]:
    """The process's request counts, as its shipper stores them in `serving_counters`."""
    labels = ["process", "model", "version"]
    requests = CounterMetricFamily(
        f"{SERVING_PREFIX}_requests",
        "Requests the runtime accepted (answered or failed), per model and version (this process).",
        labels=labels,
    )
    failures = CounterMetricFamily(
        f"{SERVING_PREFIX}_failures",
        "Accepted requests the server failed (5xx), per model and version (this process).",
        labels=labels,
    )
    refused = CounterMetricFamily(
        f"{SERVING_PREFIX}_refused",
        "Requests refused for invalid input (4xx), not among requests (this process).",
        labels=labels,
    )
    for each in counts.counts:
        labelled = [counts.process, each.model, each.version]
        requests.add_metric(labelled, each.requests)
        failures.add_metric(labelled, each.failures)
        refused.add_metric(labelled, each.refused)
    yield requests
    yield failures
    yield refused


def _duration_metric(process: str, durations: list[tuple[str, str, list[int], float]]) -> Metric:
    """The runtime's time per request, per model and version (this process).

    Labelled with the process, as the counts are: a series then never resets (a restarted
    process is a new one), so the promotion can take its exact growth since a release began.
    """
    histogram = HistogramMetricFamily(
        f"{SERVING_PREFIX}_request_duration_seconds",
        "Time the runtime took to answer a request (validate, score, journal), failed or not.",
        labels=["process", "model", "version"],
    )
    bounds = [str(bound) for bound in DURATION_BUCKETS] + ["+Inf"]
    for model, version, cumulative, total in durations:
        histogram.add_metric(
            [process, model, version], list(zip(bounds, cumulative, strict=True)), sum_value=total
        )
    return histogram


def _counter(name: str, documentation: str, value: float) -> Metric:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> Metric:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, value=value)


_metrics: dict[int, PredictionLogMetrics] = {}


def prediction_log_metrics(registry: CollectorRegistry | None = None) -> PredictionLogMetrics:
    """Return the metrics of `registry` (default: the global one MLServer serves), made once."""
    registry = REGISTRY if registry is None else registry
    metrics = _metrics.get(id(registry))
    if metrics is None:
        metrics = _metrics[id(registry)] = PredictionLogMetrics()
        registry.register(metrics)
    return metrics


class _Shared:
    """A supervisor and how many loaded models use it."""

    def __init__(self, supervisor: ShipperSupervisor) -> None:
        self.supervisor = supervisor
        self.users = 0


_shared: dict[Path, _Shared] = {}
_lock: asyncio.Lock | None = None


def _shared_lock() -> asyncio.Lock:
    global _lock  # noqa: PLW0603 - one lock per process, made on the running loop
    if _lock is None:
        _lock = asyncio.Lock()
    return _lock


async def attach_shipper(config: ShipperConfig, metrics: PredictionLogMetrics) -> ShipperSupervisor:
    """Return the running shipper of `config.root`, starting it for the first model."""
    async with _shared_lock():
        root = config.root.resolve()
        shared = _shared.get(root)
        if shared is None:
            supervisor = ShipperSupervisor(config, counter=request_counter())
            await supervisor.start()
            metrics.track_supervisor(supervisor)
            shared = _shared[root] = _Shared(supervisor)
        elif shared.supervisor.config != config:
            logger.warning("journal %s is already shipped with other settings; keeping those", root)
        shared.users += 1
        return shared.supervisor


async def detach_shipper(supervisor: ShipperSupervisor, metrics: PredictionLogMetrics) -> None:
    """Stop the shipper once the last model that used it is unloaded."""
    async with _shared_lock():
        root = supervisor.config.root.resolve()
        shared = _shared.get(root)
        if shared is None or shared.supervisor is not supervisor:
            return
        shared.users -= 1
        if shared.users > 0:
            return
        del _shared[root]
    await supervisor.stop()
    metrics.retire_supervisor(supervisor)
