"""The outcomes API, its jobs and its CLI, against real nx-27017 servers (no store is mocked).

Settings are the only thing a test chooses: which MongoDB and which database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.testdata.prospects import PROSPECT
from typer.testing import CliRunner

from telescore.app.main import create_app
from telescore.app.routes.outcomes import MAX_BATCH
from telescore.cli import app as cli_app
from telescore.core.access import API_KEY_HEADER
from telescore.core.outcomes import Outcome
from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import ServedModel, prediction_records
from telescore.io.access_store import AccessStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.jobs.access import create_api_key
from telescore.jobs.outcomes import import_outcomes, sweep_pending_outcomes
from telescore.jobs.streaming import report_outcomes
from telescore.services.embedded import mongodb_server, outcomes_api
from telescore.services.processes import ServiceProcess, free_port
from telescore.settings import MongoSettings, Settings

pytestmark = pytest.mark.integration

LOGGED_AT = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
REPORTED_AT = "2024-05-08T10:00:00.000Z"


def _issued_ago(age: timedelta) -> str:
    """A well-formed prediction id issued `age` ago, that no prediction has."""
    when = datetime.now(UTC) - age
    return PredictionIds(clock_ns=lambda: int(when.timestamp() * 1e9)).new(1)[0]


def _log(uri: str, database: str, count: int, ids: list[str] | None = None) -> list[str]:
    """Log `count` predictions of one request, as the shipper does; return their ids."""
    ids = ids or PredictionIds().new(count)
    records = prediction_records(
        prediction_ids=ids,
        request_id="campaign-42",
        model=ServedModel("telemarketing", "3", "champion"),
        rows=[PROSPECT] * count,
        scores=[0.5] * count,
        latency_ms=1.0,
        out_of_range=[[]] * count,
        timestamp=LOGGED_AT,
    )
    with PredictionStore(uri, database) as store:
        assert store.insert(records).stored == count, "the predictions should be logged"
    return ids


def _caller(uri: str, database: str) -> dict[str, str]:
    """Headers with a new integration API key of this database (reporting outcomes needs one)."""
    with AccessStore(uri, database) as store:
        return {API_KEY_HEADER: create_api_key(store, "tests", "integration").key}


def _settings(uri: str, database: str) -> Settings:
    return Settings(mongodb=MongoSettings(uri=uri, database=database))


def _env(uri: str, database: str, tmp_path: Path) -> dict[str, str]:
    """Environment that points a process at this MongoDB and database, and at no env file."""
    return {
        "TELESCORE_MONGODB_URI": uri,
        "TELESCORE_MONGODB_DATABASE": database,
        "TELESCORE_ENV_FILE": str(tmp_path / "no.env"),
    }


@pytest.fixture
def database() -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def logged(mongodb: ServiceProcess, database: str) -> list[str]:
    """Ids of four predictions in the prediction log."""
    return _log(mongodb.uri, database, 4)  # type: ignore[attr-defined]


@pytest.fixture
def client(mongodb: ServiceProcess, database: str) -> Iterator[TestClient]:
    """The API on the session's nx-27017, lifespan included."""
    uri = mongodb.uri  # type: ignore[attr-defined]
    with TestClient(create_app(_settings(uri, database)), headers=_caller(uri, database)) as opened:
        yield opened


def _body(prediction_id: str, subscribed: Any = True, **fields: Any) -> dict[str, Any]:
    return {"prediction_id": prediction_id, "subscribed": subscribed, **fields}


# --- one outcome -------------------------------------------------------------------------------


def test_an_outcome_is_recorded_and_read_back(client: TestClient, logged: list[str]) -> None:
    # Given a logged prediction / When its outcome is reported
    posted = client.post("/outcomes", json=_body(logged[0], "yes", reported_at=REPORTED_AT))

    # Then it is created, as stored
    assert posted.status_code == 201, f"a new outcome is created: {posted.text}"
    body = posted.json()
    assert body["status"] == "recorded", body
    assert body["outcome"]["subscribed"] is True, "'yes' is recorded as subscribed"
    assert body["outcome"]["reported_at"].startswith("2024-05-08T10:00:00"), body
    # And it can be read back by prediction id
    read = client.get(f"/outcomes/{logged[0]}")
    assert read.status_code == 200, read.text
    assert read.json() == body["outcome"], "GET answers what POST stored"


