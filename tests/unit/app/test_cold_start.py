"""With no model serving, the app says so plainly, and the callers keep working.

Scoring answers 503 with the reason; the call list is given unranked in a stated order, each
row logged unscored so that a call's outcome becomes a labelled training row.
"""

from __future__ import annotations

import html
import re

from tests.testdata.prospects import PROSPECT
from tests.unit.app.conftest import SEEDED_PROSPECTS, FastApp, log_in

from telescore.core.access import API_KEY_HEADER
from telescore.core.cold_start import RETRY_AFTER_SECONDS, ChampionRecord, unranked_order
from telescore.core.predictions import UNSERVED
from telescore.core.prospects import PROSPECT_FIELDS

NOT_YET = (
    "no model is serving yet: no training run has passed its gates; "
    "training is retried as labelled outcomes arrive"
)
PROFILE = {name: PROSPECT[name] for name in PROSPECT_FIELDS}
UNRANKED = (
    "no model is serving yet: prospects in a fixed shuffled order (the SHA-256 of their id), "
    "unranked; "
)
GONE = (
    "no model is serving: the registry has no champion any more (its alias or its version was "
    "removed); training is retried as labelled outcomes arrive"
)


def _no_champion(fast_app: FastApp, record: ChampionRecord | None) -> None:
    """MLServer serves no model, and the registry says `record`; seen from the next request."""
    fast_app.mlserver.serves_champion = False
    fast_app.registry.record = record
    fast_app.services.scoring.versions.forget()


def test_scoring_answers_503_saying_no_model_has_passed_its_gates_yet(fast_app: FastApp) -> None:
    # given MLServer with no model, and a registry where no version was ever registered
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=False))
    key = {API_KEY_HEADER: fast_app.caller_key}

    # when a client scores prospects by id or by profile (what exists to return scores)
    answers = {
        "by id": fast_app.client.post(
            "/prospects/score", json={"prospect_ids": ["P00001"]}, headers=key
        ),
        "by profile": fast_app.client.post(
            "/prospects/score-profiles", json={"profiles": [PROFILE]}, headers=key
        ),
    }

    # then each is a 503 with the reason in a sentence, and when to ask again
    for what, answer in answers.items():
        assert answer.status_code == 503, f"{what}: {answer.status_code} {answer.text}"
        assert answer.json() == {"detail": NOT_YET}, f"{what}: {answer.text}"
        assert answer.headers.get("retry-after") == str(RETRY_AFTER_SECONDS), (
            f"{what} should say when to retry: {dict(answer.headers)}"
        )
    assert fast_app.mlserver.scored_rows == 0, "nothing should have been scored"
    # and readiness says the same
    ready = fast_app.client.get("/ready")
    assert ready.status_code == 503 and ready.json()["detail"] == NOT_YET, ready.text


