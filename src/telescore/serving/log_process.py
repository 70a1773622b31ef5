"""The server's side of the prediction log: hands scored requests to a writer process.

Runs on MLServer's event loop and never waits there: `submit` appends a compact entry, a
batch goes out as one frame every `flush_rows` rows or `flush_delay` seconds, and the pipe's
transport buffers what the writer has not read yet. Every frame is kept until the writer
reports its rows durable (written to MongoDB or spooled); if the writer dies, a new one is
started and the kept frames are sent again. A resent row that was in fact written is stored
once, thanks to its deterministic `_id`. Rows are dropped, loudly, only when more than
`max_held_rows` wait for a writer that cannot be restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pickle
import sys
from collections import deque
from typing import Final

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from telescore.serving.log_writer import Entry, Status, WriterConfig, frame
from telescore.serving.prediction_log import log_metrics

logger = logging.getLogger(__name__)

WRITER_MODULE: Final = "telescore.serving.log_writer"


class WriterStartError(RuntimeError):
    """The writer process did not start, or refused its configuration."""


class LogProcess:
    """Never-blocking sender of scored requests to a restartable writer process."""

    def __init__(
        self,
        config: WriterConfig,
        *,
        flush_rows: int = 64,
        flush_delay: float = 0.05,
        max_held_rows: int = 200_000,
        start_timeout: float = 60.0,
        max_restart_delay: float = 10.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Prepare the sender; `start` launches the writer."""
        self.config = config
        self._flush_rows = flush_rows
        self._flush_delay = flush_delay
        self._max_held_rows = max_held_rows
        self._start_timeout = start_timeout
        self._max_restart_delay = max_restart_delay
        self._metrics = log_metrics(registry)
        # Each entry is pickled as it comes: bytes are invisible to the cyclic garbage collector,
        # whereas ~20 lists per request, alive until the next frame, would make it run more
        # often, and a full collection over MLServer's heap stalls every request for milliseconds.
        self._entries: list[bytes] = []
        self._entry_rows = 0
        self._timer: asyncio.TimerHandle | None = None
        # Frames sent (or to send) that the writer has not reported durable yet, oldest first.
        self._held: deque[tuple[int, bytes]] = deque()
        self._held_rows = 0
        self._child: asyncio.subprocess.Process | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._restarter: asyncio.Task[None] | None = None
        self._status = Status()  # of the current writer
        self._released = 0  # rows of the current writer's durable ones no longer held
        self._closing = False
        self.written = 0
        """Rows the writers reported written to MongoDB."""
        self.dropped = 0
        """Rows lost, here or in a writer."""
        self.restarts = 0
        """Writers started again after dying."""

    # -- what the metrics read --------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Rows not yet written to MongoDB nor spooled."""
        return self._entry_rows + self._held_rows - (self._status.durable - self._released)

    @property
    def spooled(self) -> int:
        """Rows the writer holds in its spool."""
        return self._status.spooled

    # -- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start the writer; raise `WriterStartError` if it cannot run."""
        await self._spawn()
        self._metrics.attach(self)

    def submit(self, entry: Entry) -> None:
        """Queue one scored request; never waits and never raises."""
        try:
            rows = len(entry[4])
            if self._closing:
                self._drop(rows, "submitted after close()")
                return
            if self._entry_rows + self._held_rows + rows > self._max_held_rows:
                self._drop(rows, f"more than {self._max_held_rows} rows wait for the writer")
                return
            self._entries.append(pickle.dumps(entry, protocol=pickle.HIGHEST_PROTOCOL))
            self._entry_rows += rows
            if self._entry_rows >= self._flush_rows:
                self._flush()
            elif self._timer is None:
                self._timer = asyncio.get_running_loop().call_later(self._flush_delay, self._flush)
        except Exception:
            logger.exception("prediction log: submit failed; this request is not logged")

    async def close(self) -> None:
        """Send what is left, let the writer finish (MongoDB or spool) and wait for it."""
        if self._closing:
            return
        self._flush()
        self._closing = True
        if self._restarter is not None:
            self._restarter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._restarter
        if self._held and not self._alive():
            # The writer died just before: one more, to make the held rows durable.
            with contextlib.suppress(WriterStartError):
                await self._spawn()
        child = self._child
        if child is not None and child.stdin is not None:
            child.stdin.close()
            try:
                await asyncio.wait_for(child.wait(), self.config.close_timeout + 15.0)
            except TimeoutError:
                logger.error("prediction log writer %d did not finish; killing it", child.pid)
                child.kill()
                await child.wait()
        if self._watcher is not None:
            await self._watcher
        lost = self.pending
        if lost:
            self._drop(lost, "the writer ended before they were durable")
        self._metrics.detach(self)

    # -- sending ----------------------------------------------------------------------------------

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._entries:
            return
        payload = frame(b"".join(self._entries))
        self._held.append((self._entry_rows, payload))
        self._held_rows += self._entry_rows
        self._entries = []
        self._entry_rows = 0
        # To a dead writer it is not sent: the restarter sends every held frame to the next one.
        self._send(payload)

    def _alive(self) -> bool:
        child = self._child
        return child is not None and child.returncode is None

    def _send(self, payload: bytes) -> None:
        child = self._child
        if not self._alive() or child is None or child.stdin is None or child.stdin.is_closing():
            return
        child.stdin.write(payload)  # buffered by the transport: never blocks the loop

    # -- the writer process -----------------------------------------------------------------------

    async def _spawn(self) -> None:
        """Start a writer, send it the config and every held frame, wait until it is ready."""
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            WRITER_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert child.stdin is not None  # noqa: S101 - PIPE above
        assert child.stdout is not None  # noqa: S101 - PIPE above
        # Current from now on, so that a frame flushed while it starts is sent to it too.
        self._child = child
        self._status = Status()
        self._released = 0
        child.stdin.write(frame(self.config.model_dump_json().encode()))
        for _, payload in self._held:
            child.stdin.write(payload)
        first = b""
        try:
            first = await asyncio.wait_for(child.stdout.readline(), self._start_timeout)
            status = Status.model_validate_json(first)
        except (TimeoutError, ValidationError, ValueError) as error:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            reason = first.decode(errors="replace").strip() or type(error).__name__
            raise WriterStartError(
                f"prediction log writer for {self.config.model_name} did not start: {reason}"
            ) from None
        self._apply(status)
        self._watcher = asyncio.create_task(self._watch(child))
        logger.info("prediction log writer %d started for %s", child.pid, self.config.model_name)

    async def _watch(self, child: asyncio.subprocess.Process) -> None:
        """Read the writer's status lines; when it ends unasked, start another."""
        assert child.stdout is not None  # noqa: S101 - PIPE in _spawn
        while line := await child.stdout.readline():
            try:
                self._apply(Status.model_validate_json(line))
            except ValidationError:
                logger.warning("prediction log writer said: %.200s", line)
        code = await child.wait()
        self._watcher = None
        if not self._closing:
            logger.error(
                "prediction log writer %d exited with code %s; %d rows held, restarting it",
                child.pid,
                code,
                self._held_rows,
            )
            self._restarter = asyncio.create_task(self._restart())

    async def _restart(self) -> None:
        delay = 0.1
        while not self._closing:
            try:
                await self._spawn()
            except (WriterStartError, OSError) as error:
                logger.error("%s; retrying in %.1f s", error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_restart_delay)
            else:
                self.restarts += 1
                self._restarter = None
                return

    def _apply(self, status: Status) -> None:
        """Take a writer's counts: release the frames it made durable, update the metrics."""
        previous = self._status
        self._count(status.written - previous.written, status.dropped - previous.dropped)
        self._status = status
        durable_held = status.durable - self._released
        while self._held and self._held[0][0] <= durable_held:
            rows, _ = self._held.popleft()
            self._held_rows -= rows
            self._released += rows
            durable_held -= rows

    def _count(self, written: int, dropped: int) -> None:
        if written > 0:
            self.written += written
            self._metrics.written.inc(written)
        if dropped > 0:
            self.dropped += dropped
            self._metrics.dropped.inc(dropped)

    def _drop(self, rows: int, reason: str) -> None:
        self._count(0, rows)
        logger.error("prediction log: DROPPED %d prediction rows: %s", rows, reason)
