"""The MLServer runtime for a registered telemarketing model: validate, score, flag, journal.

One instance serves one alias (`models:/telemarketing@champion`, or `@challenger`). On load it
pins the alias to a concrete registry version, so the version it reports is the one it scores
with even if the alias moves meanwhile; a reload (the repository API's `load`) re-resolves it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

import numpy as np
import orjson
import pandas as pd
from fastapi import status
from mlserver.errors import MLServerError
from mlserver.types import (
    InferenceRequest,
    InferenceResponse,
    MetadataModelResponse,
    Parameters,
    ResponseOutput,
)
from mlserver.utils import generate_uuid
from mlserver_mlflow import MLflowRuntime

from telescore.core.prediction_ids import PredictionIds
from telescore.core.predictions import ROUTES, JournalEntry, Route, entry_payload
from telescore.core.requests import (
    FeatureBatch,
    InvalidRequestError,
    TrainingRanges,
    check_request_id,
    validate_inputs,
)
from telescore.core.schema import FEATURES
from telescore.core.scoring import Scorer, compile_scorer, with_logit_offset
from telescore.io.journal import JournalWriter
from telescore.io.registry import ModelVersionRef, load_pyfunc, resolve_model_uri
from telescore.serving.options import RuntimeOptions
from telescore.serving.shipper import ShipperConfig
from telescore.serving.shipping import (
    RequestOutcome,
    ShipperStartError,
    ShipperSupervisor,
    attach_shipper,
    detach_shipper,
    prediction_log_metrics,
    request_counter,
)
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


class PredictionLogUnavailableError(MLServerError):
    """The journal cannot take the prediction: it is not answered, so nothing shown is lost."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


