"""Attacks on MLServer's control plane: only the control plane's token loads or unloads a model.

Against the session's real MLServer (started by `telescore.serving.server`, as every way to run
starts it): the repository API without the token, a browser page's cross-site "simple" POST,
oversized and compressed bodies, and gRPC's repository service.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import httpx
import pandas as pd
import pytest
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc

from telescore.io.serving_client import ServingClient, inference_request
from telescore.settings import ServingSettings

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from tests.integration.serving_fixtures import RegisteredVersions, ServedMLServer

pytestmark = pytest.mark.integration

MODELS = ("telemarketing", "telemarketing-challenger")
FOREIGN_ORIGIN = "https://attacker.example"
MAX_BODY_BYTES = ServingSettings.model_fields["max_body_bytes"].default
"""The limit the session's MLServer runs with (it is not configured otherwise)."""


@pytest.fixture
def http(mlserver: ServedMLServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mlserver.rest_url, timeout=30.0) as session:
        yield session


@pytest.fixture
def still_served(mlserver: ServedMLServer) -> Iterator[None]:
    """Put back any model an attack managed to unload, so that one failure stays one."""
    yield
    with ServingClient(
        mlserver.rest_url, timeout=120.0, control_token=mlserver.control_token
    ) as serving:
        for model in MODELS:
            if not serving.model_ready(model):
                serving.load_model(model)


@pytest.fixture
def rows(registered_versions: RegisteredVersions) -> pd.DataFrame:
    return registered_versions.features.head(3).reset_index(drop=True)


def _assert_served(http: httpx.Client, rows: pd.DataFrame) -> None:
    for model in MODELS:
        assert http.get(f"/v2/models/{model}/ready").status_code == 200, f"{model} was unloaded"
        scored = http.post(f"/v2/models/{model}/infer", json=inference_request(rows))
        assert scored.status_code == 200, f"{model} no longer scores: {scored.text}"


@pytest.mark.usefixtures("still_served")
@pytest.mark.parametrize("action", ["unload", "load"])
@pytest.mark.parametrize("authorization", [None, "Bearer not-the-token", "not-a-bearer"])
def test_the_repository_api_refuses_a_caller_without_the_token(
    http: httpx.Client, rows: pd.DataFrame, action: str, authorization: str | None
) -> None:
    # given a caller who can reach MLServer but does not hold the control plane's token
    headers = {"Authorization": authorization} if authorization else {}

    # when it asks to unload (or reload) the champion
    answer = http.post(f"/v2/repository/models/telemarketing/{action}", headers=headers)

    # then it is refused as unauthenticated, and both models keep serving
    assert answer.status_code == 401, f"{action} without the token answered {answer.status_code}"
    assert answer.headers.get("www-authenticate") == "Bearer", "401 must name the scheme"
    _assert_served(http, rows)


def test_the_repository_index_needs_the_token_too(
    http: httpx.Client, mlserver: ServedMLServer
) -> None:
    # given no token, when the index is asked for, then it is refused
    answer = http.post("/v2/repository/index", json={})
    assert answer.status_code == 401, f"the index without a token answered {answer.status_code}"

    # and with the control plane's token it lists both models, ready
    with ServingClient(mlserver.rest_url, control_token=mlserver.control_token) as serving:
        states = {model.name: model.state for model in serving.repository_index()}
    assert states == dict.fromkeys(MODELS, "READY"), f"the token must open the index: {states}"


@pytest.mark.usefixtures("still_served")
@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/v2/repository/models/telemarketing/unload", "text/plain", b""),
        ("/v2/repository/models/telemarketing/unload", "application/x-www-form-urlencoded", b"a=1"),
        ("/v2/models/telemarketing/infer", "text/plain", b"{}"),
    ],
)
def test_a_cross_site_simple_post_is_refused(
    http: httpx.Client,
    rows: pd.DataFrame,
    mlserver: ServedMLServer,
    path: str,
    content_type: str,
    body: bytes,
) -> None:
    # given what a page on another site can send without a preflight: a "simple" POST with a
    # foreign Origin; the token cannot help it, but this also holds for a leaked one
    headers = {
        "Origin": FOREIGN_ORIGIN,
        "Content-Type": content_type,
        "Authorization": f"Bearer {mlserver.control_token}",
    }
    if path.endswith("/infer"):
        body = json.dumps(inference_request(rows)).encode()

    # when it reaches MLServer on the operator's machine
    answer = http.post(path, content=body, headers=headers)

    # then MLServer refuses it before doing anything, and both models keep serving
    assert answer.status_code == 403, f"a cross-site POST to {path} answered {answer.status_code}"
    _assert_served(http, rows)


