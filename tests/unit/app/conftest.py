"""The app without MLServer, MLflow or Prefect: its parts handed in by `dependency_overrides`.

The app is built by `create_app` and its lifespan is not run. Its parts are built as the
lifespan builds them (`build_services`), on the session's nx-27017 (the one service these tests
start, a database per test) and on a scoring service whose MLServer is `FakeMLServer`; every
route dependency is overridden with them. What the routes decide (keys and roles, refused
requests, the list's order and pages, calls and their outcomes) is checked here in seconds;
the same paths on a real MLServer are in tests/integration/app.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from telescore.app import deps
from telescore.app.main import create_app
from telescore.app.services import Services, build_services
from telescore.core.cold_start import ChampionRecord
from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import ServedModel, prediction_records
from telescore.core.prospects import PROSPECT_FIELDS
from telescore.io.access_store import AccessStore
from telescore.io.context import Context
from telescore.io.datasets import DATASET_FILE
from telescore.io.prediction_store import PredictionStore
from telescore.io.prospect_store import ProspectStore
from telescore.io.registry import Registry, RegistryError
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import OUTPUT_NAME, ServingClient
from telescore.jobs.access import add_user, create_api_key
from telescore.jobs.availability import UnservedReason
from telescore.jobs.campaign import seed_prospects
from telescore.jobs.model_repository import CHAMPION_MODEL
from telescore.jobs.scoring import ScoringService
from telescore.services.processes import ServiceProcess
from telescore.settings import MongoSettings, ProjectSettings, Settings

DATASET = Path(__file__).resolve().parents[3] / DATASET_FILE
SEEDED_PROSPECTS = 120
PASSWORD = "correct horse battery"
CHAMPION_VERSION = "7"


def fake_score(profile: Mapping[str, Any]) -> float:
    """The stand-in model's score of a prospect, from its profile fields alone."""
    fields = json.dumps({name: profile[name] for name in PROSPECT_FIELDS}, sort_keys=True)
    return int(hashlib.sha256(fields.encode()).hexdigest()[:12], 16) / 16**12


class FakeMLServer:
    """MLServer's V2 REST API stood in (`transport`): only the champion is served.

    Its answers are `fake_score`, each logged at once in the prediction log as MLServer's
    shipper logs it, so a call's outcome finds its prediction. While `failure` is set, every
    request fails with it, as when MLServer is unreachable; while `serves_champion` is False,
    it answers with no model loaded, as before the first champion (or after its removal).
    """

    def __init__(self, log: PredictionStore) -> None:
        self.log = log
        """The prediction log it writes to."""
        self.scored_rows = 0
        self.failure: httpx.TransportError | None = None
        self.serves_champion = True
        self.transport = httpx.MockTransport(self._answer)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if self.failure is not None:
            raise self.failure
        if request.url.path.startswith("/v2/health/"):
            return httpx.Response(200)
        model = request.url.path.split("/")[3]
        if model != CHAMPION_MODEL or not self.serves_champion:
            return httpx.Response(404, json={"error": f"model {model} not found"})
        if request.url.path.endswith("/infer"):
            return httpx.Response(200, json=self._infer(model, json.loads(request.content)))
        if request.url.path.endswith("/ready"):
            return httpx.Response(200)
        return httpx.Response(200, json={"name": model, "versions": [CHAMPION_VERSION]})

    def _infer(self, model: str, body: Mapping[str, Any]) -> dict[str, Any]:
        columns = {each["name"]: each["data"] for each in body["inputs"]}
        values = zip(*columns.values(), strict=True)
        rows = [dict(zip(columns, row, strict=True)) for row in values]
        ids = PredictionIds().new(len(rows))
        scores = [fake_score(row) for row in rows]
        route = body["parameters"].get("route", "champion")
        self.log.insert(
            prediction_records(
                prediction_ids=ids,
                request_id=body.get("id", ""),
                model=ServedModel(model, CHAMPION_VERSION, route),
                rows=rows,
                scores=scores,
                latency_ms=1.0,
                out_of_range=[[]] * len(rows),
                timestamp=datetime.now(UTC),
            )
        )
        self.scored_rows += len(rows)
        parameters = {"prediction_ids": json.dumps(ids), "model_version": CHAMPION_VERSION}
        return {
            "id": body.get("id", ""),
            "model_name": model,
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP64", "data": scores}],
            "parameters": parameters | {"route": route},
        }


