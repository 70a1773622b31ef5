"""The callers' page without a browser: login with CSRF, the list, a call, forged cookies."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from tests.integration.app.conftest import PASSWORD, Keys

from telescore.app.security import SESSION_COOKIE

pytestmark = pytest.mark.integration


def _token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "every form should carry a CSRF token"
    return match.group(1)


def _log_in(client: TestClient, user: str) -> str:
    form = client.get("/login")
    answer = client.post(
        "/login",
        data={"username": user, "password": PASSWORD, "csrf_token": _token(form.text)},
        follow_redirects=False,
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/", answer.text
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie, f"session cookie flags: {cookie}"
    page = client.get("/")
    assert page.status_code == 200, page.text
    return page.text


def test_a_caller_logs_in_sees_the_list_and_records_a_call(client: TestClient, keys: Keys) -> None:
    page = _log_in(client, keys.caller_user)
    prospect = re.search(r'name="prospect_id" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    prediction = re.search(r'name="prediction_id" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    scores = [float(s) for s in re.findall(r"</span>([0-9.]+)%</td>", page)]
    assert scores and scores == sorted(scores, reverse=True), "the page should list best first"

    # a form without the session's token is refused, and nothing is recorded
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

    done = client.post(
        "/calls",
        data={
            "prospect_id": prospect,
            "prediction_id": prediction,
            "result": "no_answer",
            "csrf_token": _token(page),
        },
    )
    assert f"{prospect}: no answer recorded." in done.text, "the notice should confirm the call"
    assert 'class="result no_answer"' in done.text, "the row should show the call's result"


def test_a_forged_or_missing_session_goes_to_the_login(client: TestClient) -> None:
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    client.cookies.set(SESSION_COOKIE, "eyJ1IjoiYWRtaW4iLCJyIjoib3BzIn0.forged.signature")
    answer = client.get("/", follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"] == "/login", answer.text


def test_a_wrong_password_is_refused_without_saying_which_part(
    client: TestClient, keys: Keys
) -> None:
    form = client.get("/login")
    answer = client.post(
        "/login",
        data={
            "username": keys.caller_user,
            "password": "wrong password!",
            "csrf_token": _token(form.text),
        },
    )
    assert "Wrong user name or password." in answer.text, answer.text
    assert client.get("/", follow_redirects=False).status_code == 303, "no session was opened"
