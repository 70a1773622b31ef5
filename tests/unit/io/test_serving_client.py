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
    # given two prospects, once as a frame with columns the model does not take, once as dicts
    frame = pd.DataFrame([ROW, ROW]).assign(y="no", duration=100)

    # when each is encoded as a V2 inference request
    from_frame = inference_request(frame, request_id="r1")
    from_dicts = inference_request([ROW, ROW], request_id="r1")

    # then both encode alike: one typed input per feature, a value per row, and the id
    assert from_frame == from_dicts, "a DataFrame and dicts must encode the same"
    assert [each["name"] for each in from_frame["inputs"]] == list(FEATURES), "extra columns sent"
    types = {each["name"]: each["datatype"] for each in from_frame["inputs"]}
    assert (types["age"], types["job"], types["euribor3m"]) == ("INT64", "BYTES", "FP64"), (
        f"wrong V2 datatypes: {types}"
    )
    assert from_frame["inputs"][0]["shape"] == [2], "an input's shape should be the row count"
    assert from_frame["id"] == "r1", "the request id is not sent"


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
    # given a V2 server that scores 0.25 with model 3 and flags the age out of range
    with ServingClient("http://mlserver", transport=httpx.MockTransport(_server)) as client:
        # when a row is scored under a request id
        scored = client.infer([ROW], request_id="abc")

    # then the answer's score, version, id, flags, latency and route are all parsed
    assert scored.scores == [0.25], f"wrong scores: {scored.scores}"
    assert scored.model_version == "3", f"wrong model version: {scored.model_version}"
    assert scored.request_id == "abc", f"the request id is not echoed: {scored.request_id}"
    assert scored.out_of_range == [["age"]], f"out-of-range flags lost: {scored.out_of_range}"
    assert scored.latency_ms == pytest.approx(0.42), "420 microseconds should read as 0.42 ms"
    assert scored.route == "champion", f"wrong route: {scored.route}"


def test_errors_carry_the_status_and_the_server_message() -> None:
    # given a V2 server that refuses an age of 150 with a 400
    with ServingClient("http://mlserver", transport=httpx.MockTransport(_server)) as client:
        # when such a row is scored
        with pytest.raises(ServingError) as caught:
            client.infer([{**ROW, "age": 150}])
        # then the client still answers afterwards
        assert client.served_version() == "3", "the client is unusable after a refused request"

    # and the error carries the status and the server's message
    assert caught.value.status_code == 400, f"wrong status: {caught.value.status_code}"
    assert "'age'" in caught.value.message, f"the server's message is lost: {caught.value}"


def test_ready_is_false_when_nothing_listens() -> None:
    # given a server that refuses every connection
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with ServingClient("http://mlserver", transport=httpx.MockTransport(refuse)) as client:
        # when readiness is asked / then it is False, not an exception
        assert client.ready() is False, "a refused connection should read as not ready"


def test_only_repository_calls_carry_the_control_token() -> None:
    # given a client holding the control plane's token, and a server that notes what it gets
    seen: dict[str, str | None] = {}

    def note(request: httpx.Request) -> httpx.Response:
        seen[request.url.path] = request.headers.get("Authorization")
        if request.url.path.endswith("/infer"):
            return _server(request)
        return httpx.Response(200, json=[] if request.url.path.endswith("/index") else None)

    transport = httpx.MockTransport(note)
    with ServingClient("http://mlserver", transport=transport, control_token="t0ken") as client:
        # when it scores, lists, loads and unloads
        client.infer([ROW])
        client.repository_index()
        client.load_model("telemarketing")
        client.unload_model("telemarketing")

    # then the repository calls carry it as a bearer token, and scoring does not
    assert seen.pop("/v2/models/telemarketing/infer") is None, "scoring must not carry the token"
    assert set(seen.values()) == {"Bearer t0ken"}, f"repository calls without the token: {seen}"
    assert len(seen) == 3, f"index, load and unload expected: {sorted(seen)}"
