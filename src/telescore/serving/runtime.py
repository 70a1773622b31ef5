"""The MLServer runtime for a registered telemarketing model: validate, score, flag, log.

One instance serves one alias (`models:/telemarketing@champion`, or `@challenger`). On load it
pins the alias to a concrete registry version, so the version it reports is the one it scores
with even if the alias moves meanwhile; a reload (the repository API's `load`) re-resolves it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import mlflow
import numpy as np
import pandas as pd
from fastapi import status
from mlserver.errors import MLServerError
from mlserver.types import InferenceRequest, InferenceResponse, Parameters, ResponseOutput
from mlserver.utils import generate_uuid
from mlserver_mlflow import MLflowRuntime
from pydantic import BaseModel, ConfigDict, Field

from telescore.core.predictions import ROUTES, Route
from telescore.core.requests import (
    DEFAULT_MAX_ROWS,
    InputTensor,
    InvalidRequestError,
    TrainingRanges,
    validate_inputs,
)
from telescore.core.schema import FEATURES
from telescore.core.scoring import Columns, Scorer, compile_scorer
from telescore.io.registry import ModelVersionRef, resolve_model_uri
from telescore.serving.log_process import LogProcess, WriterStartError
from telescore.serving.log_writer import WriterConfig
from telescore.settings import load_settings

logger = logging.getLogger(__name__)

OUTPUT_NAME: Final = "probability"
"""The one output: probability of class 1 ("yes"), one FP64 per row."""


class InvalidInputError(MLServerError):
    """A request refused before scoring; answers HTTP 400 / gRPC INVALID_ARGUMENT."""

    def __init__(self, message: str) -> None:
        # 400, not 422: MLServer's gRPC server maps 400 to INVALID_ARGUMENT but 422 to
        # FAILED_PRECONDITION, which would tell a gRPC client the server is in the wrong state.
        super().__init__(message, status_code=status.HTTP_400_BAD_REQUEST)


class RuntimeOptions(BaseModel):
    """Options of one served model, read from `parameters.extra` in its model-settings.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    route: Route | None = None
    """Deployment slot reported with each prediction; None takes the alias (champion/...)."""
    max_rows: int = Field(default=DEFAULT_MAX_ROWS, gt=0)
    """Largest batch one request may carry."""
    prediction_log: bool = True
    """Log every prediction to MongoDB (through a local spool when MongoDB is down)."""
    mongodb_uri: str | None = None
    """MongoDB URI; None reads TELESCORE_MONGODB_URI (keep credentials out of files)."""
    mongodb_database: str | None = None
    """Database; None reads TELESCORE_MONGODB_DATABASE."""
    spool_dir: Path | None = None
    """Folder for spooled predictions; None is `<state_dir>/spool/predictions`."""

    @classmethod
    def from_extra(cls, extra: Mapping[str, Any] | None) -> RuntimeOptions:
        """Validate the `parameters.extra` mapping of a model's settings."""
        return cls.model_validate(dict(extra or {}))


