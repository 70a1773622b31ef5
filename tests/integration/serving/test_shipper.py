"""The shipper process against nx-27017: journaled rows land once, whatever fails meanwhile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.testdata.prospects import PROSPECT

from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import JournalEntry, entry_payload
from telescore.core.schema import FEATURES
from telescore.io.journal import JournalWriter, segment_paths
from telescore.io.prediction_store import PredictionStore
from telescore.services.processes import ServiceProcess, free_port, wait_until
from telescore.serving.shipper import DEAD_LETTER_DIR, DEAD_LETTER_FILE, ShipperStatus

pytestmark = pytest.mark.integration

# How long to wait on a state before calling it broken (a busy machine is slow, not wrong).
WAIT = 90.0
ROW = PROSPECT
IDS = PredictionIds()


def _writer(root: Path, version: str = "7", route: str = "champion") -> JournalWriter:
    return JournalWriter(
        root,
        {
            "format": 1,
            "model_name": "telemarketing",
            "model_version": version,
            "route": route,
            "served_as": "telemarketing",
            "features": list(FEATURES),
        },
    )


def _journal(writer: JournalWriter, requests: int, rows: int = 2, **row: Any) -> list[str]:
    """Append `requests` scored requests; return their prediction ids."""
    ids: list[str] = []
    for number in range(requests):
        prediction_ids = IDS.new(rows)
        columns = [[{**ROW, **row}[name]] * rows for name in FEATURES]
        entry = JournalEntry(
            prediction_ids, f"req-{number}", time.time(), 1.5, columns, [0.25] * rows, [[]] * rows
        )
        writer.append(entry_payload(entry), rows)
        ids.extend(prediction_ids)
    return ids


class ShipperUnderTest:
    """`python -m telescore.serving.shipper` run as MLServer runs it, status lines collected."""

    def __init__(self, root: Path, uri: str, database: str, **config: Any) -> None:
        self.config = {
            "root": str(root),
            "mongodb_uri": uri,
            "database": database,
            "drain_timeout": 3.0,
            "refusal_retries": 1,
            "max_defer": 0,
            **config,
        }
        self.statuses: list[ShipperStatus] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "telescore.serving.shipper"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(self.config).encode() + b"\n")
        self.process.stdin.flush()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.statuses.append(ShipperStatus.model_validate_json(line))

    @property
    def status(self) -> ShipperStatus:
        return self.statuses[-1] if self.statuses else ShipperStatus()

    def stop(self) -> int:
        """Close its stdin, as the server does, and wait for it to end."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        code = self.process.wait(timeout=WAIT)
        self._reader.join(timeout=WAIT)
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=WAIT)


class Setup:
    def __init__(self, mongodb: ServiceProcess, tmp_path: Path) -> None:
        self.mongodb = mongodb
        self.uri: str = mongodb.uri  # type: ignore[attr-defined]
        self.database = f"ship_{uuid.uuid4().hex[:12]}"
        self.root = tmp_path / "journal"
        self._shippers: list[ShipperUnderTest] = []

    def shipper(self, uri: str | None = None, **config: Any) -> ShipperUnderTest:
        shipper = ShipperUnderTest(self.root, uri or self.uri, self.database, **config)
        self._shippers.append(shipper)
        return shipper

    def shipper_config_line(self) -> str:
        config = {
            "root": str(self.root),
            "mongodb_uri": self.uri,
            "database": self.database,
            "max_defer": 0,
        }
        return json.dumps(config) + "\n"

    def stored_ids(self) -> list[str]:
        with PredictionStore(self.uri, self.database) as store:
            return [document["_id"] for document in store.find()]

    def wait_stored(self, expected: int) -> None:
        wait_until(lambda: len(self.stored_ids()) >= expected, WAIT, what=f"{expected} rows")

    def dead_letters(self) -> list[dict[str, Any]]:
        path = self.root / DEAD_LETTER_DIR / DEAD_LETTER_FILE
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def close(self) -> None:
        for shipper in self._shippers:
            if shipper.process.poll() is None:
                shipper.kill()


@pytest.fixture
def setup(mongodb: ServiceProcess, tmp_path: Path) -> Iterator[Setup]:
    prepared = Setup(mongodb, tmp_path)
    yield prepared
    prepared.close()


