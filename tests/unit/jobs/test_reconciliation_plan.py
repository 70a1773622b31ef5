"""The reconciler's decisions: what the registry wants against what one MLServer serves."""

from __future__ import annotations

import pytest

from telescore.io.registry import ModelVersionRef
from telescore.jobs.model_repository import (
    CHALLENGER_MODEL,
    CHAMPION_MODEL,
    RECALIBRATED_OFFSET_TAG,
    LogitOffset,
    champion_offset,
    desired_models,
)
from telescore.jobs.reconciler import ServedState, plan


def _version(number: str, **tags: str) -> ModelVersionRef:
    return ModelVersionRef("telemarketing", number, tags=tags)


def _served(version: str, route: str, offset: float = 0.0) -> ServedState:
    return ServedState(version=version, route=route, logit_offset=offset)


def test_a_server_that_serves_the_desired_state_is_left_alone() -> None:
    # given the registry's aliases and offset, and a server that serves exactly them
    desired = desired_models(
        {"champion": _version("3", logit_offset="0.5"), "challenger": _version("4")}
    )
    served = {
        CHAMPION_MODEL: _served("3", "champion", 0.5),
        CHALLENGER_MODEL: _served("4", "challenger"),
    }

    # when planning, then there is nothing to do
    assert plan(desired, served).empty, plan(desired, served)


def test_a_moved_alias_a_new_offset_and_a_gone_alias_are_each_acted_on() -> None:
    # given a promotion (champion 3 -> 4, no challenger any more)
    promoted = desired_models({"champion": _version("4")})
    served = {
        CHAMPION_MODEL: _served("3", "champion"),
        CHALLENGER_MODEL: _served("4", "challenger"),
    }
    # then the champion reloads and the challenger unloads
    todo = plan(promoted, served)
    assert (todo.load, todo.unload) == ([CHAMPION_MODEL], [CHALLENGER_MODEL]), todo

    # given the monitor refitted the champion's offset (a tag on version 4)
    refit = desired_models({"champion": _version("4", **{RECALIBRATED_OFFSET_TAG: "-0.3"})})
    # then the champion reloads, the same version with the new offset
    todo = plan(refit, {CHAMPION_MODEL: _served("4", "champion", 0.0)})
    assert todo.load == [CHAMPION_MODEL] and not todo.unload, todo
    assert plan(refit, {CHAMPION_MODEL: _served("4", "champion", -0.3)}).empty, "applied already"

    # given a model that is not loaded at all (a failed load), then it is loaded
    assert plan(refit, {}).load == [CHAMPION_MODEL], "a missing model must be loaded"


def test_the_challenger_slot_follows_the_challenger_alias_under_the_champions_name() -> None:
    # given a canary server and the registry's challenger at version 5
    desired = desired_models(
        {"champion": _version("3", logit_offset="0.5"), "challenger": _version("5")},
        slot="challenger",
    )

    # then it serves version 5 as `telemarketing`, route challenger, with no offset
    assert [(d.model.name, d.model.route, d.version) for d in desired] == [
        (CHAMPION_MODEL, "challenger", "5")
    ], desired
    assert desired[0].served_offset == 0.0, "a challenger is judged on its own scores"
    assert plan(desired, {CHAMPION_MODEL: _served("4", "challenger")}).load == [CHAMPION_MODEL]
    # and without a challenger alias there is nothing to serve: it says so, and keeps serving
    with pytest.raises(LookupError, match="challenger"):
        desired_models({"champion": _version("3")}, slot="challenger")


def test_the_monitors_refit_tag_wins_over_the_offset_fitted_at_registration() -> None:
    # given version 3 registered with 0.5, and a refit of -0.2 in the registry
    tagged = _version("3", logit_offset="0.5", **{RECALIBRATED_OFFSET_TAG: "-0.2"})

    # then the refit is served; without it, the registration's; never a non-finite one
    assert champion_offset(tagged) == LogitOffset(-0.2, "3"), "the refit is the newer offset"
    assert champion_offset(_version("3", logit_offset="0.5")) == LogitOffset(0.5, "3")
    assert champion_offset(_version("3", **{RECALIBRATED_OFFSET_TAG: "nan"})) is None


def test_with_no_champion_nothing_is_served_and_a_removed_one_is_unloaded() -> None:
    # given a registry with no champion alias (none passed its gates yet, or it was removed),
    # even with a challenger
    for aliases in ({}, {"challenger": _version("4")}):
        desired = desired_models(aliases)
        # then nothing is to be served
        assert desired == [], f"{aliases}: {desired}"
        # and a server still serving the old champion unloads it, so the app says no model serves
        served = {CHAMPION_MODEL: _served("3", "champion")}
        assert plan(desired, served).unload == [CHAMPION_MODEL], plan(desired, served)


def test_a_champion_alias_that_appears_is_loaded() -> None:
    # given a server with no model, then the first champion's alias set by training
    desired = desired_models({"champion": _version("1")})
    # when planning / then it is loaded
    assert plan(desired, {}).load == [CHAMPION_MODEL], plan(desired, {})
