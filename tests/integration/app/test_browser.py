"""The callers' page in a real browser: headless Chromium (Playwright) on the app under uvicorn.

The app runs as its own process, as in production, on the session's MLServer, nx-27017 and
MLflow. Playwright drives Debian's `chromium` (it cannot download its own browsers here).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from itsdangerous import URLSafeTimedSerializer
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    expect,
    sync_playwright,
)
from tests.integration.app.conftest import PASSWORD, Keys
from tests.integration.serving_fixtures import MAX_ROWS, REGISTERED_MODEL, ServedMLServer

from telescore.app.security import SESSION_COOKIE
from telescore.services.embedded import outcomes_api
from telescore.services.processes import free_port

pytestmark = pytest.mark.integration

CHROMIUM_MISSING: Final = (
    "Chromium is missing: install Debian's chromium package "
    "(`make tools` or `apt-get install chromium`)"
)
CHROMIUM_ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    # The machine's network is closed: no background connections for chromium to be refused.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
SCORING_MS: Final = 90_000
"""A page that scores the whole list (3000 prospects through MLServer) on two busy cores."""
STEP_MS: Final = 30_000
"""Any other page view."""
SCREENSHOTS: Final = Path(__file__).resolve().parents[3] / "reports" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser | None]:
    """Headless Debian Chromium; None if it is missing (each test then fails, naming the fix)."""
    executable = shutil.which("chromium")
    if executable is None:
        yield None
        return
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=list(CHROMIUM_ARGS)
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def app_url(
    tmp_path_factory: pytest.TempPathFactory,
    mlserver: ServedMLServer,
    mlflow_tracking_uri: str,
    seeded: int,
) -> Iterator[str]:
    """The app under uvicorn, a process of its own on a free port, configured by environment."""
    state_dir = tmp_path_factory.mktemp("browser-app")
    port = free_port()
    env = {
        "TELESCORE_ENVIRONMENT": "development",
        "TELESCORE_STATE_DIR": str(state_dir),
        "TELESCORE_MONGODB_URI": mlserver.mongodb_uri,
        "TELESCORE_MONGODB_DATABASE": mlserver.database,
        "TELESCORE_SERVING_URL": mlserver.rest_url,
        "TELESCORE_MLFLOW_TRACKING_URI": mlflow_tracking_uri,
        "TELESCORE_MLFLOW_MODEL_NAME": REGISTERED_MODEL,
        "TELESCORE_API_BATCH_ROWS": str(MAX_ROWS),
        # No developer's .env: the named file does not exist.
        "TELESCORE_ENV_FILE": str(state_dir / "no.env"),
    }
    with outcomes_api(state_dir, port, env=env).running():
        yield f"http://127.0.0.1:{port}"


class Pages:
    """Opens pages on the app, each in a fresh browser context (no cookies); closes them all."""

    def __init__(self, browser: Browser | None, app_url: str) -> None:
        self._browser = browser
        self._app_url = app_url
        self._contexts: list[BrowserContext] = []

    def open(self, session_cookie: str | None = None) -> Page:
        """Return a new page, holding this session cookie if given; fail if chromium is missing."""
        if self._browser is None:
            pytest.fail(CHROMIUM_MISSING, pytrace=False)
        context = self._browser.new_context(base_url=self._app_url)
        self._contexts.append(context)
        context.set_default_timeout(STEP_MS)
        if session_cookie is not None:
            context.add_cookies(
                [{"name": SESSION_COOKIE, "value": session_cookie, "url": self._app_url}]
            )
        return context.new_page()

    def close(self) -> None:
        """Close every context opened."""
        for context in self._contexts:
            context.close()


@pytest.fixture
def pages(browser: Browser | None, app_url: str) -> Iterator[Pages]:
    """Pages on the app under uvicorn, closed after the test."""
    opened = Pages(browser, app_url)
    yield opened
    opened.close()


def _log_in(page: Page, app_url: str, user: str) -> None:
    page.goto("/login")
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{app_url}/", timeout=SCORING_MS)
    expect(page.locator("table.prospects"), "the ranked list after logging in").to_be_visible(
        timeout=SCORING_MS
    )
    page.wait_for_load_state()


def _scores(page: Page) -> list[float]:
    texts = page.locator("table.prospects tbody td.score").all_inner_texts()
    return [float(text.strip().rstrip("%")) for text in texts]


def _keep_screenshot(page: Page, tmp_path: Path, record_property: pytest.RecordProperty) -> Path:
    """Save the page into tmp_path (and reports/screenshots/ if it exists); report the path."""
    path = tmp_path / "prospects.png"
    page.screenshot(path=path, full_page=True)
    record_property("screenshot", str(path))
    print(f"screenshot of the ranked list: {path}")
    if SCREENSHOTS.is_dir():
        kept = SCREENSHOTS / "prospects.png"
        shutil.copyfile(path, kept)
        record_property("screenshot_kept", str(kept))
        print(f"screenshot kept: {kept}")
    return path


def test_a_caller_logs_in_ranks_filters_records_a_call_and_logs_out(
    pages: Pages,
    app_url: str,
    keys: Keys,
    seeded: int,
    tmp_path: Path,
    record_property: pytest.RecordProperty,
) -> None:
    # given a caller who is not logged in: the list sends them to the login page
    page = pages.open()
    # (the app's security headers must fit its own pages: the browser reports what they block)
    blocked: list[str] = []
    page.on(
        "console",
        lambda message: (
            blocked.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    page.goto("/")
    expect(page, "the list needs a session").to_have_url(f"{app_url}/login")

    # when they log in
    _log_in(page, app_url, keys.caller_user)

    # then every prospect is on the list, best first, and the caller is named
    expect(page.locator("p.count")).to_contain_text(f"{seeded} prospects, best first")
    expect(page.locator("header .who")).to_have_text(f"{keys.caller_user} (caller)")
    scores = _scores(page)
    assert len(scores) == 25, f"a full first page should show, got {len(scores)} rows"
    assert scores == sorted(scores, reverse=True), f"the page should be best first: {scores}"
    screenshot = _keep_screenshot(page, tmp_path, record_property)
    assert screenshot.stat().st_size > 10_000, "the screenshot should hold the rendered list"

    # when they show one job's prospects not yet called (the job of the best prospect)
    job = page.locator("table.prospects tbody tr").first.locator("td").nth(4).inner_text()
    page.get_by_label("Job").select_option(job)
    page.get_by_label("Not yet called").check()
    page.get_by_role("button", name="Show").click()

    # then only that job's prospects show, none called, still best first, the filters kept
    expect(page).to_have_url(re.compile(r"/\?.*not_called=true"))
    page.wait_for_load_state()  # the whole table, before reading every row
    rows = page.locator("table.prospects tbody tr")
    expect(rows.first, f"some {job} prospects should not be called yet").to_be_visible()
    jobs = page.locator("table.prospects tbody tr td:nth-child(5)").all_inner_texts()
    assert set(jobs) == {job}, f"only {job} prospects should show: {jobs}"
    expect(page.locator("table.prospects tbody tr.called"), "no called row").to_have_count(0)
    filtered = _scores(page)
    assert filtered == sorted(filtered, reverse=True), f"filtered should be best first: {filtered}"
    expect(page.get_by_label("Job")).to_have_value(job)
    expect(page.get_by_label("Not yet called")).to_be_checked()

    # when they record that the first of them subscribed
    first = rows.first
    prospect_id = first.get_attribute("data-prospect")
    assert prospect_id, "each row should name its prospect"
    first.get_by_role("button", name="Subscribed").click()

    # then the page says so, keeps the filters, and the prospect has left the not-called list
    notice = page.locator("p.notice")
    expect(notice, "the call should be confirmed").to_have_text(
        f"{prospect_id}: subscribed recorded."
    )
    expect(page.locator("p.error")).to_have_count(0)
    expect(page.get_by_label("Job")).to_have_value(job)
    expect(page.get_by_label("Not yet called")).to_be_checked()
    expect(
        page.locator(f'tr[data-prospect="{prospect_id}"]'),
        "a called prospect should leave the not-yet-called list",
    ).to_have_count(0)

    # when they show that job's prospects, called or not
    page.get_by_label("Not yet called").uncheck()
    page.get_by_role("button", name="Show").click()

    # then the prospect shows as called, subscribed, with no call buttons
    expect(page).not_to_have_url(re.compile(r"not_called"))
    called = page.locator(f'tr[data-prospect="{prospect_id}"]')
    expect(called, f"{prospect_id} should be on the first page of {job} prospects").to_have_count(1)
    expect(called).to_have_class(re.compile(r"\bcalled\b"))
    expect(called.locator("td.call")).to_have_text("subscribed")
    expect(called.get_by_role("button", name="Subscribed")).to_have_count(0)

    # when they log out
    page.get_by_role("button", name="Log out").click()

    # then they are back at the login page, and the list sends them there again
    expect(page).to_have_url(f"{app_url}/login")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert not [c for c in page.context.cookies() if c["name"] == SESSION_COOKIE], (
        "logging out should drop the session cookie"
    )
    page.goto("/")
    expect(page, "the list needs a session again").to_have_url(f"{app_url}/login")
    assert not blocked, f"the Content-Security-Policy blocked parts of the pages: {blocked}"


def _tampered(genuine: str, user: str) -> str:
    """The genuine cookie's signature on another payload: an ops session for `user`."""
    _, timestamp, signature = genuine.rsplit(".", 2)
    payload = json.dumps({"u": user, "r": "ops", "c": "forged"}, separators=(",", ":"))
    encoded = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    return f"{encoded}.{timestamp}.{signature}"


def test_a_forged_session_cookie_is_sent_to_the_login_page(
    pages: Pages, app_url: str, keys: Keys
) -> None:
    # given a genuine session, to forge from
    page = pages.open()
    _log_in(page, app_url, keys.caller_user)
    genuine = next(c["value"] for c in page.context.cookies() if c["name"] == SESSION_COOKIE)
    forged = {
        "random": secrets.token_urlsafe(48),
        "signed with another key": URLSafeTimedSerializer(
            secrets.token_urlsafe(48), salt="telescore-session"
        ).dumps({"u": keys.ops_user, "r": "ops", "c": "forged"}),
        "genuine signature, payload changed": _tampered(genuine, keys.ops_user),
    }
    for kind, value in forged.items():
        # when a browser holding only the forged cookie opens the list
        forger = pages.open(session_cookie=value)
        forger.goto("/")
        # then it is sent to log in, and sees no list
        expect(forger, f"a cookie {kind} should not open a session").to_have_url(f"{app_url}/login")
        expect(forger.get_by_role("heading", name="Log in")).to_be_visible()
        expect(forger.locator("table.prospects")).to_have_count(0)