def test_every_journaled_row_lands_once_and_shipped_segments_go(setup: Setup) -> None:
    # given a live writer and a sealed segment left by another model's writer
    old = _writer(setup.root, version="3", route="challenger")
    left_over = _journal(old, 5)
    old.close()
    live = _writer(setup.root)
    first = _journal(live, 10)

    # when a shipper runs, and the live writer goes on meanwhile
    shipper = setup.shipper()
    setup.wait_stored(len(left_over) + len(first))
    later = _journal(live, 10)
    setup.wait_stored(len(left_over) + len(first) + len(later))

    # then every row is stored under its prediction id, with the model its segment names
    with PredictionStore(setup.uri, setup.database) as store:
        documents = {document["_id"]: document for document in store.find()}
    assert sorted(documents) == sorted(left_over + first + later), "each journaled row, once"
    assert {documents[each]["model_version"] for each in left_over} == {"3"}, "left-over model"
    assert {documents[each]["route"] for each in first} == {"champion"}, "live model's route"
    assert documents[first[0]]["features"] == ROW, "features as journaled"
    # and the shipped, sealed segment is gone while the live one stays
    wait_until(lambda: len(segment_paths(setup.root)) == 1, WAIT, what="the old segment removed")
    wait_until(lambda: shipper.status.backlog == 0, WAIT, what="an empty backlog")
    live.close()
    assert shipper.stop() == 0, "the shipper ends cleanly when its stdin closes"
    assert segment_paths(setup.root) == [], "a sealed, shipped segment is deleted"
    assert shipper.status.written == len(documents), "written counts every row once"


def test_a_record_mongodb_refuses_is_set_aside_and_later_rows_land(setup: Setup) -> None:
    # given a journal whose middle request holds a value BSON cannot encode (2**63: no int64)
    writer = _writer(setup.root)
    before = _journal(writer, 3)
    poison = _journal(writer, 1, rows=1, campaign=2**63)
    after = _journal(writer, 3)

    # when shipped
    shipper = setup.shipper()
    setup.wait_stored(len(before) + len(after))
    wait_until(lambda: shipper.status.dead_lettered == 1, WAIT, what="the refused row counted")

    # then the others are stored, and the refused one is set aside with its reason
    assert sorted(setup.stored_ids()) == sorted(before + after), "every other row is stored"
    letters = setup.dead_letters()
    assert [letter["record"]["_id"] for letter in letters] == poison, "the refused row is kept"
    assert "BSON" in letters[0]["reason"], letters[0]["reason"]
    assert shipper.status.backlog == 0, "nothing waits behind the refused row"
    writer.close()


def test_rows_wait_on_disk_while_mongodb_is_down_and_a_later_shipper_sends_them(
    setup: Setup,
) -> None:
    # given rows journaled while MongoDB cannot be reached
    writer = _writer(setup.root)
    ids = _journal(writer, 4)
    writer.close()
    unreachable = f"mongodb://127.0.0.1:{free_port()}"
    shipper = setup.shipper(unreachable)
    wait_until(lambda: shipper.status.mongodb_down, WAIT, what="the shipper to find MongoDB down")

    # when that shipper is stopped, it drains for a while and leaves the rows on disk
    assert shipper.stop() == 0, "it ends within its drain timeout"
    assert shipper.status.backlog == len(ids), "the rows are still counted as waiting"
    assert setup.stored_ids() == [], "nothing reached the database"

    # then the next shipper, with MongoDB reachable, ships them all
    setup.shipper()
    setup.wait_stored(len(ids))
    assert sorted(setup.stored_ids()) == sorted(ids), "every row, once"


def test_a_killed_shipper_loses_nothing_and_the_next_one_ships_the_rest_once(
    setup: Setup,
) -> None:
    # given a shipper shipping a long journal in small batches
    writer = _writer(setup.root)
    ids = _journal(writer, 400)
    writer.close()
    first = setup.shipper(batch_rows=20)
    wait_until(lambda: first.status.written >= 100, WAIT, what="a part shipped")

    # when it is killed mid-way, and another one starts
    first.kill()
    second = setup.shipper(batch_rows=200)
    wait_until(lambda: second.status.backlog == 0 and second.statuses, WAIT, what="the rest")

    # then each journaled prediction id is stored, and no other
    stored = setup.stored_ids()
    assert set(stored) == set(ids), f"{len(set(ids) - set(stored))} rows missing"
    assert second.stop() == 0