def test_the_list_is_given_unranked_each_row_logged_unscored_while_no_model_serves(
    fast_app: FastApp,
) -> None:
    # given MLServer with no model, and a registry where no version was ever registered
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=False))
    key = {API_KEY_HEADER: fast_app.caller_key}

    # when a client asks for the call list, twice
    answer = fast_app.client.get("/prospects", params={"page_size": 100}, headers=key)
    again = fast_app.client.get("/prospects", params={"page_size": 100}, headers=key)

    # then it is given, unranked, in the order the sentence states, with the reason
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["ranked"] is False, f"the list should say it is unranked: {body['ranked']}"
    assert body["notice"].startswith(UNRANKED), f"the sentence should state the order: {body}"
    assert NOT_YET.partition(": ")[2] in body["notice"], f"and why: {body['notice']}"
    listed = [each["prospect_id"] for each in body["prospects"]]
    every = [each["_id"] for each in fast_app.services.prospect_store.all_prospects()]
    assert body["total"] == len(every) == SEEDED_PROSPECTS, body["total"]
    assert listed == unranked_order(every)[:100], "the rows should be in the stated order"
    # and no row has a score; each cites a prediction logged unscored with its own inputs
    rows = body["prospects"]
    assert {(each["score"], each["route"], each["model_version"]) for each in rows} == {
        (None, UNSERVED, "")
    }, rows[:2]
    assert fast_app.mlserver.scored_rows == 0, "nothing should have been sent to MLServer"
    logged = {
        each["_id"]: each
        for each in fast_app.services.outcome_store.predictions.find(
            {"_id": {"$in": [row["prediction_id"] for row in rows]}}
        )
    }
    assert len(logged) == len(rows), "each row shown should be a logged prediction"
    for row in rows[:5]:
        document = logged[row["prediction_id"]]
        assert document["route"] == UNSERVED and document["score"] is None, document
        assert document["features"]["age"] == row["age"], "logged with this prospect's inputs"
        assert document["features"]["job"] == row["job"], "logged with this prospect's inputs"
    # and asked again the same day, the same list: the same ids, nothing logged again
    assert again.json()["prospects"] == rows, "the unranked list should be kept, not remade"
    assert fast_app.services.outcome_store.predictions.count_documents({}) == SEEDED_PROSPECTS, (
        "each prospect should be logged once for the day's list"
    )


def test_a_call_on_an_unranked_row_is_an_outcome_the_next_training_learns_from(
    fast_app: FastApp,
) -> None:
    # given the unranked list, while no model serves
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=False))
    key = {API_KEY_HEADER: fast_app.caller_key}
    row = fast_app.client.get("/prospects", headers=key).json()["prospects"][0]

    # when a caller records that the first prospect subscribed, citing the row's prediction
    stored = fast_app.client.post(
        f"/prospects/{row['prospect_id']}/calls",
        json={"prediction_id": row["prediction_id"], "result": "subscribed"},
        headers=key,
    )

    # then the outcome is recorded, and the training rows query reads it as a labelled row
    assert stored.status_code == 201, stored.text
    assert stored.json()["outcome_status"] == "recorded", stored.json()
    outcomes = fast_app.services.outcome_store
    rows = outcomes.latest_labelled(outcomes.count())
    assert rows["prediction_id"].tolist() == [row["prediction_id"]], rows
    assert rows["y"].tolist() == ["yes"] and rows["age"].tolist() == [row["age"]], rows
    # and the list shows the call
    listed = fast_app.client.get("/prospects", headers=key).json()["prospects"][0]
    assert listed["called"] and listed["last_result"] == "subscribed", listed


def test_the_list_is_ranked_once_a_champion_serves_and_unranked_again_once_none_does(
    fast_app: FastApp,
) -> None:
    # given the unranked list shown while no model serves
    key = {API_KEY_HEADER: fast_app.caller_key}
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=False))
    unranked = fast_app.client.get("/prospects", headers=key).json()

    # when MLServer serves a champion (the reconciler loaded the first one that passed)
    fast_app.mlserver.serves_champion = True
    fast_app.services.scoring.versions.forget()
    ranked = fast_app.client.get("/prospects", headers=key).json()

    # then the list is scored and ranked, best first, with new predictions of the champion
    assert ranked["ranked"] is True and ranked["notice"] is None, ranked["notice"]
    scores = [each["score"] for each in ranked["prospects"]]
    assert all(isinstance(each, float) for each in scores), scores
    assert scores == sorted(scores, reverse=True), "the ranked list should be best first"
    assert {each["route"] for each in ranked["prospects"]} == {"champion"}, ranked["prospects"]
    shown_before = {each["prediction_id"] for each in unranked["prospects"]}
    assert not shown_before & {each["prediction_id"] for each in ranked["prospects"]}, (
        "the unranked list must not be served as the ranked one"
    )

    # when the champion is gone again
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=True))
    gone = fast_app.client.get("/prospects", headers=key).json()

    # then the list is unranked again (the same day's unranked list), saying why
    assert gone["ranked"] is False and "no champion any more" in gone["notice"], gone["notice"]
    assert gone["prospects"] == unranked["prospects"], "the day's unranked list, as before"


