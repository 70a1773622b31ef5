"""The demo's steps after training: score a sample, follow it to MongoDB, report outcomes.

`telescore demo` calls these in order and prints what they return: score the dataset's most
recent prospects through MLServer, wait until the prediction log holds them, report their
outcomes through the web app's outcomes API, and give the demo user a password for the web
app. The loop itself it shows with `jobs.simulate`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import pandas as pd

from telescore.core.access import API_KEY_HEADER
from telescore.core.schema import FEATURES
from telescore.io.access_store import AccessStore
from telescore.io.context import Context
from telescore.io.prediction_store import PredictionStore
from telescore.io.serving_client import Scores, ServingClient
from telescore.jobs import access
from telescore.services.processes import wait_until

DEMO_USER: Final = "demo"
"""The web app user the demo logs in as (role ops)."""
SAMPLE_ROWS: Final = 5
LOGGED_TIMEOUT: Final = 45.0
"""Seconds the sample may take to reach MongoDB: it is journaled before the answer and shipped
out of process, within 30 s on a busy machine."""


class PredictionsNotLoggedError(TimeoutError):
    """The prediction log did not hold every scored prediction by the deadline."""


@dataclass(frozen=True)
class ScoredSample:
    """Prospects of the dataset scored by MLServer, with what they really answered."""

    records: list[dict[str, Any]]
    """The prospects' features, as sent."""
    scores: Scores
    subscribed: list[bool]
    """The dataset's label of each prospect: the outcome the demo reports."""


@dataclass(frozen=True)
class Login:
    """A web app user and the password just given to them."""

    user: str
    password: str


def score_sample(serving: ServingClient, dataset: Path, rows: int = SAMPLE_ROWS) -> ScoredSample:
    """Score the dataset's `rows` most recent prospects through MLServer."""
    frame = pd.read_csv(dataset, sep=";").tail(rows)
    records = [
        {str(name): value for name, value in row.items()}
        for row in frame.loc[:, list(FEATURES)].to_dict(orient="records")
    ]
    scores = serving.infer(records, request_id="demo")
    return ScoredSample(records, scores, [label == "yes" for label in frame["y"]])


def wait_until_logged(
    store: PredictionStore, prediction_ids: Sequence[str], timeout: float = LOGGED_TIMEOUT
) -> int:
    """Wait until MongoDB holds every prediction; raise PredictionsNotLoggedError at `timeout`.

    Returns how many are logged (all of them).
    """
    query = {"_id": {"$in": list(prediction_ids)}}
    expected = len(set(prediction_ids))
    try:
        wait_until(
            lambda: store.count(query) >= expected,
            timeout,
            what="the sample's predictions in MongoDB",
            interval=0.2,
        )
    except TimeoutError:
        raise PredictionsNotLoggedError(
            f"MongoDB holds {store.count(query)} of the {expected} predictions scored "
            f"{timeout:g} s ago: the prediction log is not shipping (`telescore serve status` "
            "shows its journal and whether MongoDB is up)"
        ) from None
    return expected


def report_outcomes(ctx: Context, app: httpx.Client, sample: ScoredSample) -> int:
    """Report the sample's outcomes through the app's outcomes API, with a new integration key.

    `app` is a client of the web app (its base URL). Returns how many outcomes it recorded.
    """
    key = access.create_api_key(ctx.store(AccessStore), "demo", "integration").key
    batch = [
        {"prediction_id": prediction_id, "subscribed": subscribed, "source": "demo"}
        for prediction_id, subscribed in zip(
            sample.scores.prediction_ids, sample.subscribed, strict=True
        )
    ]
    answer = app.post("/outcomes/batch", json=batch, headers={API_KEY_HEADER: key})
    answer.raise_for_status()
    return int(answer.json()["recorded"])


def give_demo_login(ctx: Context) -> Login:
    """Give the demo user (role ops, created if absent) a fresh password."""
    store = ctx.store(AccessStore)
    password = secrets.token_urlsafe(12)
    if not access.set_password(store, DEMO_USER, password):
        access.add_user(store, DEMO_USER, password, "ops")
    return Login(DEMO_USER, password)
