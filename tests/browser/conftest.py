"""Browser journeys: Playwright for Python driving Debian's Chromium against `live_server`.

No browser is ever downloaded: the journeys use /usr/bin/chromium (`apt-get install
chromium`). Without it, or without the `playwright` package, they are skipped with the
reason, unless KMS_REQUIRE_BROWSER=1 (CI sets it), which makes that a failure: the journeys
can never skip silently there.

Every journey test is marked `django_db(transaction=True, serialized_rollback=True)` like
every live-server test here (see `_audit_tables_flushable` in tests/conftest.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REQUIRE_BROWSER = os.environ.get("KMS_REQUIRE_BROWSER") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"{reason} (KMS_REQUIRE_BROWSER=1: the browser journeys must run)")
    pytest.skip(reason)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Keep each phase's report on the test item, so a fixture can tell that it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def browser(transactional_db) -> Iterator[object]:
    """Chromium for one journey (starting Playwright and Chromium takes about half a second).

    Not shared between tests, on purpose. Playwright's sync API keeps an asyncio event loop
    running in this thread while it is started, and with a running loop Django changes
    behaviour in two ways:
    - it refuses ORM calls from this thread (SynchronousOnlyOperation). Nothing here is
      asynchronous (the loop only carries Playwright's messages), so DJANGO_ALLOW_ASYNC_UNSAFE
      is set while Playwright runs: the journeys read the database from the test thread;
    - its connections are no longer per thread but per context, so the ORM calls meanwhile
      get connections of their own, not the test database connection that pytest-django set
      up. A browser that outlived one test would keep that state across the next test's
      database setup, which then cannot restore the serialized contents
      (`serialized_rollback`): the role groups would be gone. So Playwright starts after the
      test's database is ready (this fixture depends on it), and its own connections are
      closed and Playwright stopped before the database is flushed.
    """
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (see requirements-dev.txt)")
    if not (CHROMIUM.exists() and os.access(CHROMIUM, os.X_OK)):
        _unavailable(f"{CHROMIUM} is missing: apt-get install chromium (never a downloaded one)")
    from django.db import connections

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    playwright = sync_playwright().start()
    try:
        # Chromium's sandbox cannot start as root (containers, CI): only then without it.
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        try:
            launched = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=args
            )
        except Error as exc:
            _unavailable(f"{CHROMIUM} does not start: {exc.message.splitlines()[0]}")
        yield launched
        launched.close()
    finally:
        connections.close_all()  # the connections opened while the loop ran (see above)
        playwright.stop()
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def live_settings(live_server, settings) -> str:
    """Settings for a journey: certificates name the live server in their CRL distribution
    points and AIA, so what the browser downloads is what relying parties would fetch."""
    settings.KMS_PUBLIC_URL = live_server.url
    settings.KMS_IDENTITY_CA_KEY_TYPE = "ecp256"
    return live_server.url


@pytest.fixture
def page(browser, live_settings: str) -> Iterator[object]:
    """A fresh browser context (no cookies) with a 1280x800 page on the live server."""
    from tests.browser.journeys import DESKTOP

    context = browser.new_context(base_url=live_settings, viewport=DESKTOP, accept_downloads=True)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def journey(request: pytest.FixtureRequest, browser, page, live_settings: str) -> Iterator[object]:
    """The test's journey (named after the test: `test_key_custodian` → `key_custodian`).

    On failure it adds screenshots of what the pages show at that moment; nothing is ever
    deleted afterwards.
    """
    from tests.browser.journeys import Journey

    name = request.node.name.removeprefix("test_")
    journey = Journey(name=name, browser=browser, page=page, base_url=live_settings)
    yield journey
    report = getattr(request.node, "report_call", None)
    if report is None or report.failed:
        journey.failure_shots()
    journey.close_phone()
