"""Attacks on the app's edges: malformed forms, framing, sniffing, streamed bodies, made-up text.

Each of these failed on the app before issue 21 (500s, a 400, missing headers, attacker text
shown as an alert or a notice).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from tests.unit.app.conftest import FastApp, form_token, log_in

from telescore.app.headers import DOCS_POLICY, PAGE_POLICY
from telescore.core.access import API_KEY_HEADER

ATTACKER_TEXT = "Your account is locked: call +1 555 0100 now"


def _listed_row(html: str) -> tuple[str, str]:
    prospect = re.search(r'name="prospect_id" value="([^"]+)"', html)
    prediction = re.search(r'name="prediction_id" value="([^"]+)"', html)
    assert prospect and prediction, "the list should show a row with its ids"
    return prospect.group(1), prediction.group(1)


@pytest.mark.parametrize("result", ["subscribed", "declined"])
def test_a_malformed_prediction_id_on_the_call_form_is_a_422_naming_it(
    fast_app: FastApp, result: str
) -> None:
    # given a caller on the list, its form's token
    client = fast_app.client
    log_in(client, fast_app.caller_user)
    page = client.get("/").text
    prospect, _ = _listed_row(page)
    # when the form posts a prediction id that is not one
    answer = client.post(
        "/calls",
        data={
            "prospect_id": prospect,
            "prediction_id": "not-a-prediction-id",
            "result": result,
            "csrf_token": form_token(page),
        },
        follow_redirects=False,
    )
    # then it is refused as malformed, naming the field, and no call is stored
    assert answer.status_code == 422, f"malformed id should be a 422: {answer.status_code}"
    assert "prediction_id" in answer.text, f"the answer should name the field: {answer.text}"
    assert not fast_app.services.prospect_store.calls_of(prospect), "nothing should be stored"


@pytest.mark.parametrize(
    ("path", "policy"),
    [
        ("/login", PAGE_POLICY),
        ("/", PAGE_POLICY),
        ("/static/app.css", PAGE_POLICY),
        ("/prospects", PAGE_POLICY),
        ("/no-such-page", PAGE_POLICY),
        ("/docs", DOCS_POLICY),
    ],
)
def test_every_answer_carries_the_security_headers(
    fast_app: FastApp, path: str, policy: str
) -> None:
    # given the app / when any path is asked for, pages, assets, errors and the docs alike
    answer = fast_app.client.get(path, follow_redirects=False)
    # then the browser is told not to frame, sniff or leak it, and what it may load
    headers = answer.headers
    assert headers.get("content-security-policy") == policy, f"{path}: {headers}"
    assert "frame-ancestors 'none'" in policy, "no page may be framed"
    assert headers.get("x-frame-options") == "DENY", f"{path}: {headers}"
    assert headers.get("x-content-type-options") == "nosniff", f"{path}: {headers}"
    assert headers.get("referrer-policy") == "same-origin", f"{path}: {headers}"


def test_the_page_policy_fits_the_app_s_own_pages(fast_app: FastApp) -> None:
    # given a caller on the list, the page the policy must not break
    client = fast_app.client
    log_in(client, fast_app.caller_user)
    page = client.get("/").text
    # then it loads no script, and styles only from its own stylesheet and style attributes
    assert "<script" not in page, "the pages run no script: the policy allows none"
    assert "<style" not in page, "no inline style element: the policy allows none"
    assert re.findall(r'<link rel="stylesheet" href="([^"]+)"', page) == [
        "http://testserver/static/app.css"
    ], "one stylesheet, the app's own ('self')"


def test_a_streamed_body_over_the_limit_is_a_413(fast_app: FastApp) -> None:
    # given a body over the limit, sent in chunks without a declared length
    limit = fast_app.client.app.state.settings.api.max_body_bytes  # type: ignore[attr-defined]

    def chunks() -> Iterator[bytes]:
        yield b"["
        for _ in range(limit // 1000 + 2):
            yield b" " * 1000

    # when it is posted to the outcomes API
    answer = fast_app.client.post(
        "/outcomes/batch",
        content=chunks(),
        headers={API_KEY_HEADER: fast_app.caller_key, "content-type": "application/json"},
    )
    # then it is refused as too large, like a body whose length is declared
    assert answer.status_code == 413, f"a streamed big body: {answer.status_code} {answer.text}"


def test_the_login_page_shows_no_text_from_its_url(fast_app: FastApp) -> None:
    # given a link to the login page carrying a made-up message
    client = fast_app.client
    # when it is followed
    page = client.get("/login", params={"error": ATTACKER_TEXT})
    # then the text is not shown, and no alert at all
    assert ATTACKER_TEXT not in page.text, "the URL's text should never be shown"
    assert 'role="alert"' not in page.text, "an unknown error code shows no alert"
    # and a known code shows its own fixed sentence
    wrong = client.get("/login", params={"error": "wrong"})
    assert "Wrong user name or password." in wrong.text, wrong.text


def test_the_list_shows_no_notice_made_up_in_its_url(fast_app: FastApp) -> None:
    # given a caller logged in, following a link carrying a made-up notice
    client = fast_app.client
    log_in(client, fast_app.caller_user)
    page = client.get("/", params={"notice": ATTACKER_TEXT})
    # then the list is shown without it
    assert page.status_code == 200, page.text
    assert ATTACKER_TEXT not in page.text, "the URL's notice should not be shown"


def test_a_login_form_token_that_is_not_ascii_is_refused_not_a_500(fast_app: FastApp) -> None:
    # given the login form
    client = fast_app.client
    client.get("/login")
    # when it is posted with a token the app never issued, not ASCII
    answer = client.post(
        "/login",
        data={"username": fast_app.caller_user, "password": "whatever!!", "csrf_token": "é" * 8},
        follow_redirects=False,
    )
    # then it is refused as an expired form (tokens are compared as bytes, in constant time)
    assert answer.status_code == 303, f"should go back to the form: {answer.status_code}"
    assert answer.headers["location"] == "/login?error=expired", answer.headers


def test_the_call_form_cannot_label_another_prospect_s_prediction(fast_app: FastApp) -> None:
    # given a caller on the list, two rows of different jobs
    client = fast_app.client
    log_in(client, fast_app.caller_user)
    page = client.get("/").text
    rows = re.findall(
        r'name="prospect_id" value="([^"]+)".*?name="prediction_id" value="([^"]+)"', page, re.S
    )
    profiles = fast_app.services.prospect_store.get_many([prospect for prospect, _ in rows])
    first, shown = rows[0]
    other = next(
        prospect for prospect, _ in rows[1:] if profiles[prospect]["job"] != profiles[first]["job"]
    )
    # when the form records a subscription on `other`, citing `first`'s prediction
    answer = client.post(
        "/calls",
        data={
            "prospect_id": other,
            "prediction_id": shown,
            "result": "subscribed",
            "csrf_token": form_token(page),
        },
    )
    # then the page says it was not recorded, and nothing is stored
    assert "Not recorded" in answer.text and shown in answer.text, "the page should say why"
    assert fast_app.services.outcome_store.get(shown) is None, "no outcome should be stored"
    assert not fast_app.services.prospect_store.calls_of(other), "no call should be stored"
