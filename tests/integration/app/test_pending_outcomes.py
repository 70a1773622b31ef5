"""Outcomes posted before their prediction is logged, against a real MLServer and its shipper.

MLServer answers once a prediction is in its journal; a shipper process moves it to MongoDB
later (up to `ship_max_defer` on a busy machine, longer while MongoDB is down). Here the
shipper is held back deterministically: the test holds the journal's shipper lock, so the
server's shipper waits on standby (as a second shipper of one journal does) until it is let go.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.integration.serving_fixtures import RegisteredVersions, mlserver_on_free_ports

from telescore.app.main import create_app
from telescore.core.access import API_KEY_HEADER
from telescore.io.access_store import AccessStore
from telescore.io.journal import shipper_lock
from telescore.io.outcome_store import OutcomeStore
from telescore.io.serving_client import ServingClient
from telescore.jobs.access import create_api_key
from telescore.jobs.outcomes import sweep_pending_outcomes
from telescore.services.processes import ServiceProcess, wait_until
from telescore.settings import MongoSettings, Settings

pytestmark = pytest.mark.integration

WAIT = 90.0
"""Seconds to wait on a state before calling it broken (a busy machine is slow, not wrong)."""


@dataclass
class HeldBack:
    """An MLServer whose shipper is held back until `release` is called."""

    rest_url: str
    mongodb_uri: str
    database: str
    held: ExitStack

    def release(self) -> None:
        """Let the server's shipper take the journal's lock, and ship."""
        self.held.close()


@pytest.fixture
def held_back(
    tmp_path: Path,
    mlflow_tracking_uri: str,
    registered_versions: RegisteredVersions,
    mongodb: ServiceProcess,
) -> Iterator[HeldBack]:
    """An MLServer of its own, logging to a database of its own, its shipper held back."""
    database = f"held_{uuid.uuid4().hex[:12]}"
    mongodb_uri: str = mongodb.uri  # type: ignore[attr-defined]
    served = mlserver_on_free_ports(
        tmp_path, mlflow_tracking_uri, mongodb_uri, database, startup_timeout=300
    )
    held = ExitStack()
    # Taken before the server starts: its shipper finds the lock held and waits on standby.
    assert held.enter_context(shipper_lock(served.journal, wait=lambda: False)), "the lock is free"
    with held, served.process.running():
        yield HeldBack(served.rest_url, mongodb_uri, database, held)


def test_an_outcome_posted_right_after_the_answer_is_kept_and_joined_once_shipped(
    held_back: HeldBack, registered_versions: RegisteredVersions
) -> None:
    uri, database = held_back.mongodb_uri, held_back.database
    with AccessStore(uri, database) as access:
        headers = {API_KEY_HEADER: create_api_key(access, "crm", "integration").key}
    settings = Settings(mongodb=MongoSettings(uri=uri, database=database))
    with (
        ServingClient(held_back.rest_url, timeout=60) as serving,
        TestClient(create_app(settings), headers=headers) as api,
        OutcomeStore(uri, database) as store,
    ):
        # Given a prospect scored by the real MLServer, its prediction journaled, not shipped
        scored = serving.infer(registered_versions.features.head(1), request_id="crm-load")
        [prediction_id] = scored.prediction_ids
        scored_at = datetime.now(UTC)

        # When the CRM posts the call's outcome at once
        posted = api.post("/outcomes", json={"prediction_id": prediction_id, "subscribed": True})

        # Then it is accepted as pending, not lost, while the prediction is still unshipped
        assert posted.status_code == 202, f"an outcome before shipping is kept: {posted.text}"
        assert posted.json()["status"] == "pending", posted.json()
        assert not store.known_predictions([prediction_id]), "the shipper was held back"
        assert sweep_pending_outcomes(store).pending == 1, "a sweep meanwhile leaves it waiting"

        # When the shipper is let go, and has shipped the prediction
        held_back.release()
        wait_until(
            lambda: bool(store.known_predictions([prediction_id])),
            WAIT,
            what="the prediction shipped to MongoDB",
        )

        # Then the sweep joins the outcome, and the monitor's join labels the prediction
        swept = sweep_pending_outcomes(store)
        assert (swept.confirmed, swept.expired, swept.pending) == (1, (), 0), f"{swept}"
        start = scored_at.replace(microsecond=0) - timedelta(minutes=1)
        rows = [
            row
            for chunk in store.labelled_predictions(start, start + timedelta(minutes=2))
            for row in chunk
        ]
        labels = {row["_id"]: row["subscribed"] for row in rows}
        assert labels == {prediction_id: True}, f"the shipped prediction carries its label: {rows}"
        read = api.get(f"/outcomes/{prediction_id}")
        assert read.json()["pending"] is False, f"read back as joined: {read.text}"
