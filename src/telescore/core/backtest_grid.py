"""A backtest grid: candidate configurations, stream variants and how to choose among them.

A candidate is a set of overrides of params.yaml's `training`, `monitoring` and `release`
sections: the model, the split, the gates, the promotion rule, the log-odds offset, the
retraining policy. Resolved against the params file, it is what the platform would run with
those values (`LoopConfig`), and what changed is its params patch.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from telescore.core.backtest import LoopConfig, StreamVariant
from telescore.core.backtest_selection import SelectionParams
from telescore.core.models import FrozenModel
from telescore.core.monitoring import MonitoringParams
from telescore.core.params import GuardLoweredError, TrainingParams, apply_overrides
from telescore.core.release import ReleaseRules

Section = Literal["training", "monitoring", "release"]
SECTIONS: dict[str, type[FrozenModel]] = {
    "training": TrainingParams,
    "monitoring": MonitoringParams,
    "release": ReleaseRules,
}
PositiveInt = Annotated[int, Field(gt=0)]
Share = Annotated[float, Field(gt=0, lt=1)]


class CandidateError(ValueError):
    """A candidate whose overrides do not make valid params, named field by field."""


class Candidate(FrozenModel):
    """One configuration to compare: named overrides of the params file's sections."""

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
    """Its name in tables, MLflow runs and the patch (letters, digits, `_.+-`)."""
    description: str = ""
    """What it tries, in a few words."""
    extends: str | None = None
    """An earlier candidate whose overrides this one starts from (its own are laid over them)."""
    overrides: dict[Section, dict[str, Any]] = Field(default_factory=dict)
    """Per section, the fields that differ from the params file (nested as in the file)."""


class StreamVariants(FrozenModel):
    """The streams every candidate is played on: every combination of the lists below."""

    window_rows: tuple[PositiveInt, ...] = Field(default=(2000,), min_length=1)
    """Rows per monitoring window."""
    label_delay_rows: tuple[Annotated[int, Field(ge=0)], ...] | None = Field(
        default=None, min_length=1
    )
    """Outcomes are known this many scored rows later."""
    label_delay_windows: tuple[Annotated[float, Field(ge=0)], ...] | None = Field(
        default=None, min_length=1
    )
    """Or: that many windows later (0.25 of a 2,000-row window is 500 rows)."""
    first_champion_fraction: tuple[Share, ...] = Field(default=(0.2,), min_length=1)
    """Share of the history's earliest rows the first champion learns."""
    request_rows: PositiveInt = StreamVariant.request_rows
    """Rows per scoring request on every stream: a release's guards count requests
    (`release.min_requests`), so a deployment whose app asks a few prospects at a time decides
    its releases on fewer rows than the replay's 20 a request."""

    @model_validator(mode="after")
    def _one_delay(self) -> StreamVariants:
        if self.label_delay_rows is not None and self.label_delay_windows is not None:
            raise ValueError("give label_delay_rows or label_delay_windows, not both")
        return self

    def streams(self) -> list[StreamVariant]:
        """Return every combination, each once, in the lists' order."""
        variants: dict[StreamVariant, None] = {}
        for window, first in itertools.product(self.window_rows, self.first_champion_fraction):
            if self.label_delay_windows is not None:
                delays = [round(window * each) for each in self.label_delay_windows]
            else:
                delays = list(self.label_delay_rows or (1000,))
            for delay in delays:
                variants[StreamVariant(window, delay, first, self.request_rows)] = None
        return list(variants)


