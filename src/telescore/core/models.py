"""The base of every parameters model: frozen, strict, and refusing unknown fields."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class FrozenModel(BaseModel):
    """Validated parameters that cannot change once read, and refuse fields they do not know.

    Strict: a value of the wrong type is refused rather than coerced. Files are read in lax
    mode (`io.params_files`), where YAML and JSON give "0.1" or 1 for a float.
    """

    model_config = ConfigDict(frozen=True, strict=True, extra="forbid")
