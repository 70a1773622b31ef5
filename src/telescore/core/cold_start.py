"""Cold start: what the platform says while no model serves, and why none does.

No model serves when none has passed the gates yet, when the champion is gone (its alias or
its version removed from the registry), or while MLServer has not loaded it (loading, or
failing to). The app answers 503 with one of these sentences, and a `Retry-After`; the monitor
retries training as labelled outcomes arrive (`core.retraining.decide_cold_start`).

The call list is given all the same, unranked, in a stated order (`unranked_order`), so that
callers keep working and their outcomes become the labelled rows the next attempt learns from.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

RETRY_AFTER_SECONDS: Final = 60
"""What a 503 for "no model serving" tells a client to wait before asking again."""
RETRIED: Final = "training is retried as labelled outcomes arrive"
UNRANKED_ORDER: Final = "a fixed shuffled order (the SHA-256 of their id)"
"""The order of the call list while no model serves, as the list says it."""


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


def unranked_order(prospect_ids: Iterable[str]) -> list[str]:
    """Return the prospect ids in the call list's order while no model serves.

    A shuffle, not the order the prospects were added in: the outcomes of these calls are the
    rows the first model learns from, and an import is often sorted (by region, age, source),
    so working it from the top would label one segment first and teach a skewed sample. A
    hash of the id is a shuffle that every replica, every day and every reader reproduces
    (`sha256(id)`), and a prospect keeps its place as others are added or removed.
    """
    return sorted(prospect_ids, key=lambda each: (hashlib.sha256(each.encode()).hexdigest(), each))


def unranked_sentence(reason: str, *, min_score_ignored: bool = False) -> str:
    """Say that the call list is unranked, in which order, and why, from `no_model_sentence`."""
    head, _, why = reason.partition(": ")
    sentence = (
        f"{head}: prospects in {UNRANKED_ORDER}, unranked; {why}; record each call as usual: "
        "its outcome is a labelled row the next training attempt learns from"
    )
    if min_score_ignored:
        sentence += "; the minimum score filter is ignored, since nothing is scored"
    return sentence