class TelescoreRuntime(MLflowRuntime):
    """MLflow runtime that validates every input, reports its registry version and logs."""

    async def load(self) -> bool:
        """Pin the alias to a version, load that version and open the prediction log."""
        if self.settings.max_batch_size > 1 and self.settings.max_batch_time > 0:
            # MLServer's adaptive batcher merges requests before `predict`: one bad request would
            # fail its neighbours, request ids are lost and response parameters are shared.
            raise MLServerError(
                f"model {self.name}: adaptive batching is not supported by TelescoreRuntime; "
                "set max_batch_size to 0 or 1",
                status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            )
        self._options = RuntimeOptions.from_extra(self._parameters().extra)
        uri = self._parameters().uri
        if not uri:
            raise MLServerError(f"model {self.name}: parameters.uri is not set")
        # Loading downloads and unpickles: off the event loop, so that a reload does not stall
        # the requests the current version is still answering.
        self._registered, self._model = await asyncio.to_thread(_load_registered, uri)
        self._model_version = self._registered.version
        self._route = _route(self._options.route, self._registered.alias)
        self._training_ranges = TrainingRanges(_feature_ranges(self._model))
        self._scorer = _scorer(self._model)
        self._input_schema = self._model.metadata.get_input_schema()
        self._signature = self._model.metadata.signature
        self._sync_metadata()
        # Reported by the model metadata endpoint (GET /v2/models/<name>): the pinned version.
        self._settings.versions = [self._model_version]
        self._prediction_log = (
            await self._start_prediction_log() if self._options.prediction_log else None
        )
        logger.info(
            "model %s serves %s (route %s, prediction log %s)",
            self.name,
            self._registered.uri,
            self._route,
            "on" if self._prediction_log else "off",
        )
        return True

    async def unload(self) -> bool:
        """Flush the prediction log (spooling what MongoDB does not take in time)."""
        log = getattr(self, "_prediction_log", None)
        if log is not None:
            self._prediction_log = None
            await log.close()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Validate, score, flag out-of-range rows, answer and log one request."""
        started = time.perf_counter()
        timestamp = time.time()
        try:
            batch = validate_inputs(
                [_input_tensor(request_input) for request_input in payload.inputs],
                max_rows=self._options.max_rows,
            )
        except InvalidRequestError as error:
            raise InvalidInputError(str(error)) from None
        scores = self._scorer(batch.columns).tolist()
        out_of_range = self._training_ranges.flags(batch)
        # gRPC sends "" for a missing id. The data plane copies `payload.id` onto the response,
        # so setting it here makes the generated id the one the client receives.
        request_id = payload.id or generate_uuid()
        payload.id = request_id
        latency_ms = (time.perf_counter() - started) * 1000.0
        response = InferenceResponse(
            model_name=self.name,
            model_version=self._model_version,
            id=request_id,
            # Only str/int/bool survive MLServer's gRPC parameter converter: the flags travel
            # as a JSON string and the latency in whole microseconds, the same on both APIs.
            parameters=Parameters(
                model_version=self._model_version,
                route=self._route,
                out_of_range=json.dumps(out_of_range, separators=(",", ":")),
                latency_us=round(latency_ms * 1000.0),
            ),
            outputs=[
                ResponseOutput(
                    name=OUTPUT_NAME,
                    shape=[batch.n_rows],
                    datatype="FP64",
                    data=scores,
                )
            ],
        )
        if self._prediction_log is not None:
            # Plain lists: the writer process builds the documents, off this event loop.
            columns = [batch.columns[name].tolist() for name in FEATURES]
            self._prediction_log.submit(
                (request_id, timestamp, latency_ms, columns, scores, out_of_range)
            )
        return response

    async def invocations(self, *args: Any, **kwargs: Any) -> None:
        """Not served: MLflow's /invocations would bypass validation and the prediction log."""
        # Overriding without @custom_handler removes the route MLflowRuntime would register.
        raise InvalidInputError("use the V2 inference endpoint /v2/models/<name>/infer")

    def _parameters(self) -> Any:
        if self.settings.parameters is None:
            raise MLServerError(f"model {self.name}: parameters (uri) missing in model-settings")
        return self.settings.parameters

    async def _start_prediction_log(self) -> LogProcess:
        """Start this model's prediction log writer (a process of its own)."""
        settings = load_settings()
        root = self._options.spool_dir or settings.project.state_dir / "spool" / "predictions"
        log = LogProcess(
            WriterConfig(
                mongodb_uri=self._options.mongodb_uri
                or settings.mongodb.resolved_uri(settings.project.host),
                database=self._options.mongodb_database or settings.mongodb.database,
                spool_root=root / self.name,
                model_name=self._registered.name,
                model_version=self._model_version,
                route=self._route,
            )
        )
        try:
            await log.start()
        except WriterStartError as error:
            raise MLServerError(
                f"model {self.name}: {error}", status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
            ) from None
        return log


def _load_registered(uri: str) -> tuple[ModelVersionRef, Any]:
    registered = resolve_model_uri(uri)
    return registered, mlflow.pyfunc.load_model(registered.uri)


def _route(configured: Route | None, alias: str | None) -> Route:
    if configured is not None:
        return configured
    if alias in ROUTES:
        return alias  # type: ignore[return-value]  # narrowed by the membership test
    return "champion"


def _feature_ranges(model: Any) -> dict[str, list[float]]:
    """Read the training ranges stored with the model (empty: no row is ever flagged)."""
    metadata = getattr(model.metadata, "metadata", None) or {}
    ranges = metadata.get("feature_ranges") or {}
    return {str(name): [float(low), float(high)] for name, (low, high) in ranges.items()}


def _scorer(model: Any) -> Scorer:
    """Return the fast scorer for a scikit-learn model, else the pyfunc's own predict."""
    try:
        raw = model.get_raw_model()
    except (AttributeError, NotImplementedError):
        raw = None
    if raw is not None and hasattr(raw, "predict_proba"):
        return compile_scorer(raw)

    def score_with_pyfunc(columns: Columns) -> np.ndarray:
        frame = pd.DataFrame({name: columns[name] for name in FEATURES})
        output = np.asarray(model.predict(frame), dtype=np.float64)
        # pyfunc_predict_fn="predict_proba" gives two columns; a plain score gives one.
        return output[:, 1] if output.ndim == 2 else output

    return score_with_pyfunc


def _input_tensor(request_input: Any) -> InputTensor:
    return InputTensor(
        name=request_input.name,
        # REST requests carry a Datatype enum, gRPC ones (built unvalidated) the plain string.
        datatype=str(getattr(request_input.datatype, "value", request_input.datatype)),
        shape=request_input.shape,
        data=getattr(request_input.data, "root", request_input.data),
    )
