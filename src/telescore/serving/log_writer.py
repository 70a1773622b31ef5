"""The prediction log's writer process: turns scored requests into MongoDB documents.

MLServer runs the runtime on one event loop. A writer thread there competes with it for the
GIL: measured here, logging from a thread cost about 28% of a saturated server's throughput,
against about 5% from a process of its own. So each served model starts this process
(`python -m telescore.serving.log_writer`) and sends it frames on stdin; the process builds
the documents and runs a `PredictionLog` (MongoDB, else its spool).

Protocol, every frame a 4-byte big-endian length then the payload:
- first frame: the `WriterConfig` as JSON (so no credential appears on a command line);
- then frames of pickled `Entry` tuples, one pickle per scored request, back to back.
On stdout the process answers one JSON `Status` line when ready and then every `STATUS_EVERY`
seconds, or `{"error": ...}` before exiting 1. At the end of stdin (the server closed it, or
died) it writes what MongoDB takes, spools the rest, reports a last status and exits 0.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import pickle
import select
import signal
import struct
import sys
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict

from telescore.core.predictions import Route, prediction_records
from telescore.core.schema import FEATURES
from telescore.io.prediction_store import PredictionStore
from telescore.io.spool import SpoolLockedError
from telescore.serving.prediction_log import PredictionLog

logger = logging.getLogger(__name__)

HEADER: Final = struct.Struct("!I")
"""Frame header: the payload's length."""
STATUS_EVERY: Final = 0.25
"""Seconds between status lines."""
MAX_SPOOL_SLOTS: Final = 64
"""Spool folders one model may use at once: one per writer, twice over for reloads."""

Entry = tuple[str, float, float, list[list[Any]], list[float], list[list[str]]]
"""One scored request: request id, UTC epoch seconds, latency (ms), the feature columns in
`FEATURES` order (one list of values each), the scores and the out-of-range flags per row."""


class WriterConfig(BaseModel):
    """What one writer process writes, and where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mongodb_uri: str
    database: str
    spool_root: Path
    """Folder holding this model's spool slots (`slot-00`, `slot-01`, ...)."""
    model_name: str
    """Registered model name, as stored in each document."""
    model_version: str
    route: Route
    close_timeout: float = 10.0
    """Seconds to keep writing to MongoDB at the end before spooling the rest."""


class Status(BaseModel):
    """Counts one writer reports; `durable` rows are the first ones received, all kept safe."""

    model_config = ConfigDict(extra="forbid")  # an {"error": ...} line is not a status

    durable: int = 0
    spooled: int = 0
    written: int = 0
    dropped: int = 0


def frame(payload: bytes) -> bytes:
    """Prefix a payload with its length."""
    return HEADER.pack(len(payload)) + payload


def entry_records(config: WriterConfig, entry: Entry) -> list[dict[str, Any]]:
    """Build the prediction documents of one scored request."""
    request_id, epoch, latency_ms, columns, scores, out_of_range = entry
    return prediction_records(
        request_id=request_id,
        model_name=config.model_name,
        model_version=config.model_version,
        route=config.route,
        rows=[dict(zip(FEATURES, values, strict=True)) for values in zip(*columns, strict=True)],
        scores=scores,
        latency_ms=latency_ms,
        out_of_range=out_of_range,
        timestamp=datetime.fromtimestamp(epoch, UTC),
    )


def entries(payload: bytes) -> list[Entry]:
    """Unpickle the entries of one frame."""
    stream = io.BytesIO(payload)
    found = []
    while stream.tell() < len(payload):
        found.append(pickle.load(stream))  # noqa: S301 - our own server, over a private pipe
    return found


def open_log(config: WriterConfig) -> PredictionLog:
    """Start a prediction log on the first spool slot no other writer holds."""

    def open_store() -> PredictionStore:
        return PredictionStore(config.mongodb_uri, config.database)

    # A spool folder has one owner at a time. During a reload the old and the new writer
    # overlap: each takes a free slot, and records a previous owner left in a slot are replayed
    # by whoever takes it next. A private registry: this process exposes no metrics itself.
    for slot in range(MAX_SPOOL_SLOTS):
        try:
            log = PredictionLog(
                open_store,
                config.spool_root / f"slot-{slot:02d}",
                registry=CollectorRegistry(),
            )
        except SpoolLockedError:
            continue
        log.start()
        return log
    raise RuntimeError(f"all {MAX_SPOOL_SLOTS} spool folders under {config.spool_root} are in use")


