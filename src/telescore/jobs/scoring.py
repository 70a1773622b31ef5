"""The app's scoring service: route each prospect to a served model, and score it with MLServer.

Routing is read from MongoDB (`releases` store) at most once a second, so that an ops change
takes effect within a second, with no restart, and a scoring request costs no database read.
Which versions MLServer serves is read from MLServer the same way. In shadow mode the
challenger scores the same rows, under the same request id, on a background thread: its answer
is logged (route `shadow`) and never waited for or shown. While MLServer serves no champion
(cold start, or the champion gone) nothing is scored: `NoModelServingError` says why.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Generic, Self, TypeVar

from telescore.core.cold_start import RETRY_AFTER_SECONDS, no_model_sentence
from telescore.core.routing import RoutingConfig, effective, split_batch
from telescore.io.release_store import ReleaseStore
from telescore.io.serving_client import ServingClient, ServingError
from telescore.jobs.model_repository import CHALLENGER_MODEL, CHAMPION_MODEL

logger = logging.getLogger(__name__)

SERVED_MODELS: Final = {"champion": CHAMPION_MODEL, "challenger": CHALLENGER_MODEL}
REFRESH_SECONDS: Final = 1.0
T = TypeVar("T")


class NoModelServingError(RuntimeError):
    """MLServer serves no champion: nothing can be scored; the message says why."""

    def __init__(self, reason: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        """Seconds a client should wait before asking again."""


@dataclass(frozen=True)
class Scored:
    """One row's score, as shown to a caller."""

    score: float
    prediction_id: str
    """The id MLServer logged the prediction under: the one an outcome cites."""
    model_version: str
    route: str
    """champion or challenger: which model's answer is shown."""


@dataclass(frozen=True)
class ServedVersions:
    """Which registry versions MLServer serves now (None: that slot is empty)."""

    champion: str | None
    challenger: str | None


class Refreshed(Generic[T]):
    """A value read again at most every `seconds`; the last good value is kept on a failure."""

    def __init__(self, read: Callable[[], T], seconds: float = REFRESH_SECONDS) -> None:
        self._read = read
        self._seconds = seconds
        self._lock = threading.Lock()
        self._value: T | None = None
        self._read_at = float("-inf")

    def get(self) -> T:
        """Return the value, reading it again if it is older than the period."""
        with self._lock:
            if time.monotonic() - self._read_at >= self._seconds or self._value is None:
                self._value = self._read()
                self._read_at = time.monotonic()
            return self._value

    def forget(self) -> None:
        """Read the value again at the next `get` (after a change made by this process)."""
        with self._lock:
            self._read_at = float("-inf")


