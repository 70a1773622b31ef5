"""Params files (params.yaml and its kin): read the YAML and validate each section into core.

One file holds every job's parameters, a section each: `training`, `monitoring`, `release`.
Values are read in lax mode, as YAML gives them (1 for a float, "0.1" for a number); the models
in `core` then hold them frozen and strict. A file or section that does not validate raises
`ParamsFileError`, naming the file and each field at fault.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from telescore.core.models import FrozenModel
from telescore.core.monitoring import MonitoringParams
from telescore.core.params import TrainingParams
from telescore.core.release import ReleaseRules

Params = TypeVar("Params", bound=FrozenModel)


class ParamsFileError(ValueError):
    """A params file that is not YAML, or whose section does not validate."""


def resolve_params_file(name: str, root: Path, *also: Path) -> Path:
    """Return the params file a flow run names, refused unless it lies inside the project.

    A flow run's `params_file` is chosen by whoever creates the run, so it must name a file
    under `root` by a relative path: an absolute path, a `..` escape or a symlink leading out
    is refused. `also` lists further folders an absolute path may point into (the platform's
    own state folder, where the replay writes its params).
    """
    path = Path(name)
    inside = [root.resolve(), *(folder.resolve() for folder in also)]
    if path.is_absolute():
        if not also:
            raise ParamsFileError(
                f"params_file {name!r}: must be a path relative to the project root {root}"
            )
        resolved = path.resolve()
    else:
        resolved = (root / path).resolve()
    if not any(resolved.is_relative_to(folder) for folder in inside):
        raise ParamsFileError(
            f"params_file {name!r}: resolves to {resolved}, outside the project root {root}"
        )
    return resolved


def load_training_params(path: Path) -> TrainingParams:
    """Read the `training` section of a params file; a file without one is the section itself."""
    document = _read_document(path)
    if "training" in document:
        return _validate(path, TrainingParams, document["training"], "training")
    return _validate(path, TrainingParams, document, "")


def load_monitoring_params(path: Path) -> MonitoringParams:
    """Read the `monitoring` section of a params file (defaults where it is absent)."""
    return _validate(path, MonitoringParams, _read_document(path).get("monitoring"), "monitoring")


def load_release_rules(path: Path) -> ReleaseRules:
    """Read the `release` section of a params file (defaults where it is absent)."""
    return _validate(path, ReleaseRules, _read_document(path).get("release"), "release")


def _read_document(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ParamsFileError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise ParamsFileError(f"{path}: expected a mapping of sections, not {document!r:.60}")
    return document


def _validate(path: Path, model: type[Params], values: Any, section: str) -> Params:
    try:
        return model.model_validate(values or {}, strict=False)
    except ValidationError as error:
        raise ParamsFileError(f"{path}: {_describe(error, section)}") from None


def _describe(error: ValidationError, section: str) -> str:
    """Say what is wrong field by field, each field by its full path in the file."""
    parts = []
    for each in error.errors(include_url=False):
        field = ".".join(str(part) for part in (section, *each["loc"]) if part != "")
        message = str(each["msg"]).removeprefix("Value error, ")
        parts.append(f"{field or 'the file'}: {message}")
    return "; ".join(parts)
