"""Cold start: what the platform says while no model serves, and why none does.

No model serves when none has passed the gates yet, when the champion is gone (its alias or
its version removed from the registry), or while MLServer has not loaded it (loading, or
failing to). The app answers 503 with one of these sentences, and a `Retry-After`; the monitor
retries training as labelled outcomes arrive (`core.retraining.decide_cold_start`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

RETRY_AFTER_SECONDS: Final = 60
"""What a 503 for "no model serving" tells a client to wait before asking again."""
RETRIED: Final = "training is retried as labelled outcomes arrive"


@dataclass(frozen=True)
class ChampionRecord:
    """What the registry says about the champion, to say why MLServer serves none."""

    champion: str | None
    """The version the `champion` alias points at; None when there is no such alias."""
    versions_registered: bool
    """Whether any version was ever registered (only a model that passed the gates is)."""


def no_model_sentence(record: ChampionRecord | None) -> str:
    """Return why no model serves, for a person; `record` None: the registry did not answer."""
    if record is None:
        return (
            "no model is serving: MLServer serves no champion, and the registry (MLflow) "
            "does not answer to say why"
        )
    if record.champion is not None:
        return (
            f"no model is serving: champion version {record.champion} is not loaded by MLServer "
            "(still loading, or failing to load: its reconciler's log says why)"
        )
    if not record.versions_registered:
        return f"no model is serving yet: no training run has passed its gates; {RETRIED}"
    return (
        "no model is serving: the registry has no champion any more (its alias or its version "
        f"was removed); {RETRIED}"
    )