def test_a_minimum_score_is_ignored_on_the_unranked_list_and_said(fast_app: FastApp) -> None:
    # given no model serving
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=False))
    # when a client asks for prospects scored at least 0.5
    answer = fast_app.client.get(
        "/prospects", params={"min_score": 0.5}, headers={API_KEY_HEADER: fast_app.caller_key}
    ).json()
    # then every prospect is listed all the same, and the notice says the filter is ignored
    assert answer["total"] == SEEDED_PROSPECTS, "nothing is scored: the filter cannot apply"
    assert "minimum score filter is ignored" in answer["notice"], answer["notice"]


def test_the_page_lists_prospects_unranked_under_a_banner_and_ranked_once_a_model_serves(
    fast_app: FastApp,
) -> None:
    # given a caller logged in, and the champion's alias removed from the registry
    client = fast_app.client
    log_in(client, fast_app.caller_user)
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=True))

    # when the caller opens the call list
    page = client.get("/")

    # then the page says, in a banner, that the list is unranked, in which order, and why
    assert page.status_code == 200, page.text
    banner = re.search(r'<p class="banner" role="status">([^<]+)</p>', page.text)
    assert banner is not None, f"the page should carry a banner: {page.text[:2000]}"
    text = html.unescape(banner.group(1))
    assert text.startswith("No model is serving: " + UNRANKED.partition(": ")[2]), (
        f"the banner should state the order: {text}"
    )
    assert GONE.partition(": ")[2] in text, f"the banner should give the reason: {text}"
    # and the prospects can be called, each citing its logged prediction, with no score shown
    assert 'name="prediction_id"' in page.text, "the prospects should be callable"
    assert "unranked · page 1" in page.text, "the count line should not say best first"
    assert 'title="no model is serving: not scored">—</td>' in page.text, "no score shown"

    # when MLServer serves a champion again (the reconciler loaded it)
    fast_app.mlserver.serves_champion = True
    fast_app.services.scoring.versions.forget()
    again = client.get("/")

    # then the banner is gone and the list is ranked
    assert again.status_code == 200, again.text
    assert 'class="banner"' not in again.text, "the banner should go once a model serves"
    assert "best first · page 1" in again.text, "the ranked list should be shown again"


def test_a_champion_that_mlserver_has_not_loaded_is_named(fast_app: FastApp) -> None:
    # given the registry's champion version 9, which MLServer does not serve (failing to load)
    _no_champion(fast_app, ChampionRecord(champion="9", versions_registered=True))
    key = {API_KEY_HEADER: fast_app.caller_key}
    # when a client scores a prospect, and asks for the list
    answer = fast_app.client.post(
        "/prospects/score", json={"prospect_ids": ["P00001"]}, headers=key
    )
    listed = fast_app.client.get("/prospects", headers=key)
    # then the 503, and the unranked list's notice, name the version and where to look
    assert answer.status_code == 503, answer.text
    for detail in (answer.json()["detail"], listed.json()["notice"]):
        assert "champion version 9 is not loaded by MLServer" in detail, detail
        assert "reconciler's log" in detail, detail


def test_an_unanswering_registry_is_said_too(fast_app: FastApp) -> None:
    # given no model served and MLflow not answering
    _no_champion(fast_app, None)
    key = {API_KEY_HEADER: fast_app.caller_key}
    # when a client scores a prospect, and asks for the list / then both say so
    answer = fast_app.client.post(
        "/prospects/score", json={"prospect_ids": ["P00001"]}, headers=key
    )
    listed = fast_app.client.get("/prospects", headers=key)
    assert answer.status_code == 503, answer.text
    assert "the registry (MLflow) does not answer" in answer.json()["detail"], answer.text
    assert "the registry (MLflow) does not answer" in listed.json()["notice"], listed.text
