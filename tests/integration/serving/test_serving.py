"""MLServer serves the registered champion and challenger over V2 REST and gRPC."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlserver.grpc import dataplane_pb2 as pb
from mlserver.grpc import dataplane_pb2_grpc

from telescore.core.prediction_ids import is_prediction_id
from telescore.core.schema import CATEGORICAL_VALUES, FEATURES, INTEGER_FEATURES, NUMERIC_BOUNDS
from telescore.io.prediction_store import PredictionStore
from telescore.io.registry import Registry
from telescore.io.serving_client import ServingClient, ServingError, inference_request
from telescore.jobs.model_repository import (
    CHALLENGER_MODEL,
    RECALIBRATED_OFFSET_TAG,
    LogitOffset,
    write_logit_offset,
)
from telescore.jobs.serving import reload_models, sync_served_models
from telescore.services.processes import wait_until

if TYPE_CHECKING:  # fixture types; conftest modules are not importable at run time
    from tests.integration.serving_fixtures import RegisteredVersions, ServedMLServer

pytestmark = pytest.mark.integration

# How long to wait on a state before calling it broken: a busy machine ships late, a broken
# one never does. Waiting longer costs nothing when it is quick.
WAIT = 90.0


@pytest.fixture
def client(mlserver: ServedMLServer) -> Iterator[ServingClient]:
    with ServingClient(mlserver.rest_url, control_token=mlserver.control_token) as serving:
        yield serving


@pytest.fixture
def rows(registered_versions: RegisteredVersions) -> pd.DataFrame:
    return registered_versions.features.head(5).reset_index(drop=True)


@pytest.fixture
def http(mlserver: ServedMLServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=mlserver.rest_url, timeout=10.0) as session:
        yield session


def _infer(
    http: httpx.Client, body: dict[str, Any], model: str = "telemarketing"
) -> httpx.Response:
    return http.post(f"/v2/models/{model}/infer", json=body)


def _input(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(each for each in body["inputs"] if each["name"] == name)


def test_rest_scores_several_rows_with_version_and_echoed_id(
    client: ServingClient, rows: pd.DataFrame, registered_versions: RegisteredVersions
) -> None:
    # given five prospects and a request id
    request_id = f"rest-{uuid.uuid4()}"

    # when scoring them through REST
    scored = client.infer(rows, request_id=request_id)

    # then each gets a probability from the champion version, under the same id
    assert len(scored.scores) == len(rows), "one score per row"
    assert all(0.0 <= score <= 1.0 for score in scored.scores), f"not probabilities: {scored}"
    assert len(set(scored.scores)) > 1, "different prospects should score differently"
    assert scored.model_version == registered_versions.champion, "champion version not reported"
    assert scored.route == "champion", "route not reported"
    assert scored.request_id == request_id, "request id not echoed"
    assert scored.latency_ms > 0, "server-side latency missing"
    # and each row has its own server-given prediction id, sorted as the rows were scored
    ids = scored.prediction_ids
    assert len(set(ids)) == len(rows), f"one distinct prediction id per row: {ids}"
    assert all(is_prediction_id(each) for each in ids), f"not UUIDv7 prediction ids: {ids}"
    assert ids == sorted(ids), "the ids of one request sort in row order"


def test_rest_generates_a_request_id_when_absent(http: httpx.Client, rows: pd.DataFrame) -> None:
    response = _infer(http, inference_request(rows))

    assert response.status_code == 200, response.text
    assert uuid.UUID(response.json()["id"]).version == 4, "generated id is not a uuid4"


def test_scores_match_the_registered_model(
    client: ServingClient, rows: pd.DataFrame, registered_versions: RegisteredVersions
) -> None:
    # given the champion as the registry stores it
    model = mlflow.sklearn.load_model(
        f"models:/{registered_versions.name}/{registered_versions.champion}"
    )

    # when the server scores the same rows
    scored = client.infer(rows)

    # then the fast path gives predict_proba's probabilities
    expected = model.predict_proba(rows)[:, 1]
    np.testing.assert_allclose(scored.scores, expected, rtol=0, atol=1e-9)


def test_rows_outside_the_training_range_are_served_and_flagged(
    client: ServingClient, rows: pd.DataFrame, registered_versions: RegisteredVersions
) -> None:
    # given a row whose campaign count is plausible but above anything seen in training
    seen_max = int(registered_versions.features["campaign"].max())
    unseen = seen_max + 1
    assert unseen <= NUMERIC_BOUNDS["campaign"][1], "the sample leaves no room above its max"
    prospects = rows.head(2).copy()
    prospects.loc[1, "campaign"] = unseen

    # when scoring it
    scored = client.infer(prospects)

    # then it is scored and flagged; the normal row is not
    assert len(scored.scores) == 2, "the out-of-range row must still be scored"
    assert scored.out_of_range[1] == ["campaign"], f"flags: {scored.out_of_range}"
    assert scored.out_of_range[0] == [], f"flags: {scored.out_of_range}"


def test_metadata_reports_the_served_registry_version(
    client: ServingClient, registered_versions: RegisteredVersions
) -> None:
    assert client.served_version() == registered_versions.champion


def test_grpc_scores_with_version_and_echoed_id(
    mlserver: ServedMLServer, rows: pd.DataFrame, registered_versions: RegisteredVersions
) -> None:
    # given a gRPC stub and five prospects
    with grpc.insecure_channel(mlserver.grpc_target) as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)

        # when scoring them over gRPC
        response = stub.ModelInfer(_grpc_request(rows, "grpc-1"), timeout=10)

    # then the scores, version and id come back as over REST
    scores = list(response.outputs[0].contents.fp64_contents)
    assert len(scores) == len(rows), "one score per row"
    assert all(0.0 <= score <= 1.0 for score in scores), f"not probabilities: {scores}"
    assert response.id == "grpc-1", "request id not echoed"
    assert response.model_version == registered_versions.champion, "version not reported"
    assert response.parameters["model_version"].string_param == registered_versions.champion
    assert response.parameters["route"].string_param == "champion"
    assert json.loads(response.parameters["out_of_range"].string_param) == [[]] * len(rows)
    ids = json.loads(response.parameters["prediction_ids"].string_param)
    assert len(set(ids)) == len(rows), f"one prediction id per row over gRPC too: {ids}"
    assert all(is_prediction_id(each) for each in ids), ids


@pytest.mark.parametrize(("request_id", "why"), [("x" * 129, "too long"), ("a\nb", "unprintable")])
def test_grpc_refuses_a_bad_request_id_naming_it(
    mlserver: ServedMLServer, rows: pd.DataFrame, request_id: str, why: str
) -> None:
    with grpc.insecure_channel(mlserver.grpc_target) as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(_grpc_request(rows.head(1), request_id), timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{why}: {caught.value}"
    assert "'id'" in caught.value.details(), f"{why}: {caught.value.details()}"


def test_grpc_refuses_nan_and_infinity_with_invalid_argument(
    mlserver: ServedMLServer, rows: pd.DataFrame
) -> None:
    # JSON cannot carry NaN, gRPC's fp64_contents can: this is where such values arrive.
    with grpc.insecure_channel(mlserver.grpc_target) as channel:
        stub = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel)
        for bad in (float("nan"), float("inf")):
            prospects = rows.head(1).copy()
            prospects["euribor3m"] = bad

            with pytest.raises(grpc.RpcError) as caught:
                stub.ModelInfer(_grpc_request(prospects, "grpc-bad"), timeout=10)

            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
            assert "euribor3m" in caught.value.details(), caught.value.details()


def _grpc_request(rows: pd.DataFrame, request_id: str) -> pb.ModelInferRequest:
    inputs = []
    for name in FEATURES:
        values = rows[name].tolist()
        if name in CATEGORICAL_VALUES:
            datatype = "BYTES"
            contents = pb.InferTensorContents(bytes_contents=[v.encode() for v in values])
        elif name in INTEGER_FEATURES:
            datatype = "INT64"
            contents = pb.InferTensorContents(int64_contents=values)
        else:
            datatype = "FP64"
            contents = pb.InferTensorContents(fp64_contents=values)
        inputs.append(
            pb.ModelInferRequest.InferInputTensor(
                name=name, datatype=datatype, shape=[len(values)], contents=contents
            )
        )
    return pb.ModelInferRequest(model_name="telemarketing", id=request_id, inputs=inputs)


# -- bad input: each case names the field and answers 4xx --------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _drop(name: str) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        body["inputs"] = [each for each in body["inputs"] if each["name"] != name]

    return mutate


def _set(name: str, **fields: Any) -> Mutation:
    def mutate(body: dict[str, Any]) -> None:
        _input(body, name).update(fields)

    return mutate


def _add_unknown(body: dict[str, Any]) -> None:
    body["inputs"].append({"name": "salary", "datatype": "FP64", "shape": [1], "data": [1.0]})


def _empty(body: dict[str, Any]) -> None:
    for each in body["inputs"]:
        each["shape"], each["data"] = [0], []


def _over_limit(body: dict[str, Any]) -> None:
    # The served models refuse more than MAX_ROWS (100) rows: the conftest sets that limit.
    for each in body["inputs"]:
        each["data"] = each["data"] * 101
        each["shape"] = [len(each["data"])]


def _duplicate(body: dict[str, Any]) -> None:
    body["inputs"].append(dict(_input(body, "age")))


BAD_INPUTS: dict[str, tuple[Mutation, str]] = {
    "missing input": (_drop("age"), "age"),
    "unknown input": (_add_unknown, "salary"),
    "duplicate input": (_duplicate, "age"),
    "wrong datatype": (_set("age", datatype="BYTES", data=["35"]), "age"),
    "wrong-typed value": (_set("age", data=["abc"]), "age"),
    "null value": (_set("cons.conf.idx", data=[None]), "cons.conf.idx"),
    "number for a category": (_set("job", datatype="INT64", data=[3]), "job"),
    "non-integer for an integer input": (_set("campaign", datatype="FP64", data=[1.5]), "campaign"),
    "shape disagrees with data": (_set("pdays", shape=[2]), "pdays"),
    "lengths differ between inputs": (_set("job", shape=[2], data=["admin.", "retired"]), "job"),
    "not one value per row": (_set("month", shape=[1, 2], data=["may", "jun"]), "month"),
    "age out of bounds": (_set("age", data=[150]), "age"),
    "negative campaign": (_set("campaign", data=[-1]), "campaign"),
    "unknown category": (_set("job", data=["astronaut"]), "job"),
    "empty batch": (_empty, "inputs"),
    "batch over the limit": (_over_limit, "inputs"),
    "no inputs at all": (lambda body: body.update(inputs=[]), "inputs"),
    "id over 128 characters": (lambda body: body.update(id="x" * 129), "'id'"),
    # Under MLServer's body limit (a larger body is a 413: test_control_plane.py).
    "id of 1 MB": (lambda body: body.update(id="x" * 1_000_000), "'id'"),
    "id with a control character": (lambda body: body.update(id="call\r\n42"), "'id'"),
    "id with non-ASCII characters": (lambda body: body.update(id="appel-été-東京"), "'id'"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_refused_with_4xx_naming_the_field(
    http: httpx.Client, rows: pd.DataFrame, case: str
) -> None:
    # given a valid one-row request spoiled in one way
    mutate, field = BAD_INPUTS[case]
    body = inference_request(rows.head(1), request_id=f"bad-{uuid.uuid4()}")
    mutate(body)

    # when sending it
    response = _infer(http, body)

    # then it is refused as the client's fault, naming the field
    assert 400 <= response.status_code < 500, f"{case}: {response.status_code} {response.text}"
    assert field in response.json()["error"], f"{case}: field not named: {response.text}"

    # and the server keeps serving
    assert _infer(http, inference_request(rows.head(1))).status_code == 200, "server stopped"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "1e999"])
def test_rest_non_finite_numbers_are_refused_with_4xx(
    http: httpx.Client, rows: pd.DataFrame, literal: str
) -> None:
    # JSON has no NaN or infinity: MLServer's parser refuses them (422) before the runtime
    # runs, so over REST the field cannot be named; over gRPC it is (see the gRPC test).
    request = inference_request(rows.head(1))
    _input(request, "euribor3m")["data"] = ["<non-finite>"]
    body = json.dumps(request).replace('"<non-finite>"', literal)
    response = http.post(
        "/v2/models/telemarketing/infer",
        content=body,
        headers={"content-type": "application/json"},
    )

    assert 400 <= response.status_code < 500, f"{literal}: {response.status_code} {response.text}"
    assert _infer(http, inference_request(rows.head(1))).status_code == 200, "server stopped"


def test_mlflow_invocations_endpoint_is_not_exposed(http: httpx.Client, rows: pd.DataFrame) -> None:
    # /invocations would score without validation or logging: it must not exist.
    response = http.post(
        "/invocations", json={"dataframe_records": rows.head(1).to_dict("records")}
    )

    assert response.status_code == 404, response.text


# -- prediction log --------------------------------------------------------------------------


def test_served_predictions_are_logged_and_refused_requests_are_not(
    client: ServingClient, http: httpx.Client, mlserver: ServedMLServer, rows: pd.DataFrame
) -> None:
    # given a refused request followed by a scored one
    refused_id, scored_id = f"refused-{uuid.uuid4()}", f"scored-{uuid.uuid4()}"
    bad = inference_request(rows.head(2), request_id=refused_id)
    _input(bad, "age")["data"] = [35, 150]
    assert _infer(http, bad).status_code == 400, "the bad request must be refused"

    # when the scored one reaches MongoDB
    scored = client.infer(rows.head(3), request_id=scored_id)
    with PredictionStore(mlserver.mongodb_uri, mlserver.database) as store:
        wait_until(
            lambda: store.count({"request_id": scored_id}) == 3,
            WAIT,
            what="prediction records in MongoDB",
        )
        records = store.find({"request_id": scored_id}, sort=[("row", 1)])
        refused = store.count({"request_id": refused_id})

    # then it holds one record per row, under the prediction id answered for that row
    assert [r["_id"] for r in records] == scored.prediction_ids, "records not under answered ids"
    assert [r["score"] for r in records] == pytest.approx(scored.scores), "scores differ"
    assert {r["model_version"] for r in records} == {scored.model_version}, "version differs"
    assert {r["route"] for r in records} == {"champion"}, "route differs"
    assert records[0]["features"]["job"] == rows.loc[0, "job"], "features not logged as sent"
    # The journal is shipped in order: once the later request is in, the earlier would be.
    assert refused == 0, "a refused request was logged"


def test_one_client_id_scored_three_times_gives_three_records(
    client: ServingClient, mlserver: ServedMLServer, rows: pd.DataFrame
) -> None:
    # given one client id, sent twice to the champion and once to the challenger
    request_id = f"reused-{uuid.uuid4()}"
    answers = [
        client.infer(rows.head(1), request_id=request_id),
        client.infer(rows.head(1), request_id=request_id),
        client.infer(rows.head(1), model=CHALLENGER_MODEL, request_id=request_id),
    ]
    answered = {scored.prediction_ids[0]: scored for scored in answers}
    assert len(answered) == 3, "each answer carries its own prediction id"

    # when the predictions reach MongoDB
    with PredictionStore(mlserver.mongodb_uri, mlserver.database) as store:
        wait_until(lambda: store.count({"request_id": request_id}) >= 3, WAIT, what="three records")
        records = store.find({"request_id": request_id})
        # Its own records go: a later test puts a unique index on (request_id, row).
        store.collection.delete_many({"request_id": request_id})

    # then there is one record per answer, each with the model and route that answered it
    assert sorted(r["_id"] for r in records) == sorted(answered), "one record per prediction"
    for record in records:
        scored = answered[record["_id"]]
        assert (record["model_version"], record["route"]) == (
            scored.model_version,
            scored.route,
        ), f"record {record['_id']} does not say which model answered it"
    assert sorted(r["route"] for r in records) == ["challenger", "champion", "champion"]


# -- challenger and reload -------------------------------------------------------------------


def test_challenger_is_served_when_the_alias_exists(
    client: ServingClient, rows: pd.DataFrame, registered_versions: RegisteredVersions
) -> None:
    scored = client.infer(rows, model=CHALLENGER_MODEL)

    assert scored.model_version == registered_versions.challenger, "challenger version"
    assert scored.route == "challenger", "challenger route"
    champion = client.infer(rows)
    assert scored.scores != champion.scores, "challenger should be a different model"


def _registry(tracking_uri: str) -> Registry:
    """The session's registered model, as the serving jobs reach it."""
    return Registry(tracking_uri, "telemarketing", "serving-tests")