def test_a_second_shipper_on_one_journal_waits_until_the_first_stops(setup: Setup) -> None:
    # given a shipper holding the journal
    first = setup.shipper()
    wait_until(lambda: bool(first.statuses), WAIT, what="the first shipper up")

    # when another starts on the same journal, then it stands by
    second = setup.shipper()
    wait_until(lambda: bool(second.statuses), WAIT, what="the second shipper's status")
    assert second.status.standby, "only one shipper ships a journal at a time"

    # and takes over once the first has stopped
    assert first.stop() == 0
    writer = _writer(setup.root)
    ids = _journal(writer, 2)
    setup.wait_stored(len(ids))
    assert not second.status.standby, "the second shipper took over"
    writer.close()


def test_a_torn_tail_is_set_aside_and_the_whole_frames_before_it_land(setup: Setup) -> None:
    # given a segment whose writer died inside its last frame (a machine crash)
    writer = _writer(setup.root)
    ids = _journal(writer, 3)
    writer.close()
    (segment,) = segment_paths(setup.root)
    with segment.open("ab") as file:
        file.write(b"TJ\x00\x00\x00\x10\x00")  # a frame header cut short
        file.write(b"garbage that is not a frame" * 3)

    # when shipped
    shipper = setup.shipper()
    setup.wait_stored(len(ids))

    # then the whole frames land, the rest is set aside as raw bytes, the segment is done
    assert sorted(setup.stored_ids()) == sorted(ids)
    wait_until(lambda: bool(setup.dead_letters()), WAIT, what="the torn tail set aside")
    assert "raw_base64" in setup.dead_letters()[0], "the unreadable bytes are kept"
    wait_until(lambda: segment_paths(setup.root) == [], WAIT, what="the segment removed")
    assert shipper.stop() == 0


def test_the_shipper_ends_when_the_process_that_started_it_dies(setup: Setup) -> None:
    # given a shipper started by a parent process that then dies without closing its stdin
    launcher = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-m', 'telescore.serving.shipper'],"
        " stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)\n"
        f"child.stdin.write({setup.shipper_config_line()!r}.encode())\n"
        "child.stdin.flush()\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", launcher], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    writer = _writer(setup.root)
    ids = _journal(writer, 2)
    writer.close()
    setup.wait_stored(len(ids))

    # when the parent is killed
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    # then the orphaned shipper notices and ends by itself
    wait_until(lambda: not _alive(child), WAIT, what="the orphaned shipper to end")


def _alive(pid: int) -> bool:
    try:
        with Path(f"/proc/{pid}/stat").open() as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_rows_wait_while_the_machine_is_busy_but_no_longer_than_max_defer(setup: Setup) -> None:
    # given a shipper that finds the machine busy (it wants more idle cores than there are)
    shipper = setup.shipper(min_idle_cores=1000.0, max_defer=2.0)
    wait_until(lambda: bool(shipper.statuses), WAIT, what="the shipper up")

    # when rows are journaled
    writer = _writer(setup.root)
    ids = _journal(writer, 3)
    writer.close()

    # then they wait on disk while the machine stays busy
    wait_until(lambda: shipper.status.backlog == len(ids), WAIT, what="the rows counted")
    assert setup.stored_ids() == [], "rows shipped although the machine was busy"
    # and are shipped once they have waited max_defer
    setup.wait_stored(len(ids))
    assert sorted(setup.stored_ids()) == sorted(ids)


def test_a_segment_without_a_readable_header_is_set_aside_and_removed(setup: Setup) -> None:
    # given a sealed segment whose header a crash left unreadable, beside a good one
    setup.root.mkdir(parents=True)
    headless = setup.root / "20260101T000000-1-dead.000001.journal"
    headless.write_bytes(b"not a journal header at all")
    writer = _writer(setup.root)
    ids = _journal(writer, 2)
    writer.close()

    # when a shipper runs
    shipper = setup.shipper()
    setup.wait_stored(len(ids))

    # then the good rows land, and the headless segment is set aside and gone
    wait_until(lambda: not headless.exists(), WAIT, what="the headless segment removed")
    letters = setup.dead_letters()
    assert [letter["segment"] for letter in letters] == [headless.name], letters
    assert "raw_base64" in letters[0], "its bytes are kept"
    assert shipper.stop() == 0
