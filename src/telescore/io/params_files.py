"""Params files (params.yaml and its kin): read the YAML and validate each section into core.

One file holds every job's parameters, a section each: `training`, `monitoring`, `release`.
A backtest grid file names candidate overrides of those sections (`load_backtest_plan`), and
the backtest writes the one it recommends as a params patch (`write_params_patch`).
Values are read in lax mode, as YAML gives them (1 for a float, "0.1" for a number); the models
in `core` then hold them frozen and strict. A file or section that does not validate raises
`ParamsFileError`, naming the file and each field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import ValidationError

from telescore.core.models import FrozenModel
from telescore.core.monitoring import MonitoringParams
from telescore.core.params import TrainingParams
from telescore.core.release import ReleaseRules

if TYPE_CHECKING:
    from telescore.core.backtest import LoopConfig
    from telescore.core.backtest_grid import BacktestGrid

Params = TypeVar("Params", bound=FrozenModel)


class ParamsFileError(ValueError):
    """A params file that is not YAML, or whose section does not validate."""


PARAMS_SUFFIXES = (".yaml", ".yml")


def resolve_params_file(name: str, root: Path, *also: Path) -> Path:
    """Return the params file a flow run names, refused unless it lies inside the project.

    A flow run's `params_file` is chosen by whoever creates the run, so it must name a file
    under `root` by a relative path: an absolute path, a `..` escape or a symlink leading out
    is refused. `also` lists further folders an absolute path may point into (the platform's
    own state folder, where the replay writes its params). Only a `.yaml` or `.yml` file is
    taken: the state folder and `.env`, inside the root when embedded, hold the secrets.
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
    if resolved.suffix.lower() not in PARAMS_SUFFIXES:  # the target, not a link's name
        raise ParamsFileError(f"params_file {name!r}: must name a YAML file (.yaml or .yml)")
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
    # The errors never quote the file: a flow run may name any file of the project, and its
    # error is shown in Prefect's run state.
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ParamsFileError(f"{path}: not valid YAML{where}") from None
    if not isinstance(document, dict):
        kind = type(document).__name__
        raise ParamsFileError(f"{path}: expected a mapping of sections, not a {kind}")
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


@dataclass(frozen=True)
class BacktestPlan:
    """A grid file resolved against a params file: what `telescore backtest` plays."""

    grid: BacktestGrid
    base: LoopConfig
    """The params file as it is (the patch's reference)."""
    candidates: tuple[LoopConfig, ...]
    """Each candidate's resolved configuration, in the grid's order."""


def load_backtest_plan(grid_path: Path, params_path: Path) -> BacktestPlan:
    """Read a backtest grid and resolve each candidate against the params file.

    Raises `ParamsFileError` naming the file and each field at fault: a grid field
    (`candidates.0.name`) or a candidate's resolved params (`candidates.<name>.training.model.C`).
    """
    # Imported here: the backtest's modules load scikit-learn, which the other callers of this
    # module (the flows, the DVC stages) should not pay for at start-up.
    from telescore.core.backtest_grid import BacktestGrid, CandidateError, resolve_candidate

    document = _read_document(params_path)
    try:
        base = resolve_candidate(document, "params", {})
    except CandidateError as error:
        raise ParamsFileError(
            f"{params_path}: {str(error).removeprefix('candidates.params.')}"
        ) from None
    grid = _validate(grid_path, BacktestGrid, _read_document(grid_path), "")
    try:
        candidates = tuple(
            resolve_candidate(document, each.name, grid.overrides(each)) for each in grid.candidates
        )
    except CandidateError as error:
        raise ParamsFileError(f"{grid_path}: {error} (over {params_path})") from None
    return BacktestPlan(grid, base, candidates)


def write_params_patch(path: Path, patch: Mapping[str, Any], header: str) -> Path:
    """Write a params patch: the changed fields only, nested as in params.yaml, under a comment."""
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = yaml.safe_dump(dict(patch), sort_keys=False) if patch else "{}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(comment + body)
    return path
