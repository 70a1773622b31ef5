"""TelescoreRuntime in-process (no MLServer): loads an alias, scores, refuses, fills a disk."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mlserver.errors import MLServerError
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest, InferenceResponse
from prometheus_client import REGISTRY

from telescore.io.prediction_store import PredictionStore
from telescore.io.serving_client import inference_request
from telescore.services.processes import ServiceProcess, wait_until
from telescore.serving.runtime import InvalidInputError, TelescoreRuntime

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from tests.integration.serving_fixtures import RegisteredVersions

pytestmark = pytest.mark.integration


def _runtime(uri: str, **extra: object) -> TelescoreRuntime:
    settings = ModelSettings(
        name="telemarketing",
        implementation=TelescoreRuntime,
        parameters=ModelParameters(uri=uri, extra={"prediction_log": False, **extra}),
    )
    return TelescoreRuntime(settings)


def test_runtime_serves_with_the_prediction_log_off(
    registered_versions: RegisteredVersions, mlflow_tracking_uri: str
) -> None:
    # given the runtime loaded from the challenger alias, logging disabled
    runtime = _runtime(f"models:/{registered_versions.name}@challenger")
    assert asyncio.run(runtime.load()) is True, "load failed"
    rows = registered_versions.features.head(4)

    # when scoring a request without an id
    request = InferenceRequest.model_validate(inference_request(rows))
    response = asyncio.run(runtime.predict(request))

    # then it answers with the pinned version and route, and a generated id
    assert runtime._journals == {}, "logging should be off"
    assert response.model_version == registered_versions.challenger, "pinned version"
    assert response.parameters.route == "challenger", "route from the alias"
    assert response.id, "an id is generated when absent"
    assert len(response.outputs[0].data) == 4, "one probability per row"
    asyncio.run(runtime.unload())


def test_refusals_are_mlserver_errors_with_status_400(
    registered_versions: RegisteredVersions, mlflow_tracking_uri: str
) -> None:
    runtime = _runtime(f"models:/{registered_versions.name}/{registered_versions.champion}")
    asyncio.run(runtime.load())
    body = inference_request(registered_versions.features.head(1))
    body["inputs"][0]["data"] = ["forty"]

    with pytest.raises(InvalidInputError) as caught:
        asyncio.run(runtime.predict(InferenceRequest.model_validate(body)))

    assert caught.value.status_code == 400, "must map to HTTP 400 / gRPC INVALID_ARGUMENT"
    assert "'age'" in str(caught.value), str(caught.value)
    assert runtime._route == "champion", "a version URI defaults to the champion route"


def test_unknown_runtime_options_fail_the_load(
    registered_versions: RegisteredVersions, mlflow_tracking_uri: str
) -> None:
    runtime = _runtime(f"models:/{registered_versions.name}@champion", max_row=5)

    with pytest.raises(ValueError, match="max_row"):
        asyncio.run(runtime.load())


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real file system that fills up."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_refuses_with_503_loses_nothing_answered_and_recovers(
    registered_versions: RegisteredVersions,
    mlflow_tracking_uri: str,
    mongodb: ServiceProcess,
    small_disk: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database = f"disk_full_{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TELESCORE_MONGODB_URI", mongodb.uri)  # type: ignore[attr-defined]
    monkeypatch.setenv("TELESCORE_MONGODB_DATABASE", database)
    monkeypatch.setenv("TELESCORE_ENV_FILE", str(small_disk / "no.env"))
    refused_before = REGISTRY.get_sample_value("telescore_prediction_log_refused_total") or 0.0
    runtime = _runtime(
        f"models:/{registered_versions.name}@champion",
        prediction_log=True,
        journal_dir=str(small_disk / "journal"),
        journal_segment_bytes=8192,
        ship_max_defer=0,  # the shipper frees the space: it must not wait for an idle machine
    )
    body = inference_request(registered_versions.features.head(1))
    answered: list[str] = []

    async def predict() -> InferenceResponse:
        response = await runtime.predict(InferenceRequest.model_validate(body))
        assert response.parameters is not None
        answered.extend(json.loads(response.parameters.prediction_ids))
        return response

    async def scenario() -> MLServerError:
        await runtime.load()
        try:
            # given a journal on a disk that fills up: requests are answered until it is full
            while True:
                try:
                    await predict()
                except MLServerError as error:
                    refusal = error
                    break
                assert len(answered) < 10_000, "64 KiB should have filled long before"
            # when the shipper has shipped and deleted what filled it, requests succeed again
            deadline = time.monotonic() + 60
            while True:
                try:
                    await predict()
                    break
                except MLServerError:
                    assert time.monotonic() < deadline, "the journal never got space back"
                    await asyncio.sleep(0.1)
        finally:
            await runtime.unload()
        return refusal

    refusal = asyncio.run(scenario())

    # then the full disk was answered 503, saying the prediction was not answered
    assert refusal.status_code == 503, refusal
    assert "not answered" in str(refusal), str(refusal)
    refused = REGISTRY.get_sample_value("telescore_prediction_log_refused_total") or 0.0
    assert refused > refused_before, "the refused counter shows the full disk"
    # and every prediction that was answered is in MongoDB
    with PredictionStore(mongodb.uri, database) as store:  # type: ignore[attr-defined]
        wait_until(
            lambda: store.count({"_id": {"$in": answered}}) == len(answered),
            60,
            what="every answered prediction stored",
        )


def test_an_offset_shifts_the_scores_of_its_own_version_only(
    registered_versions: RegisteredVersions, mlflow_tracking_uri: str
) -> None:
    # given the champion's own scores, and an offset of log(3) (odds times 3)
    uri = f"models:/{registered_versions.name}@champion"
    plain = _runtime(uri)
    asyncio.run(plain.load())
    request = inference_request(registered_versions.features.head(5))
    own = asyncio.run(plain.predict(InferenceRequest.model_validate(request)))
    offset = math.log(3.0)

    # when the runtime loads with that offset fitted for the champion's version, or another one
    fitted = _runtime(uri, logit_offset=offset, logit_offset_version=registered_versions.champion)
    stale = _runtime(uri, logit_offset=offset, logit_offset_version=registered_versions.challenger)
    scores = {}
    for name, runtime in (("fitted", fitted), ("stale", stale)):
        asyncio.run(runtime.load())
        response = asyncio.run(runtime.predict(InferenceRequest.model_validate(request)))
        scores[name] = response.outputs[0].data
        asyncio.run(runtime.unload())

    # then its own version's offset shifts the log-odds; another version's is ignored
    expected = [p * 3.0 / (p * 3.0 + 1.0 - p) for p in own.outputs[0].data]
    assert scores["fitted"] == pytest.approx(expected, rel=1e-12), "offset not applied"
    assert scores["stale"] == own.outputs[0].data, "an offset fitted for another version applied"
    asyncio.run(plain.unload())
