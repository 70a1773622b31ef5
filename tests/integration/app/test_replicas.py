"""Several app replicas on one MongoDB and MLServer: one call list, scored once per key."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.integration.app.conftest import Keys, app_settings
from tests.integration.serving_fixtures import ServedMLServer

from telescore.app.main import create_app
from telescore.core.predictions import FEATURES
from telescore.core.prospects import MAX_PAGE_SIZE
from telescore.io.prediction_store import PredictionStore
from telescore.io.prospect_store import ProspectStore
from telescore.io.serving_client import read_metrics
from telescore.jobs.indicators import read_indicators, set_indicators
from telescore.services.processes import wait_until

pytestmark = pytest.mark.integration

WAIT = 90.0  # seconds on a state before calling it broken: a busy machine is slow, not wrong
Listed = dict[str, tuple[float, str]]
"""Prospect id → (score, prediction id) as a replica shows it."""


@pytest.fixture
def new_key(mlserver: ServedMLServer, seeded: int) -> Iterator[float]:
    """A new cache key: indicators with a euribor3m of this test's own, put back afterwards.

    Every prediction scored under the key carries that value in its features: the prediction
    log tells how often the campaign was scored for it.
    """
    marker = round(1.0 + uuid.uuid4().int % 1_000_000 / 1_000_000 * 3, 6)
    with ProspectStore(mlserver.mongodb_uri, mlserver.database) as store:
        before = read_indicators(store)
        assert before is not None, "the seed should enter indicators"
        changed = before.indicators.model_copy(update={"euribor3m": marker})
        set_indicators(store, changed, before.effective_from, "tests")
        yield marker
        set_indicators(store, before.indicators, before.effective_from, "tests")


def _replica(mlserver: ServedMLServer, mlflow_uri: str, state_dir: Path) -> TestClient:
    state_dir.mkdir()
    return TestClient(create_app(app_settings(mlserver, mlflow_uri, state_dir)))


def _whole_list(client: TestClient, key: str) -> Listed:
    listed: Listed = {}
    page = 1
    while True:
        response = client.get(
            "/prospects",
            params={"page_size": MAX_PAGE_SIZE, "page": page},
            headers={"X-API-Key": key},
        )
        assert response.status_code == 200, response.text
        rows = response.json()["prospects"]
        listed.update({row["prospect_id"]: (row["score"], row["prediction_id"]) for row in rows})
        if len(rows) < MAX_PAGE_SIZE:
            return listed
        page += 1


def _scored_for_key(mlserver: ServedMLServer, marker: float, listed: Listed) -> int:
    """Return how many predictions were logged under the key, once every one has shipped."""
    ids = [prediction_id for _, prediction_id in listed.values()]
    with PredictionStore(mlserver.mongodb_uri, mlserver.database) as store:
        wait_until(
            lambda: store.count({"_id": {"$in": ids}}) == len(ids), WAIT, what="the predictions"
        )
        # Nothing left in the journal: a second scoring's rows would be in MongoDB by now.
        wait_until(
            lambda: (
                read_metrics(mlserver.metrics_url, "telescore_prediction_log_").get("spooled") == 0
            ),
            WAIT,
            what="the prediction log shipped",
        )
        return store.count({f"{FEATURES}.euribor3m": marker})


def test_two_replicas_show_one_list_scored_once(
    mlserver: ServedMLServer,
    mlflow_tracking_uri: str,
    tmp_path: Path,
    keys: Keys,
    seeded: int,
    new_key: float,
) -> None:
    # given two app replicas on the same MongoDB and MLServer
    with (
        _replica(mlserver, mlflow_tracking_uri, tmp_path / "a") as first,
        _replica(mlserver, mlflow_tracking_uri, tmp_path / "b") as second,
        ThreadPoolExecutor(2) as pool,
    ):
        # when both are asked for the call list of a new key at once
        views = [pool.submit(_whole_list, client, keys.caller) for client in (first, second)]
        lists = [view.result(300) for view in views]
    # then both show every prospect, with the same scores and prediction ids
    assert len(lists[0]) == seeded, "every seeded prospect should be on the list"
    assert lists[0] == lists[1], "both replicas should show the same scores and prediction ids"
    # and the campaign was scored once for the key: one logged prediction per prospect
    scored = _scored_for_key(mlserver, new_key, lists[0])
    assert scored == seeded, f"{scored} predictions logged for {seeded} prospects: scored twice?"


def test_a_replica_started_later_reuses_the_stored_list(
    mlserver: ServedMLServer,
    mlflow_tracking_uri: str,
    tmp_path: Path,
    keys: Keys,
    seeded: int,
    new_key: float,
) -> None:
    # given a replica that showed the list of a new key, and has stopped
    with _replica(mlserver, mlflow_tracking_uri, tmp_path / "a") as first:
        shown = _whole_list(first, keys.caller)
    # when a replica started afterwards shows the list
    with _replica(mlserver, mlflow_tracking_uri, tmp_path / "b") as later:
        again = _whole_list(later, keys.caller)
    # then it shows the stored list, and scored nothing itself
    assert again == shown, "the later replica should show the stored scores and prediction ids"
    scored = _scored_for_key(mlserver, new_key, shown)
    assert scored == seeded, f"{scored} predictions logged for {seeded} prospects: rescored?"
