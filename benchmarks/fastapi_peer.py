"""The peer a user would write instead of telescore: one FastAPI endpoint over scikit-learn.

It loads the same registered model and answers `POST /predict {"rows": [{...}, ...]}` with
`{"probabilities": [...]}`, building a DataFrame and calling `predict_proba`: no validation, no
logging, no model version. `benchmarks/serving.py` starts it as

    PEER_MODEL_URI=models:/telemarketing/1 MLFLOW_TRACKING_URI=http://... \
        uvicorn benchmarks.fastapi_peer:app --workers 1 --no-access-log
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import mlflow.sklearn
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

_state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    _state["model"] = mlflow.sklearn.load_model(os.environ["PEER_MODEL_URI"])
    yield
    _state.clear()


app = FastAPI(lifespan=lifespan)


class Prospects(BaseModel):
    rows: list[dict[str, Any]]


@app.post("/predict")
def predict(body: Prospects) -> dict[str, list[float]]:
    # A plain `def`: FastAPI runs it in its thread pool, as most such endpoints are written.
    frame = pd.DataFrame(body.rows)
    return {"probabilities": _state["model"].predict_proba(frame)[:, 1].tolist()}


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
