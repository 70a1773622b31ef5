"""`/metrics`: the app's requests, failed logins and outcomes, for the scraper's token alone."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from tests.unit.app.conftest import FastApp, form_token

from telescore.app.metrics import UNMATCHED_ROUTE
from telescore.core.access import API_KEY_HEADER
from telescore.services.prometheus import metrics_token_file

PREDICTION_ID = "0190a5e5-6b1e-7000-8000-000000000000"


def _token(fast_app: FastApp) -> str:
    settings = fast_app.client.app.state.settings  # type: ignore[attr-defined]
    return metrics_token_file(settings.project.state_dir).read_text().strip()


def _samples(fast_app: FastApp) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Scrape /metrics with the token; return each sample's value by (name, labels)."""
    answer = fast_app.client.get(
        "/metrics", headers={"Authorization": f"Bearer {_token(fast_app)}"}
    )
    assert answer.status_code == 200, f"the scrape with the token: {answer.status_code}"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def _requests(samples: dict, route: str, method: str, status: str) -> float:
    labels = frozenset({"route": route, "method": method, "status": status}.items())
    return samples.get(("telescore_app_requests_total", labels), 0.0)


def test_metrics_refuse_a_missing_or_wrong_token(fast_app: FastApp) -> None:
    # given the app, and a token that is not its metrics token
    client = fast_app.client
    # when /metrics is asked without a token, with a wrong one, and with an API key
    answers = {
        "no token": client.get("/metrics"),
        "a wrong token": client.get("/metrics", headers={"Authorization": "Bearer not-it"}),
        "a non-ASCII token": client.get(
            "/metrics", headers={"Authorization": "Bearer ünïcode".encode()}
        ),
        "an ops API key": client.get("/metrics", headers={API_KEY_HEADER: fast_app.ops_key}),
    }
    # then each is refused with 401 and says it wants a bearer token, showing no metric
    for case, answer in answers.items():
        assert answer.status_code == 401, f"{case}: {answer.status_code}"
        assert answer.headers.get("www-authenticate") == "Bearer", f"{case}: {answer.headers}"
        assert "telescore_app" not in answer.text, f"{case}: metrics shown"
    # and the token itself is let in
    assert ("telescore_app_failed_logins_total", frozenset()) in _samples(fast_app), (
        "the scrape with the token should show the failed logins from 0"
    )


def test_requests_are_counted_under_their_route_template(fast_app: FastApp) -> None:
    # given the counts before
    before = _samples(fast_app)
    # when an outcome is read by its id (none is recorded: 404), and an unknown path is asked
    read = fast_app.client.get(
        f"/outcomes/{PREDICTION_ID}", headers={API_KEY_HEADER: fast_app.ops_key}
    )
    assert read.status_code == 404, f"reading an unrecorded outcome: {read.status_code}"
    unknown = fast_app.client.get(f"/no/such/path/{PREDICTION_ID}")
    assert unknown.status_code == 404, f"an unknown path: {unknown.status_code}"
    after = _samples(fast_app)
    # then the read is counted once under the route's template, never under its URL
    template = "/outcomes/{prediction_id}"
    counted = _requests(after, template, "GET", "404") - _requests(before, template, "GET", "404")
    assert counted == 1, f"requests counted under {template}: {counted}"
    assert not any(PREDICTION_ID in str(labels) for _, labels in after), "a raw path is a label"
    # and its time is in the histogram under the same template
    duration = (
        "telescore_app_request_duration_seconds_count",
        frozenset({"route": template, "method": "GET"}.items()),
    )
    assert after.get(duration, 0) >= 1, "the request's duration was not observed"
    # and the unknown path is counted under the one label for unmatched paths
    unmatched = _requests(after, UNMATCHED_ROUTE, "GET", "404")
    assert unmatched - _requests(before, UNMATCHED_ROUTE, "GET", "404") == 1, "unmatched path"


def test_failed_logins_are_counted(fast_app: FastApp) -> None:
    # given the failed logins counted so far
    failed = ("telescore_app_failed_logins_total", frozenset())
    before = _samples(fast_app)[failed]
    client = fast_app.client
    # when a wrong password is tried on the login page
    form = client.get("/login")
    wrong = client.post(
        "/login",
        data={
            "username": fast_app.caller_user,
            "password": "not the password",
            "csrf_token": form_token(form.text),
        },
        follow_redirects=False,
    )
    assert wrong.headers["location"] == "/login?error=wrong", f"the wrong password: {wrong}"
    # and a wrong API key is offered, and a request comes with no key at all
    refused = client.get("/prospects", headers={API_KEY_HEADER: "not-a-key"})
    assert refused.status_code == 401, f"a wrong API key: {refused.status_code}"
    anonymous = client.get("/prospects")
    assert anonymous.status_code == 401, f"no API key: {anonymous.status_code}"
    # then the wrong password and the wrong key count, the missing key does not
    after = _samples(fast_app)[failed]
    assert after - before == 2, f"failed logins counted: {after - before}"
