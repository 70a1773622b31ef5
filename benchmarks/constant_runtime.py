"""An MLServer runtime that answers every request with the same score: MLServer's own floor.

MLServer still parses, routes and serialises; telescore's work is missing. MLServer loads it
by import path, so its process needs the project root first on PYTHONPATH (stack sets it).
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class ConstantRuntime(MLModel):
    """Answers 0.5 for one row, whatever it is sent."""

    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        return InferenceResponse(
            model_name=self.name,
            id=payload.id,
            outputs=[ResponseOutput(name="probability", shape=[1], datatype="FP64", data=[0.5])],
        )