class BacktestGrid(FrozenModel):
    """A backtest grid file: candidates, stream variants, selection."""

    candidates: tuple[Candidate, ...] = Field(min_length=1)
    variants: StreamVariants = StreamVariants()
    selection: SelectionParams = SelectionParams()

    @model_validator(mode="after")
    def _unique_names(self) -> BacktestGrid:
        names = [each.name for each in self.candidates]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"candidate names must be unique: {', '.join(repeated)} repeated")
        for index, each in enumerate(self.candidates):
            if each.extends is not None and each.extends not in names[:index]:
                raise ValueError(
                    f"candidates.{index}.extends: {each.extends!r} is not an earlier candidate"
                )
        return self

    def overrides(self, candidate: Candidate) -> dict[str, Any]:
        """Return a candidate's overrides with those of the candidates it extends beneath."""
        own = {str(section): values for section, values in candidate.overrides.items()}
        if candidate.extends is None:
            return own
        parent = next(each for each in self.candidates if each.name == candidate.extends)
        return _merged(self.overrides(parent), own)


def _merged(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return `base` with `overrides` laid over it, section by section, field by field."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), Mapping):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError, prefix: str) -> str:
    """Say what is wrong field by field, each by its full path."""
    parts = []
    for each in error.errors(include_url=False):
        where = ".".join([prefix, *(str(part) for part in each["loc"])])
        parts.append(f"{where}: {str(each['msg']).removeprefix('Value error, ')}")
    return "; ".join(parts)


def resolve_candidate(
    base: Mapping[str, Any], name: str, overrides: Mapping[str, Mapping[str, Any]]
) -> LoopConfig:
    """Return what the platform would run with the params document `base` and the overrides.

    Raises `CandidateError` naming each field at fault, as `candidates.<name>.<section>.<field>`.
    """
    where = f"candidates.{name}"
    data = overrides.get("training", {}).get("data", {})
    if isinstance(data, Mapping) and "path" in data:
        raise CandidateError(
            f"{where}.training.data.path: the history is the backtest's source, the same for "
            "every candidate; a candidate cannot change it"
        )
    sections: dict[str, Any] = {}
    for section, model in SECTIONS.items():
        values = _merged(base.get(section) or {}, overrides.get(section, {}))
        try:
            sections[section] = model.model_validate(values, strict=False)
        except ValidationError as error:
            raise CandidateError(_describe(error, f"{where}.{section}")) from None
    monitoring: MonitoringParams = sections["monitoring"]
    if monitoring.policy.drift_counts_without_labels:
        raise CandidateError(
            f"{where}.monitoring.policy.drift_counts_without_labels: the backtest does not "
            "replay drift; it cannot judge a policy that retrains on it"
        )
    try:
        retraining = apply_overrides(sections["training"], monitoring.retrain_overrides)
    except (GuardLoweredError, ValidationError) as error:
        raise CandidateError(f"{where}.monitoring.retrain_overrides: {error}") from None
    return LoopConfig(
        name=name,
        training=sections["training"],
        retraining=retraining,
        monitoring=monitoring,
        release=sections["release"],
    )


def _changed(base: Any, new: Any) -> Any:
    """Return the parts of `new` that differ from `base` (nested mappings compared key by key)."""
    if isinstance(base, Mapping) and isinstance(new, Mapping):
        changed = {}
        for key, value in new.items():
            if key not in base:
                changed[key] = value
                continue
            difference = _changed(base[key], value)
            if difference is not _SAME:
                changed[key] = difference
        return changed or _SAME
    return _SAME if base == new else new


_SAME = object()


def params_patch(base: LoopConfig, candidate: LoopConfig) -> dict[str, Any]:
    """Return the sections and fields whose value the candidate changes, nested as in the file.

    Compared as validated values, so a candidate restating a value of the file changes nothing.
    """
    patch = {}
    for section in SECTIONS:
        before = getattr(base, section).model_dump(mode="json")
        after = getattr(candidate, section).model_dump(mode="json")
        changed = _changed(before, after)
        if changed is not _SAME:
            patch[section] = changed
    return patch


def flat_keys(patch: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return a nested patch as `section.field.name` keys (for MLflow params and tables)."""
    flat: dict[str, Any] = {}
    for key, value in patch.items():
        if isinstance(value, Mapping) and value:
            flat |= flat_keys(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