def test_the_same_outcome_twice_is_harmless(client: TestClient, logged: list[str]) -> None:
    # Given an outcome recorded
    first = client.post("/outcomes", json=_body(logged[0], True, source="team a"))

    # When the same outcome is reported again (a retry, a second agent)
    again = client.post("/outcomes", json=_body(logged[0], "yes", source="team b"))

    # Then it answers 200 "already recorded" with the outcome stored first
    assert first.status_code == 201, first.text
    assert again.status_code == 200, f"a repeat is not an error: {again.text}"
    assert again.json()["status"] == "already recorded", again.json()
    assert again.json()["outcome"] == first.json()["outcome"], "the stored outcome is unchanged"


def test_a_different_outcome_is_a_conflict_and_changes_nothing(
    client: TestClient, logged: list[str]
) -> None:
    # Given an outcome recorded
    first = client.post("/outcomes", json=_body(logged[0], False))

    # When a different one is reported for the same prediction
    conflict = client.post("/outcomes", json=_body(logged[0], True))

    # Then it is refused with 409, saying what is stored
    assert conflict.status_code == 409, f"a different outcome must conflict: {conflict.text}"
    assert "different outcome" in conflict.json()["detail"], conflict.json()
    assert "subscribed no" in conflict.json()["detail"], "the detail says what is stored"
    # And the stored outcome is the first one
    stored = client.get(f"/outcomes/{logged[0]}").json()
    assert stored == first.json()["outcome"], f"the stored outcome changed: {stored}"


def test_an_outcome_before_its_prediction_is_logged_is_pending_then_joined(
    client: TestClient, mongodb: ServiceProcess, database: str
) -> None:
    # Given a prediction answered a moment ago, not logged yet (the shipper defers)
    [early] = PredictionIds().new(1)

    # When its outcome is reported, and read back
    posted = client.post("/outcomes", json=_body(early, "yes"))
    read = client.get(f"/outcomes/{early}")

    # Then it is accepted as pending (202), saying it will be joined, and readable as such
    assert posted.status_code == 202, f"an outcome before its prediction is kept: {posted.text}"
    body = posted.json()
    assert body["status"] == "pending", body
    assert "will be joined" in body["detail"], f"the answer should say what comes next: {body}"
    assert body["outcome"]["pending"] is True, body
    assert read.status_code == 200 and read.json() == body["outcome"], read.text
    # And a repeat is harmless, a different outcome a conflict, while it is pending
    again = client.post("/outcomes", json=_body(early, True))
    conflict = client.post("/outcomes", json=_body(early, False))
    assert again.status_code == 202 and again.json()["status"] == "pending", again.text
    assert conflict.status_code == 409, f"a different outcome conflicts even if pending: {conflict}"
    assert "pending" in conflict.json()["detail"], conflict.json()

    # When the prediction is logged (as the shipper does)
    _log(mongodb.uri, database, 1, ids=[early])  # type: ignore[attr-defined]

    # Then the outcome reads as joined, with what was first reported, and the join labels it
    joined = client.get(f"/outcomes/{early}").json()
    assert joined == {**body["outcome"], "pending": False}, f"joined unchanged: {joined}"
    with OutcomeStore(mongodb.uri, database) as store:  # type: ignore[attr-defined]
        rows = store.labelled_between(LOGGED_AT, LOGGED_AT + timedelta(seconds=1))
        assert store.count_pending() == 0, "reading it confirmed it: no longer pending"
    assert list(rows["prediction_id"]) == [early], f"the monitor's join labels it: {rows}"


def test_an_outcome_for_an_id_long_past_the_expiry_is_refused_at_once(client: TestClient) -> None:
    # Given a well-formed id issued two days ago, whose prediction is not logged
    stale = _issued_ago(timedelta(days=2))

    # When an outcome is reported for it, and read
    posted = client.post("/outcomes", json=_body(stale))
    read = client.get(f"/outcomes/{stale}")

    # Then it is refused as expired (no prediction can come for it any more), nothing stored
    assert posted.status_code == 404, f"an expired id is not recorded: {posted.text}"
    assert posted.json()["detail"].startswith("expired:"), posted.json()
    assert stale in posted.json()["detail"] and "24 h" in posted.json()["detail"], posted.json()
    assert read.status_code == 404, read.text
    assert "unknown prediction id" in read.json()["detail"], read.json()


