"""A flow run's overrides: known fields only, and no guard a retrain must respect relaxed."""

from __future__ import annotations

from typing import Any

import pytest

from telescore.core.params import GUARDS, GuardLoweredError, TrainingParams, apply_overrides

COMMITTED = TrainingParams.model_validate(
    {
        "validation": {"min_roc_auc": 0.6, "max_numeric_drift": 0.5},
        "promotion": {"min_improvement": 0.002},
        "release": {"mode": "canary", "canary_weight": 10.0},
    },
    strict=False,
)


@pytest.mark.parametrize(
    "overrides",
    [
        {"promotion": {"min_improvement": -1.0}},
        {"promotion": {"min_improvement": 0.001}},
        {"promotion": {"metric": "brier"}},
        {"validation": {"min_roc_auc": 0.5}},
        {"validation": {"max_numeric_drift": 0.9}},
        {"validation": {"drifting_features_allowed": 19}},
        {"data": {"drop_columns": []}},
        {"data": {"path": "/tmp/poisoned.csv"}},
        {"promotion": {"confidence": 0.999}},
        {"promotion": {"min_test_rows_per_class": 1000}},
        {"release": {"mode": "direct"}},
        {"release": {"canary_weight": 50.0}},
    ],
)
def test_an_override_that_relaxes_a_guard_is_refused(overrides: dict[str, Any]) -> None:
    # given the committed params, when a run's overrides relax a guard
    section, values = next(iter(overrides.items()))
    name = next(iter(values))
    with pytest.raises(GuardLoweredError, match=rf"{section}\.{name}") as refused:
        apply_overrides(COMMITTED, overrides)
    # then the refusal names the guard and says how to relax it legitimately
    assert "committed params change" in str(refused.value), "the error must say what to do"


def test_a_release_may_be_made_more_cautious_but_not_less() -> None:
    # given committed params that release candidates by canary
    # when a run asks for a shadow release instead (no caller sees the candidate)
    cautious = apply_overrides(COMMITTED, {"release": {"mode": "shadow"}})
    # then it is taken
    assert cautious.release.mode == "shadow", "shadow is more cautious than a canary"
    # and when a run asks to go back to a canary, or to skip the online test, it is refused
    for mode in ("canary", "direct"):
        with pytest.raises(GuardLoweredError, match="release.mode"):
            apply_overrides(cautious, {"release": {"mode": mode}})


def test_the_auto_promote_flag_of_older_lineage_is_read_but_no_override() -> None:
    # given the params of a version registered before releases were automatic (its lineage)
    older = TrainingParams.model_validate(
        {"promotion": {"min_improvement": 0.002, "auto_promote": True}}, strict=False
    )
    # then they still validate (the monitor and `reproduce` read them back)
    assert older.promotion.min_improvement == 0.002, older
    # and a run cannot set the old flag any more: it names no field
    with pytest.raises(GuardLoweredError, match="unknown params fields: promotion.auto_promote"):
        apply_overrides(COMMITTED, {"promotion": {"auto_promote": True}})


def test_an_override_that_tightens_a_guard_is_taken() -> None:
    # given stricter values for several guards, when applied
    params = apply_overrides(
        COMMITTED,
        {
            "validation": {"min_roc_auc": 0.7, "max_numeric_drift": 0.3},
            "promotion": {"min_improvement": 0.01},
            "data": {"drop_columns": ["duration", "pdays"]},
        },
    )
    # then each takes effect
    assert params.validation.min_roc_auc == 0.7, "a higher AUC bound is stricter"
    assert params.validation.max_numeric_drift == 0.3, "a lower drift bound is stricter"
    assert params.promotion.min_improvement == 0.01, "a larger improvement is stricter"
    assert params.data.drop_columns == ("duration", "pdays"), "dropping more is stricter"


def test_fields_that_are_not_guards_may_change_either_way() -> None:
    # given the monitor's retraining overrides and a sample size, when applied
    params = apply_overrides(
        COMMITTED,
        {
            "data": {"sample_rows": 12000, "production": {"enabled": True}},
            "split": {"holdout_rows": 3000},
            "model": {"C": 0.5},
        },
    )
    # then they take effect, and nested sections keep the fields not named
    assert params.data.production.enabled, "the monitor's retraining turns production rows on"
    assert params.data.path == COMMITTED.data.path, "a nested override keeps the other fields"
    assert params.split.holdout_rows == 3000 and params.model.C == 0.5, params


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"promotion": {"min_improvment": 0.5}}, "promotion.min_improvment"),
        ({"deploy": {"command": "sh"}}, "deploy"),
        ({"data": {"production": {"enabled": True, "shell": "x"}}}, "data.production.shell"),
        ({"promotion": 1}, "promotion (a section"),
    ],
)
def test_unknown_override_keys_are_refused(overrides: dict[str, Any], named: str) -> None:
    # given a key the params schema does not have, when applied, then refused by name
    with pytest.raises(GuardLoweredError, match="unknown params fields") as refused:
        apply_overrides(COMMITTED, overrides)
    assert named in str(refused.value), f"the refusal must name {named}: {refused.value}"


def test_every_guard_names_a_field_of_the_params() -> None:
    # given the guard list, then each entry is a real field, so none is silently unchecked
    fields = TrainingParams().model_dump()
    for section, name in GUARDS:
        assert name in fields.get(section, {}), f"guard {section}.{name} is not a params field"
