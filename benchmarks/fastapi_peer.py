"""FastAPI apps to compare telescore's MLServer with, each under `uvicorn --workers 1`.

`app` is the peer a user would write: `predict_proba` on a DataFrame in a plain `def` endpoint,
no validation, logging or version. `floor_app` parses the V2 body and answers a constant (the
HTTP floor); `scorer_app` scores it with telescore's compiled NumPy scorer, unvalidated. The V2
apps use `async def` and orjson, the cheapest honest way FastAPI offers.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import mlflow.sklearn
import orjson
import pandas as pd
from fastapi import FastAPI, Request, Response
from pydantic import BaseModel

from telescore.core.requests import FeatureBatch
from telescore.core.scoring import compile_scorer

V2_PATH = "/v2/models/telemarketing/infer"
_state: dict[str, Any] = {}


def _serving(load: Callable[[Any], Any] | None) -> FastAPI:
    """Return an app that loads the registered model through `load` (if any) on start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if load is not None:
            _state["model"] = load(mlflow.sklearn.load_model(os.environ["PEER_MODEL_URI"]))
        yield
        _state.clear()

    served = FastAPI(lifespan=lifespan)
    served.get("/health")(lambda: {"status": "ok"})
    return served


def _v2_answer(scores: list[float]) -> Response:
    output = {"name": "probability", "shape": [len(scores)], "datatype": "FP64", "data": scores}
    body = orjson.dumps({"model_name": "telemarketing", "outputs": [output]})
    return Response(body, media_type="application/json")


app = _serving(lambda model: model)
floor_app = _serving(None)
scorer_app = _serving(compile_scorer)


class Prospects(BaseModel):
    rows: list[dict[str, Any]]


@app.post("/predict")
def predict(body: Prospects) -> dict[str, list[float]]:
    frame = pd.DataFrame(body.rows)
    return {"probabilities": _state["model"].predict_proba(frame)[:, 1].tolist()}


@floor_app.post(V2_PATH)
async def constant(request: Request) -> Response:
    orjson.loads(await request.body())
    return _v2_answer([0.5])


@scorer_app.post(V2_PATH)
async def score(request: Request) -> Response:
    body = orjson.loads(await request.body())
    # Trusted as valid: the arithmetic alone, no validation.
    batch = FeatureBatch.of({each["name"]: each["data"] for each in body["inputs"]})
    return _v2_answer(_state["model"](batch))