def test_a_pending_outcome_whose_prediction_never_comes_is_kept_aside_after_the_expiry(
    client: TestClient, mongodb: ServiceProcess, database: str
) -> None:
    # Given an outcome pending for an id no prediction will ever have, and one whose
    # prediction is logged since (no read or report has confirmed it)
    [never, late] = (PredictionIds().new(1)[0], PredictionIds().new(1)[0])
    for prediction_id in (never, late):
        answer = client.post("/outcomes", json=_body(prediction_id, "no"))
        assert answer.status_code == 202, answer.text
    _log(mongodb.uri, database, 1, ids=[late])  # type: ignore[attr-defined]

    with OutcomeStore(mongodb.uri, database) as store:  # type: ignore[attr-defined]
        # When swept before the expiry / Then the late one is joined, the other one waits
        early = sweep_pending_outcomes(store)
        assert (early.confirmed, early.expired, early.pending) == (1, (), 1), f"{early}"

        # When swept after it (a day and a minute on)
        later = datetime.now(UTC) + timedelta(days=1, minutes=1)
        report = sweep_pending_outcomes(store, now=later)

        # Then it is counted and kept aside with its reason, no longer an outcome
        assert [prediction_id for prediction_id, _ in report.expired] == [never], f"{report}"
        assert (report.confirmed, report.pending) == (0, 0), f"nothing else to do: {report}"
        kept = store.expired.find_one({"_id": never})
        assert kept is not None and kept["reason"].startswith("expired:"), f"kept: {kept}"
        assert kept["subscribed"] is False, "the outcome is kept as reported"
        assert store.get(never) is None and store.get(late) is not None, "only it moved"
    assert client.get(f"/outcomes/{never}").status_code == 404, "expired: no longer an outcome"


def test_a_prediction_without_an_outcome_yet_is_not_found(
    client: TestClient, logged: list[str]
) -> None:
    read = client.get(f"/outcomes/{logged[1]}")
    assert read.status_code == 404, f"no outcome yet should be 404: {read.text}"
    assert "no outcome recorded yet" in read.json()["detail"], read.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prediction_id": "12345", "subscribed": True}, "prediction_id"),
        ({"subscribed": True}, "prediction_id"),
        ({"prediction_id": "{id}", "subscribed": "maybe"}, "subscribed"),
        ({"prediction_id": "{id}"}, "subscribed"),
        ({"prediction_id": "{id}", "subscribed": 1, "reported_at": "2024-05-08"}, "reported_at"),
        ({"prediction_id": "{id}", "subscribed": 1, "reported_at": "yesterday"}, "reported_at"),
        ({"prediction_id": "{id}", "subscribed": 1, "outcome": "yes"}, "outcome"),
    ],
)
def test_a_malformed_outcome_is_refused_naming_the_field(
    client: TestClient, logged: list[str], body: dict[str, Any], field: str
) -> None:
    # Given a body with one thing wrong
    request = {key: str(value).format(id=logged[0]) for key, value in body.items()}
    request.update({key: value for key, value in body.items() if not isinstance(value, str)})

    # When posted / Then 422 names the field, and nothing is stored
    answer = client.post("/outcomes", json=request)
    assert answer.status_code == 422, f"{request}: {answer.text}"
    fields = [error["loc"][-1] for error in answer.json()["detail"]]
    assert fields == [field], f"the error should name {field}: {answer.json()}"
    assert client.get(f"/outcomes/{logged[0]}").status_code == 404, "nothing was recorded"


def test_a_malformed_id_in_the_path_is_refused_naming_it(client: TestClient) -> None:
    answer = client.get("/outcomes/not-a-prediction-id")
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["path", "prediction_id"], answer.json()


# --- batches -----------------------------------------------------------------------------------


def test_a_batch_says_what_became_of_each_outcome(client: TestClient, logged: list[str]) -> None:
    # Given one outcome recorded already
    client.post("/outcomes", json=_body(logged[0], True))
    early = PredictionIds().new(1)[0]
    stale = _issued_ago(timedelta(days=2))

    # When a batch brings a new one, a repeat, a conflict, one whose prediction is not logged
    # yet, two for one id, an expired id, and a conflict with the pending one
    batch = [
        _body(logged[1], "no"),
        _body(logged[0], "yes"),
        _body(logged[0], "no"),
        _body(early, "yes"),
        _body(logged[2], 1),
        _body(logged[2], 0),
        _body(stale, "yes"),
        _body(early, "no"),
    ]
    answer = client.post("/outcomes/batch", json=batch)

    # Then each is answered in order, and only the new ones are recorded (one pending)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    statuses = [result["status"] for result in body["results"]]
    assert statuses == [
        "recorded",
        "already recorded",
        "conflict",
        "pending",
        "recorded",
        "conflict",
        "expired",
        "conflict",
    ], f"statuses: {body['results']}"
    counts = (body["recorded"], body["already_recorded"], body["pending"], body["rejected"])
    assert counts == (2, 1, 1, 4), f"counts: {body}"
    assert "will be joined" in body["results"][3]["detail"], body["results"][3]
    assert body["results"][6]["detail"].startswith("expired:"), body["results"][6]
    assert client.get(f"/outcomes/{logged[0]}").json()["subscribed"] is True, "no overwrite"
    assert client.get(f"/outcomes/{logged[2]}").json()["subscribed"] is True, "first one wins"
    pending = client.get(f"/outcomes/{early}").json()
    assert (pending["subscribed"], pending["pending"]) == (True, True), f"pending: {pending}"