@contextlib.contextmanager
def _champion_moved_to(
    version: str, registered: RegisteredVersions, registry: MlflowClient, client: ServingClient
) -> Iterator[None]:
    """Point the champion alias at `version`; afterwards point it back and reload."""
    registry.set_registered_model_alias(registered.name, "champion", version)
    try:
        yield
    finally:
        registry.set_registered_model_alias(registered.name, "champion", registered.champion)
        reload_models(client, ["telemarketing"])


def test_reload_after_moving_the_champion_alias_serves_the_new_version(
    client: ServingClient,
    rows: pd.DataFrame,
    registered_versions: RegisteredVersions,
    mlflow_tracking_uri: str,
) -> None:
    registry = MlflowClient(mlflow_tracking_uri)
    old, new = registered_versions.champion, registered_versions.challenger
    # given the champion alias moved to another version
    with _champion_moved_to(new, registered_versions, registry, client):
        assert client.infer(rows).model_version == old, "served version changed before reload"

        # when reloading the served models
        reloaded = reload_models(client, ["telemarketing"])

        # then the new champion is served
        assert [(r.previous_version, r.version) for r in reloaded] == [(old, new)], reloaded
        assert client.infer(rows).model_version == new, "new champion not served"
    assert client.infer(rows).model_version == old, "champion not restored"