@dataclass
class FakeRegistry:
    """What the registry says about the champion, stood in: why MLServer would serve none."""

    record: ChampionRecord | None = field(
        default_factory=lambda: ChampionRecord(CHAMPION_VERSION, versions_registered=True)
    )
    """None: the registry does not answer."""

    def read(self) -> ChampionRecord:
        if self.record is None:
            raise RegistryError("MLflow does not answer (stood in)")
        return self.record


@dataclass(frozen=True)
class FastApp:
    """The app under test, its parts, the stand-in scoring, and credentials of both roles."""

    client: TestClient
    services: Services
    mlserver: FakeMLServer
    registry: FakeRegistry
    caller_key: str
    ops_key: str
    caller_user: str


def part_overrides(services: Services) -> dict[Callable[..., Any], Callable[[], Any]]:
    """Map the dependency of every part (`deps.get_<part>`) to the given part."""
    return {
        getattr(deps, f"get_{part.name}"): _returning(getattr(services, part.name))
        for part in fields(services)
    }


def _returning(part: object) -> Callable[[], object]:
    def get() -> object:
        return part

    return get


def form_token(html: str) -> str:
    """Return the CSRF token a page's form carries."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "every form should carry a CSRF token"
    return match.group(1)


def log_in(client: TestClient, user: str) -> None:
    """Log a user in through the login form (the client keeps the session cookie)."""
    form = client.get("/login")
    answer = client.post(
        "/login",
        data={"username": user, "password": PASSWORD, "csrf_token": form_token(form.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie, f"session cookie flags: {cookie}"


def _no_registry() -> Registry:
    raise RuntimeError("no MLflow in the fast lane")


@pytest.fixture
def fast_app(mongodb: ServiceProcess, tmp_path: Path) -> Iterator[FastApp]:
    """The app on a fresh database with SEEDED_PROSPECTS prospects, scored by `FakeMLServer`."""
    settings = Settings(
        project=ProjectSettings(state_dir=tmp_path),
        mongodb=MongoSettings(
            uri=mongodb.uri,  # type: ignore[attr-defined]
            database=f"fast_{uuid.uuid4().hex[:12]}",
        ),
    )
    with Context(settings) as ctx:
        seed_prospects(ctx.store(ProspectStore), DATASET, SEEDED_PROSPECTS)
        access = ctx.store(AccessStore)
        suffix = uuid.uuid4().hex[:6]
        add_user(access, f"caller-{suffix}", PASSWORD, "caller")
        mlserver = FakeMLServer(ctx.store(PredictionStore))
        serving = ServingClient("http://mlserver.invalid", transport=mlserver.transport)
        registry = FakeRegistry()
        # Why no model serves, read from the stand-in registry each time it is asked.
        reason = UnservedReason(registry.read, seconds=0.0)
        with (
            serving,
            ScoringService(serving, ctx.store(ReleaseStore), unserved_reason=reason) as scoring,
        ):
            # No MLflow to load models from: the rows get no reasons.
            services = build_services(ctx, scoring, serving, registry=_no_registry)
            app: FastAPI = create_app(settings)
            app.dependency_overrides.update(part_overrides(services))
            # Not entered: the lifespan, and the services it would open, do not run.
            yield FastApp(
                client=TestClient(app),
                services=services,
                mlserver=mlserver,
                registry=registry,
                caller_key=create_api_key(access, "tests", "caller").key,
                ops_key=create_api_key(access, "tests", "ops").key,
                caller_user=f"caller-{suffix}",
            )