class ScoringFailedError(MLServerError):
    """The model raised on a valid request: a server fault, answered HTTP 500 / gRPC INTERNAL."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status_code=status.HTTP_500_INTERNAL_SERVER_ERROR)


SHADOW: Final[Route] = "shadow"

_prediction_ids = PredictionIds()
"""One generator per process: champion and challenger share its clock and sequence."""


class TelescoreRuntime(MLflowRuntime):
    """MLflow runtime that validates inputs, reports its version and journals each answer."""

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
        try:
            self._registered, self._model = await asyncio.to_thread(_load_registered, uri)
        except Exception as error:
            # An MLServerError is answered cleanly by MLServer's handler; anything else escapes
            # as an unhandled exception, and the repository API's client may get a reset.
            raise MLServerError(
                f"model {self.name}: cannot load {uri}: {error}",
                status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            ) from error
        self._model_version = self._registered.version
        self._route = _route(self._options.route, self._registered.alias)
        self._training_ranges = TrainingRanges(_feature_ranges(self._model))
        # An offset fitted for another version (the alias moved since it was written) is not
        # this model's: it would shift a new champion by what the old one needed.
        self._logit_offset = self._options.offset_for(self._model_version)
        if self._options.logit_offset and not self._logit_offset:
            logger.warning(
                "model %s: logit_offset %+.4f was fitted for version %s, not %s: not applied",
                self.name,
                self._options.logit_offset,
                self._options.logit_offset_version,
                self._model_version,
            )
        self._scorer = with_logit_offset(_scorer(self._model), self._logit_offset)
        self._input_schema = self._model.metadata.get_input_schema()
        self._signature = self._model.metadata.signature
        self._sync_metadata()
        # Reported by the model metadata endpoint (GET /v2/models/<name>): the pinned version.
        self._settings.versions = [self._model_version]
        # One journal per route this model answers under: its own, and `shadow` once asked.
        self._journals: dict[Route, JournalWriter] = {}
        self._shipper: ShipperSupervisor | None = None
        if self._options.prediction_log:
            await self._open_prediction_log()
        logger.info(
            "model %s serves %s (route %s, logit offset %+.4f, prediction log %s)",
            self.name,
            self._registered.uri,
            self._route,
            self._logit_offset,
            f"journaled in {self._journals[self._route].root}" if self._journals else "off",
        )
        return True

    async def metadata(self) -> MetadataModelResponse:
        """Model metadata, with the route and the log-odds offset this instance serves.

        What an MLServer's reconciler compares with the registry's wish (`jobs.reconciler`).
        """
        metadata = await super().metadata()
        served = getattr(self, "_route", None), getattr(self, "_logit_offset", None)
        if served[0] is not None:
            parameters = metadata.parameters or Parameters()
            metadata.parameters = Parameters(
                **parameters.model_dump(exclude_none=True),
                route=served[0],
                logit_offset=served[1],
            )
        return metadata

    async def unload(self) -> bool:
        """Seal this model's journal segment; the last model unloaded stops the shipper."""
        journals, self._journals = getattr(self, "_journals", {}), {}
        for journal in journals.values():
            journal.close()
            prediction_log_metrics().retire_writer(journal)
        shipper, self._shipper = getattr(self, "_shipper", None), None
        if shipper is not None:
            await detach_shipper(shipper, prediction_log_metrics())
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        """Answer one request, and count it for the release guards: answered, failed, refused.

        Its time (validate, score, journal) goes into the duration histogram.
        """
        started = time.perf_counter()
        counter = request_counter()
        try:
            response = await self._answer(payload)
        except MLServerError as error:
            # Only the server's faults are the model's failures. Invalid input is the caller's:
            # whoever can reach MLServer could otherwise roll an arm back with bad requests.
            # (MLServer's own model_infer_request_failure_total counts both.)
            seconds = time.perf_counter() - started
            counter.count(self.name, self._model_version, _outcome_of(error), seconds=seconds)
            raise
        except Exception as error:
            # A fault of the model's own (it raised on valid input). Answered as a clean 500:
            # MLServer lets other exceptions escape to uvicorn, which may reset the connection.
            seconds = time.perf_counter() - started
            counter.count(self.name, self._model_version, "failed", seconds=seconds)
            logger.exception("model %s failed request %s", self.name, payload.id)
            raise ScoringFailedError(f"model {self.name} failed to score this request") from error
        seconds = time.perf_counter() - started
        counter.count(self.name, self._model_version, "answered", seconds=seconds)
        return response

    async def _answer(self, payload: InferenceRequest) -> InferenceResponse:
        """Validate, score, flag out-of-range rows, journal, then answer one request."""
        started = time.perf_counter()
        timestamp = time.time()
        # gRPC sends "" for a missing id (REST's missing id is generated by MLServer). The data
        # plane copies `payload.id` onto the response, so the generated id is the one answered.
        request_id = payload.id or generate_uuid()
        payload.id = request_id
        try:
            check_request_id(request_id)
            batch = validate_inputs(payload.inputs, max_rows=self._options.max_rows)
        except InvalidRequestError as error:
            raise InvalidInputError(str(error)) from None
        route = self._request_route(payload.parameters)
        scores = self._scorer(batch)
        out_of_range = self._training_ranges.flags(batch)
        prediction_ids = _prediction_ids.new(batch.n_rows)
        latency_ms = (time.perf_counter() - started) * 1000.0
        if self._journals:
            self._journal_request(
                route,
                JournalEntry(
                    prediction_ids,
                    request_id,
                    timestamp,
                    latency_ms,
                    [batch.columns[name] for name in FEATURES],
                    scores,
                    out_of_range,
                ),
                batch.n_rows,
            )
        return InferenceResponse(
            model_name=self.name,
            model_version=self._model_version,
            id=request_id,
            # Only str/int/bool survive MLServer's gRPC parameter converter: lists travel as
            # JSON text and the latency in whole microseconds, the same on both APIs.
            parameters=Parameters(
                model_version=self._model_version,
                route=route,
                prediction_ids=orjson.dumps(prediction_ids).decode(),
                out_of_range=orjson.dumps(out_of_range).decode(),
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

    def _request_route(self, parameters: Parameters | None) -> Route:
        """Return the route to log the request under: the model's own, or `shadow` if asked.

        A caller that shows another model's answer (the app's shadow release) asks for
        `shadow`; no request can claim to be the champion or the challenger.
        """
        asked = getattr(parameters, "route", None) if parameters is not None else None
        if asked is None or asked == self._route:
            return self._route
        if asked != SHADOW:
            raise InvalidInputError(
                f"parameters.route: {asked!r} is not allowed; only {SHADOW!r} may be asked"
            )
        return SHADOW

    def _journal_request(self, route: Route, entry: JournalEntry, rows: int) -> None:
        """Make the prediction durable before it is answered; refuse to answer otherwise."""
        try:
            journal = self._journals.get(route) or self._open_journal(route)
            journal.append(entry_payload(entry), rows)
        except OSError as error:  # JournalError, or a shadow journal that cannot be opened
            prediction_log_metrics().refused += 1
            logger.error("request %s not answered: %s", entry.request_id, error)
            raise PredictionLogUnavailableError(
                f"the prediction log cannot record this prediction ({error.strerror or error}); "
                "it was not answered, try again"
            ) from None

    async def invocations(self, *args: Any, **kwargs: Any) -> None:
        """Not served: MLflow's /invocations would bypass validation and the prediction log."""
        # Overriding without @custom_handler removes the route MLflowRuntime would register.
        raise InvalidInputError("use the V2 inference endpoint /v2/models/<name>/infer")

    def _parameters(self) -> Any:
        if self.settings.parameters is None:
            raise MLServerError(f"model {self.name}: parameters (uri) missing in model-settings")
        return self.settings.parameters

    async def _open_prediction_log(self) -> None:
        """Open this model's journal and make sure the root's shipper runs."""
        settings = load_settings()
        root = self._options.journal_dir or settings.project.state_dir / "journal" / "predictions"
        metrics = prediction_log_metrics()
        config = ShipperConfig(
            root=root.resolve(),
            mongodb_uri=settings.mongodb.resolved_uri(settings.project.host),
            database=settings.mongodb.database,
            fsync_interval=self._options.fsync_interval,
            max_defer=self._options.ship_max_defer,
        )
        try:
            self._shipper = await attach_shipper(config, metrics)
        except ShipperStartError as error:
            raise MLServerError(
                f"model {self.name}: {error}", status_code=status.HTTP_500_INTERNAL_SERVER_ERROR
            ) from None
        self._journal_root = config.root
        try:
            # Now rather than on the first request: a journal that cannot be written fails the
            # load, and the version already serving keeps answering.
            self._open_journal(self._route)
        except OSError as error:
            await detach_shipper(self._shipper, metrics)
            self._shipper = None
            raise MLServerError(
                f"model {self.name}: prediction journal in {root}: {error}",
                status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
            ) from None

    def _open_journal(self, route: Route) -> JournalWriter:
        """Open this model's journal for one route: segments name the route they log."""
        journal = JournalWriter(
            self._journal_root,
            {
                "format": 1,
                "model_name": self._registered.name,
                "model_version": self._model_version,
                "route": route,
                "served_as": self.name,
                "features": list(FEATURES),
                # Every row of the segment was scored with it: a reload opens a new segment.
                "logit_offset": self._logit_offset,
            },
            segment_bytes=self._options.journal_segment_bytes,
        )
        journal.open()
        prediction_log_metrics().track_writer(journal)
        self._journals[route] = journal
        return journal


def _outcome_of(error: MLServerError) -> RequestOutcome:
    """Tell a request refused for the caller's input (4xx) from one the server failed."""
    if status.HTTP_400_BAD_REQUEST <= error.status_code < status.HTTP_500_INTERNAL_SERVER_ERROR:
        return "refused"
    return "failed"


def _load_registered(uri: str) -> tuple[ModelVersionRef, Any]:
    registered = resolve_model_uri(uri)
    return registered, load_pyfunc(registered)


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

    def score_with_pyfunc(batch: FeatureBatch) -> list[float]:
        frame = pd.DataFrame({name: batch.columns[name] for name in FEATURES})
        output = np.asarray(model.predict(frame), dtype=np.float64)
        # pyfunc_predict_fn="predict_proba" gives two columns; a plain score gives one.
        return (output[:, 1] if output.ndim == 2 else output).tolist()

    return score_with_pyfunc
