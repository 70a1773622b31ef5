"""The outcomes API, its jobs and its CLI, against real nx-27017 servers (no store is mocked).

Settings are the only thing a test chooses: which MongoDB and which database.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.testdata.prospects import PROSPECT
from typer.testing import CliRunner

from telescore.app.main import create_app
from telescore.app.routes.outcomes import MAX_BATCH
from telescore.app.security import API_KEY_HEADER
from telescore.cli import app as cli_app
from telescore.core.outcomes import Outcome
from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import ServedModel, prediction_records
from telescore.io.access_store import AccessStore
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.jobs.access import create_api_key
from telescore.jobs.outcomes import import_outcomes
from telescore.services.embedded import mongodb_server, outcomes_api
from telescore.services.processes import ServiceProcess, free_port
from telescore.settings import MongoSettings, Settings

pytestmark = pytest.mark.integration

LOGGED_AT = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
REPORTED_AT = "2024-05-08T10:00:00.000Z"


def _log(uri: str, database: str, count: int) -> list[str]:
    """Log `count` predictions of one request, as the shipper does; return their ids."""
    ids = PredictionIds().new(count)
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
    """Headers with a new caller API key of this database (the outcome routes need one)."""
    with AccessStore(uri, database) as store:
        return {API_KEY_HEADER: create_api_key(store, "tests", "caller").key}


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


def test_an_unknown_prediction_id_is_not_found(client: TestClient) -> None:
    # Given a well-formed id that no prediction has
    stranger = PredictionIds().new(1)[0]

    # When an outcome is reported for it, and read
    posted = client.post("/outcomes", json=_body(stranger))
    read = client.get(f"/outcomes/{stranger}")

    # Then both answer 404 naming the id, and nothing is stored
    assert posted.status_code == 404, f"unknown prediction ids are not recorded: {posted.text}"
    assert f"unknown prediction id {stranger}" in posted.json()["detail"], posted.json()
    assert read.status_code == 404, read.text
    assert "unknown prediction id" in read.json()["detail"], read.json()


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
    stranger = PredictionIds().new(1)[0]

    # When a batch brings a new one, a repeat, a conflict, an unknown id, and two for one id
    batch = [
        _body(logged[1], "no"),
        _body(logged[0], "yes"),
        _body(logged[0], "no"),
        _body(stranger, "yes"),
        _body(logged[2], 1),
        _body(logged[2], 0),
    ]
    answer = client.post("/outcomes/batch", json=batch)

    # Then each is answered in order, and only the new ones are recorded
    assert answer.status_code == 200, answer.text
    body = answer.json()
    statuses = [result["status"] for result in body["results"]]
    assert statuses == [
        "recorded",
        "already recorded",
        "conflict",
        "unknown prediction id",
        "recorded",
        "conflict",
    ], f"statuses: {body['results']}"
    counts = (body["recorded"], body["already_recorded"], body["rejected"])
    assert counts == (2, 1, 3), f"counts: {body}"
    assert client.get(f"/outcomes/{logged[0]}").json()["subscribed"] is True, "no overwrite"
    assert client.get(f"/outcomes/{logged[2]}").json()["subscribed"] is True, "first one wins"


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
        # a conflict, an unknown prediction id and a malformed row, in that order
        store.record([Outcome(prediction_id=logged[0], subscribed=True)])
        rows = [
            (logged[1], "yes"),
            (logged[0], "yes"),
            (logged[2], "no"),
            (logged[0], "no"),
            (PredictionIds().new(1)[0], "no"),
            ("0000-not-an-id", "maybe"),
        ]
        path = _write_batch(tmp_path / f"calls-monday{suffix}", rows)

        # When imported
        report = import_outcomes(store, path)

        # Then the report counts the rows, and names each rejected one by line, with the reason
        counts = (report.rows, report.accepted, report.already_recorded)
        assert counts == (6, 2, 1), f"rows, accepted, already recorded: {report}"
        reasons = {row.line - first_line: row.reason for row in report.rejected}
        assert sorted(reasons) == [3, 4, 5], f"rejected rows: {report.rejected}"
        assert reasons[3].startswith("conflict"), reasons[3]
        assert reasons[4].startswith("unknown prediction id"), reasons[4]
        assert reasons[5].startswith("malformed: prediction_id"), reasons[5]
        # And only the new outcomes were stored, the first one untouched
        stored = store.get_many(logged)
        labels = {prediction_id: outcome.subscribed for prediction_id, outcome in stored.items()}
        assert labels == {logged[0]: True, logged[1]: True, logged[2]: False}, labels
        assert stored[logged[1]].source == path.name, "the file's name is the default source"


def test_the_cli_imports_a_file_and_exits_1_when_a_row_is_rejected(
    mongodb: ServiceProcess, database: str, logged: list[str], tmp_path: Path
) -> None:
    runner = CliRunner()
    env = _env(mongodb.uri, database, tmp_path)  # type: ignore[attr-defined]
    good = _write_batch(tmp_path / "good.csv", [(logged[0], "yes"), (logged[1], "no")])
    bad = _write_batch(tmp_path / "bad.json", [(logged[2], "yes"), (logged[3], "perhaps")])

    # When a clean file is imported, twice, then a file with a malformed row
    first = runner.invoke(cli_app, ["outcomes", "import", str(good)], env=env)
    again = runner.invoke(cli_app, ["outcomes", "import", str(good)], env=env)
    rejected = runner.invoke(cli_app, ["outcomes", "import", str(bad)], env=env)

    # Then the clean file succeeds both times, the second recording nothing new
    assert first.exit_code == 0, f"a clean import should succeed: {first.output}"
    assert "2 recorded, 0 already recorded, 0 rejected" in first.output, first.output
    assert again.exit_code == 0, f"importing again is harmless: {again.output}"
    assert "0 recorded, 2 already recorded" in again.output, again.output
    # And a rejected row makes it exit 1, listing the row
    assert rejected.exit_code == 1, f"a rejected row should fail the command: {rejected.output}"
    assert "1 recorded, 0 already recorded, 1 rejected" in rejected.output, rejected.output
    assert "Rejected rows" in rejected.output and "perhaps" in rejected.output, rejected.output


def test_the_cli_refuses_an_unreadable_file_recording_nothing(
    mongodb: ServiceProcess, database: str, tmp_path: Path
) -> None:
    path = tmp_path / "outcomes.csv"
    path.write_text("id;label\nx;1\n")
    env = _env(mongodb.uri, database, tmp_path)  # type: ignore[attr-defined]
    result = CliRunner().invoke(cli_app, ["outcomes", "import", str(path)], env=env)
    assert result.exit_code == 1, f"an unreadable file should fail: {result.output}"
    assert "cannot be read" in result.output and "Nothing was recorded" in result.output, (
        result.output
    )


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
