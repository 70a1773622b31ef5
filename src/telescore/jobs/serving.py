"""Serving jobs: make MLServer serve what the registry's aliases point to now."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from telescore.io.serving_client import ServingClient, ServingError


@dataclass(frozen=True)
class Reloaded:
    """One served model after a reload."""

    model: str
    """MLServer model name."""
    previous_version: str | None
    """Registry version served before the reload (None: not loaded)."""
    version: str | None
    """Registry version served now."""

    @property
    def changed(self) -> bool:
        """Whether the reload switched to another registry version."""
        return self.previous_version != self.version


def reload_models(client: ServingClient, models: Sequence[str] | None = None) -> list[Reloaded]:
    """Reload served models so each re-resolves its alias; all of the repository by default."""
    names = list(models) if models is not None else [m.name for m in client.repository_index()]
    results = []
    for name in names:
        previous = client.served_version(name) if client.model_ready(name) else None
        # MLServer's `load` on a loaded model is a reload: the runtime resolves the alias again,
        # the new instance loads while the old one keeps answering, then the old one unloads.
        try:
            client.load_model(name)
        except ServingError as error:
            # MLServer loads the new instance before it swaps: the old one keeps answering.
            raise ServingError(
                error.status_code,
                f"reloading model {name} failed ({error.message}); "
                f"version {previous} keeps serving. MLServer's log says why",
            ) from error
        results.append(
            Reloaded(model=name, previous_version=previous, version=client.served_version(name))
        )
    return results
