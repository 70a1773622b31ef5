"""The callers' page without a browser: login with CSRF, the list, a call, forged cookies."""

from __future__ import annotations

import re

import httpx
from tests.unit.app.conftest import FastApp, fake_score, form_token, log_in

from telescore.app.errors import MLSERVER_UNREACHABLE
from telescore.app.security import SESSION_COOKIE


def test_a_caller_logs_in_sees_the_list_and_records_a_call(fast_app: FastApp) -> None:
    # given a caller logged in, on the list
    client = fast_app.client
    log_in(client, fast_app.caller_user)
    listed = client.get("/")
    assert listed.status_code == 200, listed.text
    page = listed.text
    prospect = re.search(r'name="prospect_id" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    prediction = re.search(r'name="prediction_id" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    scores = [float(s) for s in re.findall(r"</span>([0-9.]+)%</td>", page)]
    assert scores and scores == sorted(scores, reverse=True), "the page should list best first"
    [profile] = fast_app.services.prospect_store.get_many([prospect]).values()
    assert scores[0] == round(fake_score(profile) * 100, 1), "the first row is the best one"

    # when a form without the session's token posts a call / then it is refused, none stored
    forged = client.post(
        "/calls",
        data={
            "prospect_id": prospect,
            "prediction_id": prediction,
            "result": "declined",
            "csrf_token": "not-the-token",
        },
        follow_redirects=False,
    )
    assert forged.status_code == 403, forged.text
    assert not fast_app.services.prospect_store.calls_of(prospect), "nothing should be stored"

    # when the page's own form posts it / then the call is stored, and the list shows it
    done = client.post(
        "/calls",
        data={
            "prospect_id": prospect,
            "prediction_id": prediction,
            "result": "no_answer",
            "csrf_token": form_token(page),
        },
    )
    assert f"{prospect}: no answer recorded." in done.text, "the notice should confirm the call"
    assert 'class="result no_answer"' in done.text, "the row should show the call's result"
    assert len(fast_app.services.prospect_store.calls_of(prospect)) == 1, "one call stored"


def test_a_forged_or_missing_session_goes_to_the_login(fast_app: FastApp) -> None:
    # given no session cookie / when the list is asked for / then the login is shown instead
    client = fast_app.client
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    # given a session cookie not signed by the app / when the list is asked for
    client.cookies.set(SESSION_COOKIE, "eyJ1IjoiYWRtaW4iLCJyIjoib3BzIn0.forged.signature")
    answer = client.get("/", follow_redirects=False)
    # then it goes to the login too
    assert answer.status_code == 303 and answer.headers["location"] == "/login", answer.text


def test_a_wrong_password_is_refused_without_saying_which_part(fast_app: FastApp) -> None:
    # given the login form of a known user
    client = fast_app.client
    form = client.get("/login")
    # when the password is wrong
    answer = client.post(
        "/login",
        data={
            "username": fast_app.caller_user,
            "password": "wrong password!",
            "csrf_token": form_token(form.text),
        },
    )
    # then the form says so without telling which part was wrong, and no session is opened
    assert "Wrong user name or password." in answer.text, answer.text
    assert client.get("/", follow_redirects=False).status_code == 303, "no session was opened"


def test_the_page_says_when_mlserver_is_unreachable(fast_app: FastApp) -> None:
    # given a caller logged in, and MLServer unreachable before the list was ever scored
    client = fast_app.client
    log_in(client, fast_app.caller_user)
    fast_app.mlserver.failure = httpx.ConnectError("connection refused")
    # when the list is asked for
    page = client.get("/")
    # then the page answers 503 and says what is wrong, with no list
    assert page.status_code == 503, page.text
    assert MLSERVER_UNREACHABLE in page.text, "the page should name MLServer"
    assert 'name="prediction_id"' not in page.text, "no row can be shown unscored"
