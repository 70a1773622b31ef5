"""The V2 REST client: request encoding, response parsing, errors (against a mock transport)."""

from __future__ import annotations

import json

import httpx
import pandas as pd
import pytest
from tests.testdata.prospects import PROSPECT

from telescore.core.schema import FEATURES
from telescore.io.serving_client import ServingClient, ServingError, inference_request

ROW = PROSPECT


def test_requests_carry_one_typed_input_per_feature_from_frames_and_dicts() -> None:
    frame = pd.DataFrame([ROW, ROW]).assign(y="no", duration=100)

    from_frame = inference_request(frame, request_id="r1")
    from_dicts = inference_request([ROW, ROW], request_id="r1")

    assert from_frame == from_dicts, "a DataFrame and dicts must encode the same"
    assert [each["name"] for each in from_frame["inputs"]] == list(FEATURES), "extra columns sent"
    types = {each["name"]: each["datatype"] for each in from_frame["inputs"]}
    assert (types["age"], types["job"], types["euribor3m"]) == ("INT64", "BYTES", "FP64")
    assert from_frame["inputs"][0]["shape"] == [2]
    assert from_frame["id"] == "r1"


def _server(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/v2/models/telemarketing/infer":
        body = json.loads(request.content)
        if body["inputs"][0]["data"] == [150]:
            return httpx.Response(400, json={"error": "invalid input 'age': row 0 is 150"})
        return httpx.Response(
            200,
            json={
                "model_name": "telemarketing",
                "model_version": "3",
                "id": body.get("id", "generated"),
                "parameters": {
                    "model_version": "3",
                    "route": "champion",
                    "out_of_range": '[["age"]]',
                    "latency_us": 420,
                },
                "outputs": [
                    {"name": "probability", "datatype": "FP64", "shape": [1], "data": [0.25]}
                ],
            },
        )
    if request.url.path == "/v2/models/telemarketing":
        return httpx.Response(200, json={"name": "telemarketing", "versions": ["3"]})
    return httpx.Response(404, json={"error": "Model x not found"})


def test_infer_returns_scores_version_flags_and_id() -> None:
    with ServingClient("http://mlserver", transport=httpx.MockTransport(_server)) as client:
        scored = client.infer([ROW], request_id="abc")

    assert scored.scores == [0.25]
    assert scored.model_version == "3"
    assert scored.request_id == "abc"
    assert scored.out_of_range == [["age"]]
    assert scored.latency_ms == pytest.approx(0.42)
    assert scored.route == "champion"


def test_errors_carry_the_status_and_the_server_message() -> None:
    with ServingClient("http://mlserver", transport=httpx.MockTransport(_server)) as client:
        with pytest.raises(ServingError) as caught:
            client.infer([{**ROW, "age": 150}])
        assert client.served_version() == "3"

    assert caught.value.status_code == 400
    assert "'age'" in caught.value.message


def test_ready_is_false_when_nothing_listens() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with ServingClient("http://mlserver", transport=httpx.MockTransport(refuse)) as client:
        assert client.ready() is False