def test_a_batch_with_one_malformed_outcome_is_refused_whole(
    client: TestClient, logged: list[str]
) -> None:
    answer = client.post("/outcomes/batch", json=[_body(logged[0]), _body(logged[1], "perhaps")])
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"] == ["body", 1, "subscribed"], answer.json()
    assert client.get(f"/outcomes/{logged[0]}").status_code == 404, "nothing was recorded"


@pytest.mark.parametrize("size", [0, MAX_BATCH + 1])
def test_a_batch_is_bounded(client: TestClient, logged: list[str], size: int) -> None:
    answer = client.post("/outcomes/batch", json=[_body(logged[0])] * size)
    assert answer.status_code == 422, f"a batch of {size} should be refused: {answer.text[:300]}"


# --- MongoDB down ------------------------------------------------------------------------------


def test_mongodb_down_answers_503_with_a_message_and_recovers(tmp_path: Path) -> None:
    # Given an API on a MongoDB of its own, with a logged prediction
    port = free_port()
    uri = f"mongodb://127.0.0.1:{port}"
    mongodb = mongodb_server(tmp_path, port)
    with mongodb.running():
        [prediction_id] = _log(uri, "outage", 1)
        headers = _caller(uri, "outage")
        with TestClient(create_app(_settings(uri, "outage")), headers=headers) as client:
            assert client.get(f"/outcomes/{prediction_id}").status_code == 404, "up: none yet"

            # When MongoDB stops
            mongodb.stop()
            posted = client.post("/outcomes", json=_body(prediction_id))
            batch = client.post("/outcomes/batch", json=[_body(prediction_id)])
            read = client.get(f"/outcomes/{prediction_id}")
            health = client.get("/health")

            # Then outcome routes answer 503 with a clear message, not a stack trace
            for answer in (posted, batch, read):
                assert answer.status_code == 503, f"MongoDB down should be 503: {answer.text}"
                assert answer.json() == {
                    "detail": "MongoDB is unreachable: nothing was read or recorded; "
                    "try again later"
                }, answer.text
            # And the API itself stays up
            assert health.status_code == 200, "the API is alive while MongoDB is down"

            # And once MongoDB is back, the same request succeeds
            mongodb.start()
            retried = client.post("/outcomes", json=_body(prediction_id))
            assert retried.status_code == 201, f"the API should recover by itself: {retried.text}"


# --- batch files: the job and the CLI ----------------------------------------------------------