def test_an_oversized_body_is_refused_with_413(http: httpx.Client, rows: pd.DataFrame) -> None:
    # given a body one byte over the limit, its length declared
    body = b" " * (MAX_BODY_BYTES + 1)

    # when it is posted for scoring, then it is refused as too large, not read as JSON
    answer = http.post(
        "/v2/models/telemarketing/infer",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 413, f"an oversized body answered {answer.status_code}"
    _assert_served(http, rows)


def test_an_oversized_streamed_body_is_refused_with_413(
    http: httpx.Client, rows: pd.DataFrame
) -> None:
    # given a chunked body (no length declared) that grows over the limit
    chunk = b" " * 65536
    chunks = MAX_BODY_BYTES // len(chunk) + 1

    def stream() -> Iterator[bytes]:
        for _ in range(chunks):
            yield chunk

    # when it is posted for scoring, then it is refused as too large
    answer = http.post(
        "/v2/models/telemarketing/infer",
        content=stream(),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 413, f"an oversized streamed body answered {answer.status_code}"
    _assert_served(http, rows)


def test_a_small_streamed_body_still_scores(http: httpx.Client, rows: pd.DataFrame) -> None:
    # given a valid request sent chunked (no length declared)
    body = json.dumps(inference_request(rows)).encode()

    def stream() -> Iterator[bytes]:
        yield body[:100]
        yield body[100:]

    # when it is posted, then it is scored as if its length had been declared
    answer = http.post(
        "/v2/models/telemarketing/infer",
        content=stream(),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, f"a chunked request was not scored: {answer.text}"
    assert len(answer.json()["outputs"][0]["data"]) == len(rows), "every row must be scored"


def test_a_compressed_body_is_refused(http: httpx.Client, rows: pd.DataFrame) -> None:
    # given a gzip body (MLServer would inflate it in memory, whatever its inflated size)
    body = gzip.compress(json.dumps(inference_request(rows)).encode())

    # when it is posted, then it is refused as an unsupported encoding
    answer = http.post(
        "/v2/models/telemarketing/infer",
        content=body,
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 415, f"a gzip body answered {answer.status_code}"


def test_a_compressed_body_hidden_behind_a_second_encoding_header_is_refused(
    http: httpx.Client, rows: pd.DataFrame
) -> None:
    # given a gzip body announced by two Content-Encoding headers, `gzip` then `identity`:
    # MLServer inflates the body if any of them says gzip, so a bomb under the size limit
    # would inflate in memory if only the last header were read
    body = gzip.compress(json.dumps(inference_request(rows)).encode())
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
        ("Content-Encoding", "identity"),
    ]

    # when it is posted, then it is refused as an unsupported encoding, not inflated and scored
    answer = http.post("/v2/models/telemarketing/infer", content=body, headers=headers)
    assert answer.status_code == 415, (
        f"a gzip body behind a second Content-Encoding header answered {answer.status_code}"
    )


@pytest.mark.usefixtures("still_served")
def test_grpc_cannot_unload_a_model(
    mlserver: ServedMLServer, http: httpx.Client, rows: pd.DataFrame
) -> None:
    # given a gRPC caller (the REST middleware never sees gRPC calls)
    with grpc.insecure_channel(mlserver.grpc_target) as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)

        # when it asks the repository service to unload the champion, then it is refused
        with pytest.raises(grpc.RpcError) as refused:
            stub.RepositoryModelUnload(
                pb.RepositoryModelUnloadRequest(model_name="telemarketing"), timeout=30
            )
    assert refused.value.code() != grpc.StatusCode.OK, "gRPC must not unload a model"

    # and both models keep serving
    _assert_served(http, rows)
