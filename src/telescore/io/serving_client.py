"""HTTP client for MLServer's V2 REST API: score prospects, check health, reload models."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import httpx
import pandas as pd

from telescore.core.schema import CATEGORICAL_VALUES, FEATURES

DEFAULT_MODEL: Final = "telemarketing"
OUTPUT_NAME: Final = "probability"

Rows = pd.DataFrame | Sequence[Mapping[str, Any]]
"""Prospects to score: a DataFrame or a list of dicts, keyed by the schema's feature names."""


class ServingError(RuntimeError):
    """MLServer answered with an error status."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"MLServer answered {status_code}: {message}")
        self.status_code = status_code
        self.message = message
        """MLServer's error text (names the offending input for a refused request)."""


@dataclass(frozen=True)
class Scores:
    """One scored request."""

    request_id: str
    """The V2 request id: the client's own, echoed (not unique)."""
    prediction_ids: list[str]
    """The server's id for each row, in request order: what call outcomes cite."""
    model_name: str
    model_version: str
    """Registry version that scored the request."""
    route: str
    """champion, challenger or shadow."""
    scores: list[float]
    """Probability of a subscription, one per row, in request order."""
    out_of_range: list[list[str]]
    """Per row, the numeric inputs outside the model's training range."""
    latency_ms: float
    """Time the server spent validating and scoring."""


@dataclass(frozen=True)
class RepositoryModel:
    """One entry of the model repository index."""

    name: str
    state: str
    """READY, LOADING, UNAVAILABLE, ... as MLServer reports it."""
    reason: str = ""


def inference_request(
    rows: Rows, request_id: str | None = None, route: str | None = None
) -> dict[str, Any]:
    """Build a V2 inference request with one named input per feature (unknown keys dropped).

    `route="shadow"` asks the server to log the answer as a shadow's: scored, never shown.
    """
    if isinstance(rows, pd.DataFrame):
        columns = {name: rows[name].tolist() for name in FEATURES if name in rows.columns}
    else:
        present = [name for name in FEATURES if any(name in row for row in rows)]
        columns = {name: [row.get(name) for row in rows] for name in present}
    inputs = [
        {"name": name, "datatype": _datatype(name, values), "shape": [len(values)], "data": values}
        for name, values in columns.items()
    ]
    parameters: dict[str, Any] = {"content_type": "pd"}
    if route is not None:
        parameters["route"] = route
    request: dict[str, Any] = {"inputs": inputs, "parameters": parameters}
    if request_id is not None:
        request["id"] = request_id
    return request


def parse_scores(body: Mapping[str, Any]) -> Scores:
    """Read a V2 inference response from TelescoreRuntime."""
    parameters = body.get("parameters") or {}
    output = next(each for each in body["outputs"] if each["name"] == OUTPUT_NAME)
    return Scores(
        request_id=body["id"],
        prediction_ids=json.loads(parameters.get("prediction_ids", "[]")),
        model_name=body["model_name"],
        model_version=str(parameters.get("model_version", body.get("model_version"))),
        route=str(parameters.get("route", "")),
        scores=[float(score) for score in output["data"]],
        out_of_range=json.loads(parameters.get("out_of_range", "[]")),
        latency_ms=float(parameters.get("latency_us", 0)) / 1000.0,
    )


class ServingClient:
    """Synchronous V2 REST client; use as a context manager (it owns a connection pool).

    `control_token` is the control plane's: MLServer's model repository API (index, load,
    unload) refuses requests without it. Only those requests carry it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        control_token: str | None = None,
    ) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)
        self._control = {"Authorization": f"Bearer {control_token}"} if control_token else {}

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def infer(
        self,
        rows: Rows,
        model: str = DEFAULT_MODEL,
        request_id: str | None = None,
        route: str | None = None,
    ) -> Scores:
        """Score prospects with a served model (`route="shadow"`: logged as not shown)."""
        body = self._post(f"/v2/models/{model}/infer", inference_request(rows, request_id, route))
        return parse_scores(body)

    def ready(self) -> bool:
        """Tell whether the server and all its models are ready."""
        return self._ok(lambda: self._http.get("/v2/health/ready"))

    def live(self) -> bool:
        """Tell whether the server answers (its models may still be loading)."""
        return self._ok(lambda: self._http.get("/v2/health/live"))

    def model_ready(self, model: str = DEFAULT_MODEL) -> bool:
        """Tell whether one model is loaded and ready."""
        return self._ok(lambda: self._http.get(f"/v2/models/{model}/ready"))

    def served_version(self, model: str = DEFAULT_MODEL) -> str | None:
        """Return the registry version a model serves (from its metadata), None if unknown."""
        response = self._http.get(f"/v2/models/{model}")
        body = self._json(response)
        versions = body.get("versions") or []
        return str(versions[0]) if versions else None

    def model_metadata(self, model: str = DEFAULT_MODEL) -> dict[str, Any]:
        """Return a model's V2 metadata: `versions` (the registry version), `parameters`, ..."""
        body = self._json(self._http.get(f"/v2/models/{model}"))
        return body if isinstance(body, dict) else {}

    def repository_index(self) -> list[RepositoryModel]:
        """List the models of the repository and their states."""
        body = self._post("/v2/repository/index", {}, self._control)
        entries = body if isinstance(body, list) else []
        return [
            RepositoryModel(
                name=e["name"], state=str(e.get("state", "")), reason=e.get("reason", "")
            )
            for e in entries
        ]

    def load_model(self, model: str) -> None:
        """Load a model from the repository; on a loaded model this reloads it."""
        self._post(f"/v2/repository/models/{model}/load", None, self._control)

    def unload_model(self, model: str) -> None:
        """Unload a model."""
        self._post(f"/v2/repository/models/{model}/unload", None, self._control)

    def _post(
        self, path: str, payload: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None
    ) -> Any:
        return self._json(self._http.post(path, json=payload, headers=headers))

    @staticmethod
    def _ok(call: Callable[[], httpx.Response]) -> bool:
        try:
            return call().is_success
        except httpx.TransportError:
            return False  # not up (yet): a health question, not an error

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if response.is_success:
            return response.json() if response.content else None
        try:
            detail = response.json()
            message = detail.get("error") or detail.get("detail") or response.text
        except ValueError:
            message = response.text
        raise ServingError(response.status_code, str(message))


def _datatype(name: str, values: Sequence[Any]) -> str:
    if name in CATEGORICAL_VALUES:
        return "BYTES"
    # Whole numbers go as INT64 (the integer inputs require them); anything else as FP64.
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return "INT64"
    return "FP64"


def read_metrics(url: str, prefix: str, timeout: float = 2.0) -> dict[str, float]:
    """Read the Prometheus metrics at `url` whose names start with `prefix` (empty if down)."""
    try:
        text = httpx.get(url, timeout=timeout).text
    except httpx.HTTPError:
        return {}
    values = {}
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, value = line.partition(" ")
            values[name.removeprefix(prefix)] = float(value)
    return values
