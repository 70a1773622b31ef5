"""With no model serving, the app says so plainly: a 503 with the reason, a banner on the page."""

from __future__ import annotations

import re

from tests.testdata.prospects import PROSPECT
from tests.unit.app.conftest import FastApp, log_in

from telescore.core.access import API_KEY_HEADER
from telescore.core.cold_start import RETRY_AFTER_SECONDS, ChampionRecord
from telescore.core.prospects import PROSPECT_FIELDS

NOT_YET = (
    "no model is serving yet: no training run has passed its gates; "
    "training is retried as labelled outcomes arrive"
)
PROFILE = {name: PROSPECT[name] for name in PROSPECT_FIELDS}
GONE = (
    "no model is serving: the registry has no champion any more (its alias or its version was "
    "removed); training is retried as labelled outcomes arrive"
)


def _no_champion(fast_app: FastApp, record: ChampionRecord | None) -> None:
    """MLServer serves no model, and the registry says `record`; seen from the next request."""
    fast_app.mlserver.serves_champion = False
    fast_app.registry.record = record
    fast_app.services.scoring.versions.forget()


def test_the_api_answers_503_saying_no_model_has_passed_its_gates_yet(fast_app: FastApp) -> None:
    # given MLServer with no model, and a registry where no version was ever registered
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=False))
    key = {API_KEY_HEADER: fast_app.caller_key}

    # when a client asks for the ranked list, or scores prospects by id or by profile
    answers = {
        "list": fast_app.client.get("/prospects", headers=key),
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


def test_the_page_shows_a_banner_while_no_model_serves_and_the_list_once_one_does(
    fast_app: FastApp,
) -> None:
    # given a caller logged in, and the champion's alias removed from the registry
    client = fast_app.client
    log_in(client, fast_app.caller_user)
    _no_champion(fast_app, ChampionRecord(champion=None, versions_registered=True))

    # when the caller opens the call list
    page = client.get("/")

    # then the page says why nothing is ranked, in a banner, and lists no prospect
    assert page.status_code == 503, page.text
    assert page.headers.get("retry-after") == str(RETRY_AFTER_SECONDS), dict(page.headers)
    banner = re.search(r'<p class="banner" role="alert">([^<]+)</p>', page.text)
    assert banner is not None, f"the page should carry a banner: {page.text[:2000]}"
    assert GONE in banner.group(1), f"the banner should give the reason: {banner.group(1)}"
    assert 'name="prediction_id"' not in page.text, "no prospect can be called from a banner"

    # when MLServer serves a champion again (the reconciler loaded it)
    fast_app.mlserver.serves_champion = True
    fast_app.services.scoring.versions.forget()
    again = client.get("/")

    # then the banner is gone and the list is back
    assert again.status_code == 200, again.text
    assert 'class="banner"' not in again.text, "the banner should go once a model serves"
    assert 'name="prediction_id"' in again.text, "the ranked list should be shown again"


def test_a_champion_that_mlserver_has_not_loaded_is_named(fast_app: FastApp) -> None:
    # given the registry's champion version 9, which MLServer does not serve (failing to load)
    _no_champion(fast_app, ChampionRecord(champion="9", versions_registered=True))
    # when a client asks for the list
    answer = fast_app.client.get("/prospects", headers={API_KEY_HEADER: fast_app.caller_key})
    # then the 503 names the version and where to look
    assert answer.status_code == 503, answer.text
    detail = answer.json()["detail"]
    assert "champion version 9 is not loaded by MLServer" in detail, detail
    assert "reconciler's log" in detail, detail


def test_an_unanswering_registry_is_said_too(fast_app: FastApp) -> None:
    # given no model served and MLflow not answering
    _no_champion(fast_app, None)
    # when a client asks for the list / then the 503 says both
    answer = fast_app.client.get("/prospects", headers={API_KEY_HEADER: fast_app.caller_key})
    assert answer.status_code == 503, answer.text
    assert "the registry (MLflow) does not answer" in answer.json()["detail"], answer.text