class _Writer:
    """The writer's state: its log and the status line it reports."""

    def __init__(self, config: WriterConfig, log: PredictionLog, out: IO[str]) -> None:
        self.config = config
        self.log = log
        self._out = out
        self._out_lock = threading.Lock()
        self._unusable = 0  # rows received but never submitted (a malformed entry)

    def take(self, entries: Sequence[Entry]) -> None:
        records: list[dict[str, Any]] = []
        for entry in entries:
            try:
                records.extend(entry_records(self.config, entry))
            except Exception:
                rows = len(entry[4]) if len(entry) == 6 else 0
                self._unusable += rows
                logger.exception("prediction log: DROPPED %d rows of a malformed entry", rows)
        self.log.submit(records)

    def status(self) -> Status:
        log = self.log
        return Status(
            durable=log.durable + self._unusable,
            spooled=log.spooled,
            written=log.written,
            dropped=log.dropped + self._unusable,
        )

    def report(self) -> None:
        line = self.status().model_dump_json() + "\n"
        with self._out_lock:
            self._out.write(line)
            self._out.flush()


def _read_exact(fd: int, size: int) -> bytes | None:
    """Read `size` bytes; None at a clean end of input."""
    # Straight from the descriptor: a buffered reader could hold bytes `select` cannot see.
    chunks: list[bytes] = []
    missing = size
    while missing:
        chunk = os.read(fd, missing)
        if not chunk:
            if missing == size:
                return None
            raise EOFError(f"input ended inside a frame ({size - missing} of {size} bytes)")
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> bytes | None:
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    (size,) = HEADER.unpack(header)
    payload = _read_exact(fd, size)
    if payload is None:
        raise EOFError("input ended after a frame header")
    return payload


def _wait_readable(fd: int, parent: int) -> bool:
    """Wait for input; False once the server that started this process is gone."""
    # A forked sibling may hold the pipe's write end open after the server dies, so the end of
    # stdin alone cannot be relied on.
    while True:
        readable, _, _ = select.select([fd], [], [], 1.0)
        if readable:
            return True
        if os.getppid() != parent:
            return False


def _report_until(writer: _Writer, stop: threading.Event) -> None:
    while not stop.wait(STATUS_EVERY):
        try:
            writer.report()
        except (OSError, ValueError):
            return  # the server closed our stdout: it no longer listens


def serve(stdin: int, out: IO[str]) -> int:
    """Run one writer: read the config, then frames until the end of `stdin` (a descriptor)."""
    parent = os.getppid()
    try:
        first = _read_frame(stdin)
        if first is None:
            raise EOFError("no configuration frame")
        config = WriterConfig.model_validate_json(first)
        log = open_log(config)
    except Exception as error:
        logger.exception("prediction log writer cannot start")
        out.write(json.dumps({"error": f"{type(error).__name__}: {error}"}) + "\n")
        out.flush()
        return 1
    writer = _Writer(config, log, out)
    writer.report()
    stop = threading.Event()
    reporter = threading.Thread(target=_report_until, args=(writer, stop), daemon=True)
    reporter.start()
    try:
        while _wait_readable(stdin, parent):
            payload = _read_frame(stdin)
            if payload is None:
                break
            writer.take(entries(payload))
    except Exception:
        logger.exception("prediction log writer: unreadable input; closing")
    finally:
        stop.set()
        log.close(config.close_timeout)
        reporter.join()
    with contextlib.suppress(OSError, ValueError):
        writer.report()
    return 0


def main() -> int:
    """Entry point of `python -m telescore.serving.log_writer`."""
    # The server decides when this process ends, by closing stdin: a Ctrl-C or SIGTERM sent to
    # the whole process group must not cut it short while it still holds records.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s [log-writer %(process)d] %(message)s",
    )
    # Status lines own stdout; anything else printing there would corrupt them.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return serve(sys.stdin.fileno(), out)


if __name__ == "__main__":
    sys.exit(main())
