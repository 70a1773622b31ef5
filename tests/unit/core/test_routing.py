"""The release router on 10,000 simulated prospects: shares, stickiness, monotone weights."""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from pydantic import ValidationError

from telescore.core.routing import (
    BUCKETS,
    RoutingConfig,
    bucket,
    effective,
    route_for,
    shadowed,
    split_batch,
)

# Dataset-style ids (P000000 ...) and random uuids (seeded, so that a failure can be replayed).
DATASET_IDS = [f"P{number:06d}" for number in range(10_000)]
_RANDOM = random.Random(7)  # noqa: S311 - test data, not a secret
UUID_IDS = [str(uuid.UUID(int=_RANDOM.getrandbits(128), version=4)) for _ in range(40_000)]
POPULATIONS = pytest.mark.parametrize(
    "ids", [DATASET_IDS, UUID_IDS[:10_000]], ids=["dataset", "uuid"]
)
# The share test needs more: over n ids a perfect hash gives a canary share with a standard
# deviation of sqrt(w(100-w)/n) points, 0.5 point at 50% over 10,000 ids, so a one-point
# tolerance would be two deviations and fail one population in twenty (P000000-P009999 give
# 48.96% at 50%). Over 40,000 ids one point is four deviations.
SHARE_POPULATIONS = pytest.mark.parametrize(
    "ids", [[f"P{number:06d}" for number in range(40_000)], UUID_IDS], ids=["dataset", "uuid"]
)

# Buckets computed once with this module's hash (the first 8 bytes of sha256, modulo 10,000),
# and checked against `printf P000000 | sha256sum`. They pin the hash: a change of hash function
# would move prospects between champion and challenger in the middle of a release, so it must
# fail here rather than pass silently.
PINNED_BUCKETS = {"P000000": 4345, "P000001": 5509, "P000002": 2118, "P000042": 562, "": 1652}


def canary(weight: float) -> RoutingConfig:
    return RoutingConfig(mode="canary", canary_weight=weight)


@SHARE_POPULATIONS
@pytest.mark.parametrize("weight", [1, 10, 12.5, 25, 50])
def test_canary_share_is_within_one_point_of_the_weight(ids: list[str], weight: float) -> None:
    # given 40,000 prospects and a canary of `weight` percent
    config = canary(weight)

    # when each is routed
    share = 100 * sum(route_for(each, config) == "challenger" for each in ids) / len(ids)

    # then the challenger's share is the weight, give or take one point
    assert abs(share - weight) <= 1.0, f"canary {weight}%: challenger shown to {share:.2f}%"


