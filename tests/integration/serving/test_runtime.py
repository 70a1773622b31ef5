"""TelescoreRuntime in-process (no MLServer): loads an alias, scores, refuses, logs nothing."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from mlserver.settings import ModelParameters, ModelSettings
from mlserver.types import InferenceRequest

from telescore.io.serving_client import inference_request
from telescore.serving.runtime import InvalidInputError, TelescoreRuntime

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from conftest import RegisteredVersions

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
    assert runtime._prediction_log is None, "logging should be off"
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
