"""Why no model serves, as the app says it: read from the registry, at most every few seconds.

Asked only while MLServer serves no champion (the scoring service's `unserved_reason`), so a
request that is scored never waits on MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from telescore.core.cold_start import ChampionRecord, no_model_sentence
from telescore.io.registry import CHAMPION, Registry, RegistryError
from telescore.jobs.scoring import Refreshed

logger = logging.getLogger(__name__)

REFRESH_SECONDS: Final = 10.0


def champion_record(registry: Registry) -> ChampionRecord:
    """Return the champion's version (None: no alias) and whether any version is registered."""
    champion = registry.alias_versions([CHAMPION]).get(CHAMPION)
    return ChampionRecord(
        champion=champion.version if champion is not None else None,
        versions_registered=champion is not None or registry.has_versions(),
    )


class UnservedReason:
    """Says why MLServer serves no champion, from a record of the registry read now and then."""

    def __init__(
        self, read: Callable[[], ChampionRecord], seconds: float = REFRESH_SECONDS
    ) -> None:
        self._record = Refreshed(read, seconds)

    def __call__(self) -> str:
        """Return the sentence; the registry unreachable (or not opened) is said too."""
        try:
            record: ChampionRecord | None = self._record.get()
        except (RegistryError, OSError, RuntimeError) as error:
            logger.warning("the registry did not say why no model serves: %s", error)
            record = None
        return no_model_sentence(record)


def registry_reason(registry: Callable[[], Registry]) -> UnservedReason:
    """Return the reason read from the registry `registry()` opens (on the first need)."""
    return UnservedReason(lambda: champion_record(registry()))