@POPULATIONS
def test_buckets_spread_evenly(ids: list[str]) -> None:
    buckets = [bucket(each) for each in ids]

    assert all(0 <= each < BUCKETS for each in buckets), "a bucket fell outside 0..9999"
    tenths = [sum(each * 10 // BUCKETS == tenth for each in buckets) for tenth in range(10)]
    assert all(900 <= count <= 1100 for count in tenths), f"uneven buckets per tenth: {tenths}"


def test_the_hash_is_pinned() -> None:
    found = {prospect_id: bucket(prospect_id) for prospect_id in PINNED_BUCKETS}

    assert found == PINNED_BUCKETS, "the routing hash changed: prospects would switch models"


def test_a_fresh_interpreter_gives_the_same_buckets() -> None:
    # given a new Python process, whose hash() salt differs from this one's
    code = (
        "from telescore.core.routing import bucket;"
        f"print(','.join(str(bucket(i)) for i in {DATASET_IDS[:50]!r}))"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter, our own code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    # then the buckets are those of this process
    expected = ",".join(str(bucket(each)) for each in DATASET_IDS[:50])
    assert result.stdout.strip() == expected, "buckets differ between processes: not sticky"


@POPULATIONS
def test_a_prospect_keeps_its_route_across_calls(ids: list[str]) -> None:
    config = canary(25)

    first = [route_for(each, config) for each in ids]
    again = [route_for(each, RoutingConfig(mode="canary", canary_weight=25)) for each in ids]

    assert first == again, "the same prospect got a different route on a second call"


@POPULATIONS
def test_raising_the_weight_only_moves_prospects_to_the_challenger(ids: list[str]) -> None:
    # given a canary raised step by step, fractional steps included
    weights = [0.01, 0.07, 1, 5, 10, 12.5, 25, 50, 75, 99.99]
    on_challenger = [
        {each for each in ids if route_for(each, canary(weight)) == "challenger"}
        for weight in weights
    ]

    # then every prospect on the challenger at one weight is still there at every higher one
    for (low, smaller), (high, larger) in pairwise(zip(weights, on_challenger, strict=True)):
        flipped_back = smaller - larger
        assert not flipped_back, f"{len(flipped_back)} prospects went back from {low}% to {high}%"
        assert len(larger) >= len(smaller), f"fewer on the challenger at {high}% than at {low}%"


def test_weights_apply_as_whole_buckets() -> None:
    # 0.07 * 100 is 7.000000000000001 in floating point: the canary must still be 7 buckets
    in_canary = sum(route_for(f"X{n}", canary(0.07)) == "challenger" for n in range(200_000))

    assert 100 <= in_canary <= 180, f"0.07% of 200,000 is 140 prospects, got {in_canary}"


@POPULATIONS
def test_shadow_shows_the_champion_to_everyone(ids: list[str]) -> None:
    config = RoutingConfig(mode="shadow", canary_weight=30)

    routes = {route_for(each, config) for each in ids}

    assert routes == {"champion"}, f"shadow mode showed {routes - {'champion'}}"
    assert shadowed(config), "in shadow mode the challenger must score every request"


@pytest.mark.parametrize("config", [RoutingConfig(), canary(50)], ids=["champion", "canary"])
def test_only_shadow_mode_shadows(config: RoutingConfig) -> None:
    assert not shadowed(config), f"{config.mode} mode must not score in the shadow"


def test_champion_mode_ignores_a_stored_weight() -> None:
    config = RoutingConfig(mode="champion", canary_weight=40)

    routes = {route_for(each, config) for each in DATASET_IDS}

    assert routes == {"champion"}, "champion mode routed prospects to the challenger"


def test_a_batch_splits_by_route_and_keeps_row_indices() -> None:
    # given a batch with the same prospect twice
    ids = [*DATASET_IDS[:300], DATASET_IDS[5]]
    config = canary(30)

    routes = split_batch(ids, config)

    # then every row is in exactly one list, in batch order, and follows route_for
    assert sorted(routes.champion + routes.challenger) == list(range(len(ids))), "rows lost"
    assert list(routes.challenger) == sorted(routes.challenger), "indices must stay in order"
    assert all(route_for(ids[index], config) == "challenger" for index in routes.challenger), (
        "a row in the challenger list is not routed to the challenger"
    )
    assert (5 in routes.challenger) == (len(ids) - 1 in routes.challenger), (
        "the same prospect twice in a batch got two routes"
    )
    assert routes.shadow == (), "no shadow scoring outside shadow mode"


def test_a_shadow_batch_is_answered_by_the_champion_and_scored_by_both() -> None:
    routes = split_batch(DATASET_IDS[:20], RoutingConfig(mode="shadow"))

    assert routes.champion == tuple(range(20)), "the champion must answer every row in shadow"
    assert routes.challenger == (), "the challenger's answer must never be shown in shadow"
    assert routes.shadow == tuple(range(20)), "the challenger must score every row in shadow"


def test_an_empty_batch_routes_nothing() -> None:
    routes = split_batch([], canary(50))

    assert routes.champion == routes.challenger == routes.shadow == (), "an empty batch"


@pytest.mark.parametrize("mode", ["canary", "shadow"])
def test_without_a_served_challenger_everything_goes_to_the_champion(mode: str) -> None:
    stored = RoutingConfig(
        mode=mode,
        canary_weight=50,
        revision=3,
        updated_at=datetime(2026, 5, 1, tzinfo=UTC),
        updated_by="ops",
    )

    applied = effective(stored, challenger_available=False)

    assert applied.mode == "champion", f"{mode} without a challenger must fall back to champion"
    assert {route_for(each, applied) for each in DATASET_IDS} == {"champion"}, "routed away"
    assert not shadowed(applied), "nothing may be scored in the shadow without a challenger"
    assert (applied.revision, applied.canary_weight) == (3, 50), "the stored revision is kept"


def test_with_a_served_challenger_the_stored_routing_applies() -> None:
    stored = canary(20)

    assert effective(stored, challenger_available=True) == stored, "routing changed"


def test_the_default_routing_is_champion_only() -> None:
    assert RoutingConfig().mode == "champion", "no routing set must mean champion only"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"mode": "canary", "canary_weight": 0}, "canary_weight"),
        ({"mode": "canary", "canary_weight": 100}, "canary_weight"),
        ({"mode": "canary", "canary_weight": 0.001}, "canary_weight"),
        ({"mode": "canary", "canary_weight": 150}, "canary_weight"),
        ({"mode": "champion", "canary_weight": -1}, "canary_weight"),
        ({"mode": "shadow", "canary_weight": float("nan")}, "canary_weight"),
        ({"mode": "blue-green"}, "mode"),
        ({"mode": "champion", "revision": 0}, "revision"),
        ({"mode": "champion", "updated_at": datetime(2026, 5, 1)}, "updated_at"),  # noqa: DTZ001
        ({"mode": "champion", "weight": 10}, "weight"),
    ],
)
def test_invalid_routings_are_refused_naming_the_field(
    fields: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        RoutingConfig.model_validate(fields)

    assert named in str(refused.value), f"the error must name {named}: {refused.value}"


def test_a_stored_document_validates() -> None:
    # what the app stores and reads back: form values may arrive as text
    config = RoutingConfig.model_validate(
        {"mode": "canary", "canary_weight": "12.5", "revision": 2, "updated_by": "ops"}
    )

    assert config.canary_weight == 12.5, "a weight sent as text must be read as a number"
