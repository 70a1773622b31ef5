"""The demo's steps on real services: score a sample, follow it into MongoDB, report outcomes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from tests.integration.app.conftest import app_settings
from tests.integration.serving_fixtures import REGISTERED_MODEL, ServedMLServer

from telescore.app.main import create_app
from telescore.io.access_store import AccessStore
from telescore.io.context import Context
from telescore.io.datasets import DATASET_FILE
from telescore.io.outcome_store import OutcomeStore
from telescore.io.prediction_store import PredictionStore
from telescore.jobs import access, demo
from telescore.services.processes import ServiceProcess
from telescore.settings import MongoSettings, Settings, project_root

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(mlserver: ServedMLServer, mlflow_tracking_uri: str, tmp_path: Path) -> Settings:
    """Settings on the session's MLServer and the database its prediction log writes to."""
    return app_settings(mlserver, mlflow_tracking_uri, tmp_path)


@pytest.fixture
def ctx(settings: Settings) -> Iterator[Context]:
    """The context a `telescore demo` opens, on the test's services."""
    with Context(settings) as opened:
        yield opened


@pytest.fixture
def mongodb_ctx(mongodb: ServiceProcess) -> Iterator[Context]:
    """A context on the session's MongoDB alone, with a database of its own."""
    uri, database = mongodb.uri, f"test_{uuid.uuid4().hex[:12]}"  # type: ignore[attr-defined]
    with Context(Settings(mongodb=MongoSettings(uri=uri, database=database))) as opened:
        yield opened


def test_the_sample_is_scored_logged_and_its_outcomes_recorded(
    ctx: Context, settings: Settings
) -> None:
    # given MLServer serving the champion and logging to nx-27017, and the web app on both
    dataset = project_root() / DATASET_FILE
    expected = pd.read_csv(dataset, sep=";").tail(demo.SAMPLE_ROWS)
    # when the demo scores the dataset's most recent prospects and waits for their log
    sample = demo.score_sample(ctx.serving, dataset)
    logged = demo.wait_until_logged(ctx.store(PredictionStore), sample.scores.prediction_ids)
    # then each prospect got its own prediction, by the champion, and MongoDB holds them all
    ids = sample.scores.prediction_ids
    assert len(set(ids)) == demo.SAMPLE_ROWS, "each prospect should get its own prediction id"
    assert sample.scores.model_name == REGISTERED_MODEL, "the champion should score the sample"
    assert [record["age"] for record in sample.records] == list(expected["age"]), (
        "the sample should be the dataset's most recent rows, in order"
    )
    assert sample.subscribed == [label == "yes" for label in expected["y"]], (
        "the outcomes to report should be the dataset's labels"
    )
    assert logged == demo.SAMPLE_ROWS, "every prediction should be logged"
    assert ctx.store(PredictionStore).count({"_id": {"$in": ids}}) == demo.SAMPLE_ROWS, (
        "MongoDB should hold the sample's predictions when the wait returns"
    )
    # when their outcomes are reported through the app's outcomes API
    with TestClient(create_app(settings)) as app:
        recorded = demo.report_outcomes(ctx, app, sample)
    # then the app recorded one outcome per prediction, with the dataset's answer
    assert recorded == demo.SAMPLE_ROWS, "the app should record every outcome of the sample"
    stored = ctx.store(OutcomeStore).get_many(ids)
    assert {each: stored[each].subscribed for each in ids} == dict(
        zip(ids, sample.subscribed, strict=True)
    ), "each prediction's outcome should be the dataset's label"
    assert all(not stored[each].pending for each in ids), "logged predictions join at once"


def test_waiting_for_predictions_that_never_come_fails_with_a_clear_error(
    mongodb_ctx: Context,
) -> None:
    # given prediction ids that nothing scored
    never_scored = [str(uuid.uuid4()), str(uuid.uuid4())]
    started = time.monotonic()
    # when the demo waits for them with a short deadline
    with pytest.raises(demo.PredictionsNotLoggedError) as raised:
        demo.wait_until_logged(mongodb_ctx.store(PredictionStore), never_scored, timeout=0.5)
    # then it gives up at the deadline and says how many arrived and where to look
    waited = time.monotonic() - started
    assert 0.5 <= waited < 5, f"the wait should end at its deadline, not after {waited:.1f} s"
    message = str(raised.value)
    assert "0 of the 2 predictions" in message, f"the error should count them: {message}"
    assert "telescore serve status" in message, f"the error should say where to look: {message}"


def test_the_demo_login_gets_a_fresh_password_each_time(mongodb_ctx: Context) -> None:
    # given a database of its own (there is one demo user per database)
    # when the demo gives its user a login twice
    first = demo.give_demo_login(mongodb_ctx)
    second = demo.give_demo_login(mongodb_ctx)
    # then the user exists with role ops, and only the newest password opens the app
    store = mongodb_ctx.store(AccessStore)
    user = access.authenticate(store, second.user, second.password)
    old = access.authenticate(store, first.user, first.password)
    assert first.user == second.user == demo.DEMO_USER, "the demo logs in as its own user"
    assert user is not None, "the newest password should log the demo user in"
    assert user.principal.role == "ops", "the demo user should be allowed to change releases"
    assert old is None, "the previous password should no longer work"
