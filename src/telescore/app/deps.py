"""Dependencies of the routes, as `Annotated` aliases; tests swap them via dependency_overrides."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Annotated, Final

from fastapi import Depends, HTTPException, Request, status
from pymongo.errors import ConnectionFailure, PyMongoError

from telescore.io.outcome_store import OutcomeStore
from telescore.settings import Settings

logger = logging.getLogger(__name__)

MONGODB_UNREACHABLE: Final = "MongoDB is unreachable: nothing was read or recorded; try again later"
MONGODB_FAILED: Final = "MongoDB failed to answer: nothing was read or recorded; try again later"


def get_settings(request: Request) -> Settings:
    """Return the settings the app was created with."""
    settings: Settings = request.app.state.settings
    return settings


def get_outcome_store(request: Request) -> Iterator[OutcomeStore]:
    """Yield the app's outcome store; a MongoDB failure in the route becomes a 503."""
    store: OutcomeStore = request.app.state.outcome_store
    try:
        yield store
    except PyMongoError as error:
        # The client is told MongoDB's state, not shown a stack trace; the log keeps the cause.
        logger.warning("MongoDB error while serving %s: %s", request.url.path, error)
        detail = MONGODB_UNREACHABLE if isinstance(error, ConnectionFailure) else MONGODB_FAILED
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail) from None


SettingsDep = Annotated[Settings, Depends(get_settings)]
OutcomeStoreDep = Annotated[OutcomeStore, Depends(get_outcome_store)]