def test_a_reload_that_cannot_load_the_new_version_keeps_serving_the_old_one(
    client: ServingClient,
    rows: pd.DataFrame,
    registered_versions: RegisteredVersions,
    mlflow_tracking_uri: str,
) -> None:
    registry = MlflowClient(mlflow_tracking_uri)
    name, old = registered_versions.name, registered_versions.champion
    mlflow.set_tracking_uri(mlflow_tracking_uri)
    with mlflow.start_run() as run:
        mlflow.log_text("no MLmodel file here", "not-a-model/README.txt")
    broken = registry.create_model_version(
        name, source=f"{run.info.artifact_uri}/not-a-model", run_id=run.info.run_id
    ).version
    try:
        # given the champion alias moved to a version that cannot be loaded
        with _champion_moved_to(broken, registered_versions, registry, client):
            # when reloading, then the reload fails and says which model
            with pytest.raises(ServingError) as caught:
                reload_models(client, ["telemarketing"])
            assert "reloading model telemarketing failed" in str(caught.value), caught.value
            assert f"version {old} keeps serving" in str(caught.value), caught.value

            # and the old version keeps answering
            assert client.infer(rows).model_version == old, "the old champion must keep serving"
    finally:
        registry.delete_model_version(name, broken)
    assert client.infer(rows).model_version == old