def _write_batch(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Write rows as CSV (header on line 1), a JSON array (one element a line, from line 2)
    or JSON Lines (from line 1), as the file's suffix says."""
    items = [json.dumps({"prediction_id": id_, "subscribed": label}) for id_, label in rows]
    if path.suffix == ".csv":
        lines = ["prediction_id,subscribed", *[f"{id_},{label}" for id_, label in rows]]
    elif path.suffix == ".json":
        lines = ["[", *[f"{item}," for item in items[:-1]], items[-1], "]"]
    else:
        lines = items
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(("suffix", "first_line"), [(".csv", 2), (".json", 2), (".jsonl", 1)])
def test_a_file_import_reports_accepted_repeated_and_rejected_rows_by_line(
    mongodb: ServiceProcess,
    database: str,
    logged: list[str],
    tmp_path: Path,
    suffix: str,
    first_line: int,
) -> None:
    with OutcomeStore(mongodb.uri, database) as store:  # type: ignore[attr-defined]
        # Given an outcome recorded, and a file with a new outcome, a repeat, another new one,
        # a conflict, an id whose prediction is not logged yet, a malformed row, an expired
        # id and a conflict with the pending one, in that order
        store.record([Outcome(prediction_id=logged[0], subscribed=True)])
        early = PredictionIds().new(1)[0]
        rows = [
            (logged[1], "yes"),
            (logged[0], "yes"),
            (logged[2], "no"),
            (logged[0], "no"),
            (early, "no"),
            ("0000-not-an-id", "maybe"),
            (_issued_ago(timedelta(days=3)), "yes"),
            (early, "yes"),
        ]
        path = _write_batch(tmp_path / f"calls-monday{suffix}", rows)

        # When imported
        report = import_outcomes(store, path)

        # Then the report counts the rows, and names each rejected one by line, with the reason
        counts = (report.rows, report.accepted, report.already_recorded)
        assert counts == (8, 2, 1), f"rows, accepted, already recorded: {report}"
        reasons = {row.line - first_line: row.reason for row in report.rejected}
        assert sorted(reasons) == [3, 5, 6, 7], f"rejected rows: {report.rejected}"
        assert reasons[3].startswith("conflict"), reasons[3]
        assert reasons[5].startswith("malformed: prediction_id"), reasons[5]
        assert reasons[6].startswith("expired:"), reasons[6]
        assert reasons[7].startswith("conflict") and "pending" in reasons[7], reasons[7]
        # And the pending one is reported as such, by line
        pending = [(row.line - first_line, row.prediction_id) for row in report.pending]
        assert pending == [(4, early)], f"pending rows: {report.pending}"
        assert "will be joined" in report.pending[0].detail, report.pending[0]
        # And only the new outcomes were stored, the first one untouched
        stored = store.get_many([*logged, early])
        labels = {prediction_id: outcome.subscribed for prediction_id, outcome in stored.items()}
        assert labels == {logged[0]: True, logged[1]: True, logged[2]: False, early: False}, labels
        assert stored[early].pending, "stored as pending"
        assert stored[logged[1]].source == path.name, "the file's name is the default source"


def test_the_cli_imports_a_file_and_exits_1_when_a_row_is_rejected(
    mongodb: ServiceProcess, database: str, logged: list[str], tmp_path: Path
) -> None:
    runner = CliRunner()
    env = _env(mongodb.uri, database, tmp_path)  # type: ignore[attr-defined]
    early = PredictionIds().new(1)[0]
    good = _write_batch(tmp_path / "good.csv", [(logged[0], "yes"), (logged[1], "no")])
    bad = _write_batch(tmp_path / "bad.json", [(logged[2], "yes"), (logged[3], "perhaps")])
    waiting = _write_batch(tmp_path / "waiting.csv", [(early, "yes")])

    # When a clean file is imported, twice, then a file with a malformed row, then one whose
    # prediction is not logged yet
    first = runner.invoke(cli_app, ["outcomes", "import", str(good)], env=env)
    again = runner.invoke(cli_app, ["outcomes", "import", str(good)], env=env)
    rejected = runner.invoke(cli_app, ["outcomes", "import", str(bad)], env=env)
    pending = runner.invoke(cli_app, ["outcomes", "import", str(waiting)], env=env)

    # Then the clean file succeeds both times, the second recording nothing new
    assert first.exit_code == 0, f"a clean import should succeed: {first.output}"
    said = _text(first.output)
    assert "2 recorded, 0 already recorded, 0 pending, 0 rejected" in said, first.output
    assert again.exit_code == 0, f"importing again is harmless: {again.output}"
    assert "0 recorded, 2 already recorded" in _text(again.output), again.output
    # And a rejected row makes it exit 1, listing the row
    assert rejected.exit_code == 1, f"a rejected row should fail the command: {rejected.output}"
    said = _text(rejected.output)
    assert "1 recorded, 0 already recorded, 0 pending, 1 rejected" in said, rejected.output
    assert "Rejected rows" in said and "perhaps" in said, rejected.output
    # And a pending row is no failure, and is listed
    assert pending.exit_code == 0, f"a pending row is accepted: {pending.output}"
    said = _text(pending.output)
    assert "0 recorded, 0 already recorded, 1 pending, 0 rejected" in said, pending.output
    assert "Pending rows" in said and early in said, pending.output


def test_the_cli_sweep_joins_the_logged_and_keeps_the_expired_aside(
    mongodb: ServiceProcess, database: str, logged: list[str], tmp_path: Path
) -> None:
    # Given outcomes pending: one whose prediction is logged since, one issued two days ago
    # (stored pending then, as the API would have, and never logged)
    uri = mongodb.uri  # type: ignore[attr-defined]
    stale = _issued_ago(timedelta(days=2))
    with OutcomeStore(uri, database) as store:
        outcomes = [Outcome(prediction_id=each, subscribed=True) for each in (logged[0], stale)]
        store.record(outcomes, pending={logged[0], stale})

    # When swept from the command line
    result = CliRunner().invoke(cli_app, ["outcomes", "sweep"], env=_env(uri, database, tmp_path))

    # Then it says what it did, and did it
    assert result.exit_code == 0, result.output
    said = _text(result.output)
    assert "1 joined their prediction, 1 expired" in said and "0 still pending" in said, said
    assert stale in said and "more than 24 h ago" in said, f"the reason is shown: {said}"
    with OutcomeStore(uri, database) as store:
        assert store.count_pending() == 0, "nothing left pending"
        assert store.expired.count_documents({"_id": stale}) == 1, "the expired one kept aside"


def test_the_cli_refuses_an_unreadable_file_recording_nothing(
    mongodb: ServiceProcess, database: str, tmp_path: Path
) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text("id;label\nx;1\n")
    env = _env(mongodb.uri, database, tmp_path)  # type: ignore[attr-defined]
    result = CliRunner().invoke(cli_app, ["outcomes", "import", str(path)], env=env)
    assert result.exit_code == 1, f"an unreadable file should fail: {result.output}"
    said = _text(result.output)
    assert "cannot be read" in said and "Nothing was recorded" in said, result.output


def _text(output: str) -> str:
    """The CLI's words with rich's line wrapping undone: wraps depend on the terminal's width."""
    return " ".join(output.split())


# --- the service -------------------------------------------------------------------------------


def test_the_api_service_records_an_outcome_over_http(
    mongodb: ServiceProcess, database: str, logged: list[str], tmp_path: Path
) -> None:
    # Given the API started as a service (uvicorn) on a free port
    port = free_port()
    env = _env(mongodb.uri, database, tmp_path)  # type: ignore[attr-defined]
    service = outcomes_api(tmp_path, port, env=env)
    headers = _caller(mongodb.uri, database)  # type: ignore[attr-defined]
    with (
        service.running(),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as http,
    ):
        # When an outcome is posted over HTTP
        posted = http.post("/outcomes", json=_body(logged[0], "no", source="agent 7"))
        read = http.get(f"/outcomes/{logged[0]}")

    # Then it is recorded in MongoDB and read back
    assert posted.status_code == 201, f"{posted.text}\n{service.log_tail()}"
    assert read.status_code == 200, read.text
    assert (read.json()["subscribed"], read.json()["source"]) == (False, "agent 7"), read.json()
    with OutcomeStore(mongodb.uri, database) as store:  # type: ignore[attr-defined]
        stored = store.get(logged[0])
    assert stored is not None and stored.subscribed is False, f"not in MongoDB: {stored}"


def test_the_replay_reports_pending_outcomes_and_names_only_the_rejected_ones(
    mongodb: ServiceProcess, database: str, logged: list[str], tmp_path: Path
) -> None:
    # Given the API as a service, and outcomes for a logged prediction and for one not yet
    # logged (the replay reports right after scoring, the shipper may still defer)
    port = free_port()
    env = _env(mongodb.uri, database, tmp_path)  # type: ignore[attr-defined]
    key = _caller(mongodb.uri, database)[API_KEY_HEADER]  # type: ignore[attr-defined]
    early = PredictionIds().new(1)[0]
    stale = _issued_ago(timedelta(days=2))
    with outcomes_api(tmp_path, port, env=env).running():
        api = f"http://127.0.0.1:{port}"

        # When the replay reports them / Then none is a failure
        report_outcomes(api, [logged[0], early], [True, False], key)

        # When it reports a batch with an expired id and a conflict among accepted ones
        with pytest.raises(RuntimeError) as failed:
            report_outcomes(
                api, [logged[1], stale, early, logged[0]], [True, True, True, True], key
            )

    # Then the error counts and names the rejected ones only
    message = str(failed.value)
    assert message.startswith("2 of 4 outcomes rejected"), message
    assert stale in message and "expired" in message, f"the expired one is named: {message}"
    assert f"'prediction_id': '{early}'" in message, f"the conflict is named: {message}"
    assert logged[0] not in message and logged[1] not in message, f"only rejected: {message}"
