"""A release counts one outcome per prospect: a caller's repeated calls do not outweigh the rest."""

from __future__ import annotations

from typing import Any

import pandas as pd

from telescore.core.predictions import ID
from telescore.core.routing import RoutingConfig
from telescore.jobs.releases import GuardFigures, release_evidence, repeated_outcomes

CANARY = RoutingConfig(mode="canary", canary_weight=50.0)
NO_GUARDS = GuardFigures("serving_counters", {}, {"telemarketing": (1.0, 2.0)})


def _prediction(prediction_id: str, route: str, score: float, subscribed: bool) -> dict[str, Any]:
    return {
        ID: prediction_id,
        "route": route,
        "model_version": "1" if route == "champion" else "2",
        "request_id": f"request-{prediction_id}",
        "row": 0,
        "score": score,
        "latency_ms": 1.0,
        "subscribed": subscribed,
    }


def _call(prospect: str, prediction_id: str, result: str) -> dict[str, Any]:
    return {"prospect_id": prospect, "prediction_id": prediction_id, "result": result}


def test_a_prospect_labelled_again_and_again_counts_once() -> None:
    # given a canary where 2 prospects were called once on the champion, and a caller scored one
    # prospect 4 times on the challenger and recorded "subscribed" on each fresh prediction
    rows = [_prediction("c1", "champion", 0.2, False), _prediction("c2", "champion", 0.6, True)]
    calls = [_call("p1", "c1", "declined"), _call("p2", "c2", "subscribed")]
    for repeat in range(4):
        rows.append(_prediction(f"x{repeat}", "challenger", 0.9, True))
        calls.append(_call("p3", f"x{repeat}", "subscribed"))

    # when the release's evidence is built
    champion, challenger, paired = release_evidence(
        pd.DataFrame(rows), calls, NO_GUARDS, CANARY, "1", "2"
    )

    # then the challenger's arm holds one outcome of that prospect, not four
    assert not paired, "a canary is unpaired"
    assert challenger.labelled_rows == 1, f"one labelled row per prospect: {challenger}"
    assert (challenger.calls, challenger.subscriptions) == (1, 1), f"one call counts: {challenger}"
    assert champion.labelled_rows == 2, f"other prospects' first outcomes count: {champion}"


def test_a_call_with_no_answer_leaves_the_next_call_counted() -> None:
    # given a prospect not reached at first, then reached and declined, then labelled again
    calls = [
        _call("p1", "a", "no_answer"),
        _call("p1", "b", "declined"),
        _call("p1", "c", "subscribed"),
    ]
    # when the repeated outcomes are found / then only the one after the first outcome is
    assert repeated_outcomes(calls) == {"c"}, "the first answered call counts, later ones do not"