def test_sync_follows_the_challenger_alias_going_and_coming_back(
    client: ServingClient,
    rows: pd.DataFrame,
    mlserver: ServedMLServer,
    registered_versions: RegisteredVersions,
    mlflow_tracking_uri: str,
) -> None:
    registry = MlflowClient(mlflow_tracking_uri)
    try:
        # given the challenger alias removed
        registry.delete_registered_model_alias(registered_versions.name, "challenger")

        # when syncing the server with the registry
        sync_served_models(mlserver.repository, client, _registry(mlflow_tracking_uri))

        # then the challenger is no longer served, the champion still is
        with pytest.raises(ServingError) as caught:
            client.infer(rows, model=CHALLENGER_MODEL)
        assert caught.value.status_code == 404, caught.value
        assert client.infer(rows).model_version == registered_versions.champion
    finally:
        registry.set_registered_model_alias(
            registered_versions.name, "challenger", registered_versions.challenger
        )
        sync_served_models(mlserver.repository, client, _registry(mlflow_tracking_uri))
    # and once the alias is back, so is the challenger
    assert (
        client.infer(rows, model=CHALLENGER_MODEL).model_version == registered_versions.challenger
    )


def test_a_refitted_offset_is_served_by_reloading_the_champion_only(
    client: ServingClient,
    rows: pd.DataFrame,
    mlserver: ServedMLServer,
    registered_versions: RegisteredVersions,
    mlflow_tracking_uri: str,
) -> None:
    champion = registered_versions.champion
    own = client.infer(rows).scores
    challenger = client.infer(rows, model=CHALLENGER_MODEL).scores
    registry = MlflowClient(mlflow_tracking_uri)
    try:
        # given an offset of log(3) for the champion's version, tagged in the registry and
        # written into its folder, as the monitor does where no reconciler runs
        registry.set_model_version_tag(
            registered_versions.name, champion, RECALIBRATED_OFFSET_TAG, repr(float(np.log(3.0)))
        )
        assert write_logit_offset(
            mlserver.repository, "telemarketing", LogitOffset(float(np.log(3.0)), champion)
        ), "the champion's folder must exist"

        # when that model alone is reloaded
        reloaded = reload_models(client, ["telemarketing"])

        # then the champion's odds are tripled, and the challenger answers as before
        assert [each.version for each in reloaded] == [champion], reloaded
        expected = [p * 3.0 / (p * 3.0 + 1.0 - p) for p in own]
        assert client.infer(rows).scores == pytest.approx(expected, rel=1e-12)
        assert client.infer(rows, model=CHALLENGER_MODEL).scores == challenger
        # and a rewrite of the repository from the registry keeps the offset
        sync_served_models(mlserver.repository, client, _registry(mlflow_tracking_uri))
        assert client.infer(rows).scores == pytest.approx(expected, rel=1e-12), "offset lost"
    finally:
        registry.delete_model_version_tag(
            registered_versions.name, champion, RECALIBRATED_OFFSET_TAG
        )
        write_logit_offset(mlserver.repository, "telemarketing", LogitOffset(0.0, champion))
        reload_models(client, ["telemarketing"])
    assert client.infer(rows).scores == own, "the champion's own scores once the offset is 0"