class ScoringService:
    """Scores prospects through MLServer under the routing in force; thread-safe."""

    def __init__(
        self,
        serving: ServingClient,
        releases: ReleaseStore,
        *,
        batch_rows: int = 1000,
        shadow_workers: int = 2,
        unserved_reason: Callable[[], str] = lambda: no_model_sentence(None),
    ) -> None:
        self._serving = serving
        self._batch_rows = batch_rows
        self._unserved_reason = unserved_reason
        self.routing = Refreshed(lambda: read_routing(releases))
        self.versions = Refreshed(self._served_versions)
        self._shadow = ThreadPoolExecutor(shadow_workers, thread_name_prefix="shadow")
        self._shadow_calls: set[Future[None]] = set()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Wait for the shadow calls under way, then stop their threads."""
        self._shadow.shutdown(wait=True)

    def score(
        self,
        rows: Sequence[Mapping[str, Any]],
        routing_keys: Sequence[str],
        request_id: str | None = None,
    ) -> list[Scored]:
        """Score model rows, each routed by its key (the prospect id); answers in row order.

        Rows are plain mappings, not a DataFrame: for the few rows of a request, pandas would
        cost more than MLServer does (about 1.5 ms against 0.3 ms, docs/benchmarks/app.md).

        Raises ServingError (MLServer refused or failed) or httpx.TransportError (unreachable).
        """
        request_id = request_id or str(uuid.uuid4())
        versions = self.served_versions()
        config = effective(self.routing.get(), challenger_available=versions.challenger is not None)
        split = split_batch(routing_keys, config)
        answers: list[Scored | None] = [None] * len(rows)
        for route, chosen in (("champion", split.champion), ("challenger", split.challenger)):
            for start in range(0, len(chosen), self._batch_rows):
                batch = chosen[start : start + self._batch_rows]
                scores = self._serving.infer(
                    rows if len(batch) == len(rows) else [rows[index] for index in batch],
                    model=SERVED_MODELS[route],
                    request_id=self._batch_id(request_id, start, len(chosen)),
                )
                for index, score, prediction_id in zip(
                    batch, scores.scores, scores.prediction_ids, strict=True
                ):
                    answers[index] = Scored(
                        score, prediction_id, scores.model_version, scores.route
                    )
        # In the shadow, every row (none otherwise), in the same batches as the champion's and
        # under the same ids: (request id, row) pairs a shadow's answer with the one shown, and
        # so with its outcome.
        for start in range(0, len(split.shadow), self._batch_rows):
            batch_id = self._batch_id(request_id, start, len(rows))
            self._score_in_shadow(rows[start : start + self._batch_rows], batch_id)
        return [answer for answer in answers if answer is not None]

    def served_versions(self) -> ServedVersions:
        """Return what MLServer serves; NoModelServingError, saying why, if no champion.

        Raises httpx.TransportError when MLServer is unreachable (that is another answer).
        """
        versions = self.versions.get()
        if versions.champion is None:
            raise NoModelServingError(self.unserved_reason())
        return versions

    def unserved_reason(self) -> str:
        """Say why no model would serve (asked when MLServer serves no champion)."""
        return self._unserved_reason()

    def _batch_id(self, request_id: str, start: int, rows: int) -> str:
        """Return a batch's request id: the request's own, or with its first row appended."""
        return request_id if rows <= self._batch_rows else f"{request_id}.{start}"

    def batch_ids(self, request_id: str, rows: int) -> list[str]:
        """Return the request ids `score` sends `rows` rows under (in the shadow too)."""
        return [
            self._batch_id(request_id, start, rows) for start in range(0, rows, self._batch_rows)
        ]

    def wait_for_shadow(self) -> None:
        """Wait until the shadow calls started so far are done (tests, shutdown)."""
        for call in list(self._shadow_calls):
            call.result()

    def _score_in_shadow(self, rows: Sequence[Mapping[str, Any]], request_id: str) -> None:
        call = self._shadow.submit(self._shadow_call, rows, request_id)
        self._shadow_calls.add(call)
        call.add_done_callback(self._shadow_calls.discard)

    def _shadow_call(self, rows: Sequence[Mapping[str, Any]], request_id: str) -> None:
        try:
            self._serving.infer(rows, model=CHALLENGER_MODEL, request_id=request_id, route="shadow")
        except Exception as error:  # noqa: BLE001 - a shadow's failure must never reach a caller
            logger.warning("shadow scoring of request %s failed: %s", request_id, error)

    def _served_versions(self) -> ServedVersions:
        return ServedVersions(
            champion=self._version_of(CHAMPION_MODEL),
            challenger=self._version_of(CHALLENGER_MODEL),
        )

    def _version_of(self, model: str) -> str | None:
        try:
            return self._serving.served_version(model)
        except ServingError:
            return None  # not in the repository, or not loaded


def read_routing(releases: ReleaseStore) -> RoutingConfig:
    """Return the routing in force; champion only if none was ever set."""
    document = releases.current_routing()
    if document is None:
        return RoutingConfig()
    return RoutingConfig.model_validate(
        {key: value for key, value in document.items() if key != "_id"}
    )
