"""What every browser journey does: numbered full-page screenshots, sign-in with MFA like a
person with an authenticator app, and the phone checks.

A `Journey` drives one desktop page (1280x800) and, when a step asks for it, a phone page
(390x844, mobile emulation) that shares the desktop page's session. Screenshots go to
`test-artifacts/browser/<journey>/<NN>-<step>-<viewport>.png`; the folder is emptied when the
journey starts and never at its end, so a failed run keeps every step it reached.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest

from tests.factories import TEST_PASSWORD, totp_code

try:
    from playwright.sync_api import Browser, Download, Locator, Page, expect
except ImportError:  # every journey module imports this one: they are all skipped, with why
    if os.environ.get("KMS_REQUIRE_BROWSER") == "1":
        raise
    pytest.skip(
        "the playwright package is not installed (see requirements-dev.txt)",
        allow_module_level=True,
    )

__all__ = ["Journey", "expect"]

# Assertions wait up to 10 s for the page to get there (2 shared cores can be slow), not 5.
expect.set_options(timeout=10_000)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"
README_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
#: The README's screenshots are rewritten only on request, so a normal run leaves the tree clean.
UPDATE_README_SCREENSHOTS = os.environ.get("KMS_UPDATE_SCREENSHOTS") == "1"

MFA_ENROLL_PATH = "/accounts/mfa/enroll/"
MFA_VERIFY_PATH = "/accounts/mfa/verify/"
TOTP_PERIOD = 30


@dataclass
class Authenticator:
    """Every user's authenticator app: their TOTP secrets and the last time step each used.

    The portal accepts a time step once per user (a replayed code is refused) and one step
    of drift either way, so a second sign-in within the same 30 s uses the next step's code,
    and waits only if even that one has been used.
    """

    secrets: dict[str, str] = field(default_factory=dict)
    last_step: dict[str, int] = field(default_factory=dict)

    def code(self, username: str) -> str:
        now = int(time.time()) // TOTP_PERIOD
        step = max(now, self.last_step.get(username, now - 1) + 1)
        while step > int(time.time()) // TOTP_PERIOD + 1:
            time.sleep(1)
        self.last_step[username] = step
        secret = self.secrets[username]
        return totp_code(base64.b32decode(secret + "=" * (-len(secret) % 8)), step=step)


@dataclass
class Journey:
    """One role's journey through the portal, screenshotted step by step."""

    name: str
    browser: Browser
    page: Page
    base_url: str
    authenticator: Authenticator = field(default_factory=Authenticator)
    directory: Path = field(init=False)
    step: int = 0
    last_step_name: str = ""
    console_errors: list[str] = field(default_factory=list)
    _phone: Page | None = None
    _phone_cookies: set[tuple[str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.directory = ARTIFACTS / self.name
        # Cleared at the start, never at the end: a failed journey keeps its screenshots.
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self._watch(self.page)

    # --- screenshots ---------------------------------------------------------------------

    def _watch(self, page: Page) -> None:
        """Collect what the browser reports as errors: a CSP violation (an inline style or
        script slipped into a template), a failed stylesheet, a script error."""

        def console(message: Any) -> None:
            # Includes a missing favicon: base.html links one, so a 404 for it is a defect.
            if message.type == "error":
                self.console_errors.append(f"{page.url}: {message.text}")

        page.on("console", console)
        page.on("pageerror", lambda error: self.console_errors.append(f"{page.url}: {error}"))

    def _check_page(self, page: Page) -> None:
        assert not self.console_errors, "the browser reported errors:\n" + "\n".join(
            self.console_errors
        )
        # The stylesheet loaded (served by the live server) and its rules apply.
        loaded = page.evaluate(
            "() => document.styleSheets.length > 0 && "
            "[...document.styleSheets].every(sheet => sheet.cssRules.length > 0)"
        )
        assert loaded, f"the stylesheet did not load on {page.url}"
        leaked = re.search(r".{0,40}\{[#%{].{0,40}", page.locator("body").inner_text())
        assert leaked is None, f"template syntax shows on {page.url}: {leaked.group()!r}"

    def shot(self, name: str, *, readme: str | None = None) -> Path:
        """A full-page screenshot of the desktop page as step `name` (the next number).

        `readme`: also the README's screenshot of that name, when KMS_UPDATE_SCREENSHOTS=1.
        """
        self.page.wait_for_load_state()
        self._check_page(self.page)
        assert_no_sideways_scroll(self.page)
        self.step += 1
        self.last_step_name = name
        path = self.directory / f"{self.step:02d}-{name}-desktop.png"
        self.page.screenshot(path=path, full_page=True)
        if readme and UPDATE_README_SCREENSHOTS:
            README_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, README_SCREENSHOTS / readme)
        return path

    def phone(self, url: str | None = None) -> Page:
        """Open `url` (default: the desktop page's) on the phone, with the same session; check
        that it is usable at 390 px; screenshot it under the last desktop step's number."""
        phone = self._phone_page()
        target = urljoin(self.base_url, url or self.page.url)
        phone.goto(target)
        phone.wait_for_load_state()
        # The same page, not the sign-in page a stale session copy would lead to.
        assert urlsplit(phone.url)[2:4] == urlsplit(target)[2:4], f"{target} → {phone.url}"
        self._check_page(phone)
        assert_usable_on_phone(phone)
        path = self.directory / f"{self.step:02d}-{self.last_step_name}-phone.png"
        phone.screenshot(path=path, full_page=True)
        return phone

    def _phone_page(self) -> Page:
        """The phone, holding a copy of the desktop's cookies as they are now (signing in,
        and passing MFA, give the session a new key: an older copy would be signed out)."""
        state = self.page.context.storage_state()
        cookies = {(cookie["name"], cookie["value"]) for cookie in state["cookies"]}
        if self._phone is not None and self._phone_cookies != cookies:
            self.close_phone()
        if self._phone is None:
            context = self.browser.new_context(
                base_url=self.base_url,
                viewport=PHONE,
                is_mobile=True,
                has_touch=True,
                storage_state=state,
            )
            self._phone = context.new_page()
            self._phone_cookies = cookies
            self._watch(self._phone)
        return self._phone

    def close_phone(self) -> None:
        """The phone's session copy is stale after a sign-out: the next check opens a new one."""
        if self._phone is not None:
            self._phone.context.close()
            self._phone = None

    def failure_shots(self) -> None:
        """After a failure: what the pages show right now (never raises)."""
        pages = [("desktop", self.page), ("phone", self._phone)]
        for label, page in pages:
            if page is None or page.is_closed():
                continue
            # The test has failed already: keep its error, whatever happens here.
            with contextlib.suppress(Exception):
                page.screenshot(path=self.directory / f"99-failure-{label}.png", full_page=True)

    # --- signing in and out ----------------------------------------------------------------

    def sign_in(self, username: str, password: str = TEST_PASSWORD) -> str | None:
        """Sign in through the form, then the MFA step if the portal asks for one: enrolment
        (scan the QR code, i.e. read the secret next to it; confirm a code; note the recovery
        codes) at the first sign-in, a code from the authenticator afterwards.

        Returns which MFA step it took: "enrolled", "verified", or None.
        """
        page = self.page
        self.close_phone()
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()
        mfa_step = None
        if page.url.startswith(self.base_url + MFA_ENROLL_PATH):
            self._mfa_enroll(username)
            mfa_step = "enrolled"
        elif page.url.startswith(self.base_url + MFA_VERIFY_PATH):
            self.shot(f"mfa-verify-{username}")
            self.phone()
            page.locator("input[name=code]").fill(self.authenticator.code(username))
            page.get_by_role("button", name="Verify").click()
            mfa_step = "verified"
        page.wait_for_load_state()
        # Through: the portal's navigation shows (a session short of MFA gets none).
        expect(page.locator(".topbar .username")).to_have_text(username)
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        assert "/accounts/mfa/" not in page.url, page.url
        return mfa_step

    def _mfa_enroll(self, username: str) -> None:
        page = self.page
        # The QR code is inline SVG (no script, no external image: the CSP allows neither).
        expect(page.locator("main svg").first).to_be_visible()
        self.shot(f"mfa-enroll-{username}")
        self.phone()
        # The secret stays the same for the enrolment attempt: the phone's visit and a reload
        # show the one the app scanned first.
        scanned = re.sub(r"\s", "", page.locator("#mfa-secret").inner_text())
        page.reload()
        secret = re.sub(r"\s", "", page.locator("#mfa-secret").inner_text())
        assert secret == scanned, "the TOTP secret changed on reload"
        assert re.fullmatch(r"[A-Z2-7]{16,}=*", secret), "the secret is not base32"
        self.authenticator.secrets[username] = secret
        page.locator("input[name=code]").fill(self.authenticator.code(username))
        page.get_by_role("button", name="Confirm").click()
        codes = page.locator("#recovery-codes li")
        expect(codes.first).to_be_visible()
        assert codes.count() >= 5, "too few recovery codes"
        self.shot(f"mfa-recovery-codes-{username}")
        page.get_by_role("link", name="Continue").or_(
            page.get_by_role("button", name="Continue")
        ).click()

    def sign_out(self) -> None:
        self.close_phone()
        self.page.locator(".topbar").get_by_role("button", name="Sign out").click()
        expect(self.page.get_by_role("heading", name="Sign in")).to_be_visible()

    # --- small conveniences ----------------------------------------------------------------

    def nav(self, label: str) -> None:
        """Follow an entry of the main navigation."""
        self.page.get_by_role("navigation", name="Main").get_by_role(
            "link", name=label, exact=True
        ).click()
        self.page.wait_for_load_state()

    def download(self, trigger: Locator) -> bytes:
        """Click `trigger`, which starts a download, and return the downloaded bytes."""
        with self.page.expect_download() as started:
            trigger.click()
        download: Download = started.value
        path = download.path()
        assert path is not None, download.failure()
        return Path(path).read_bytes()


# The outermost elements that stick out on the right (their parent does not): the culprits.
_TOO_WIDE = """() => {
  const limit = document.documentElement.clientWidth + 1;
  const wide = e => e.getBoundingClientRect().right > limit;
  return [...document.body.querySelectorAll("*")]
    .filter(e => wide(e) && !wide(e.parentElement))
    .slice(0, 8)
    .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
      + (e.getAttribute("class") ? "." + e.getAttribute("class").trim().split(/\\s+/).join(".") : "")
      + " (" + Math.round(e.getBoundingClientRect().width) + "px)");
}"""


def assert_no_sideways_scroll(page: Page) -> None:
    """The page fits the window's width (wide tables scroll inside their own container)."""
    width = page.evaluate("() => document.documentElement.clientWidth")
    scroll_width = page.evaluate("() => document.documentElement.scrollWidth")
    assert scroll_width <= width + 1, (
        f"{page.url} scrolls sideways: {scroll_width}px of content in {width}px; "
        f"too wide: {page.evaluate(_TOO_WIDE)}"
    )


def assert_usable_on_phone(page: Page) -> None:
    """At 390 px: the page does not scroll sideways (wide tables scroll inside their own
    container), every main navigation link and every button is on screen and can be clicked
    (Playwright's actionability checks: visible, stable, enabled, not covered), and no form
    field sticks out of the screen."""
    width = page.evaluate("() => document.documentElement.clientWidth")
    # The meta viewport makes the layout as wide as the phone, not a shrunk desktop page.
    assert width == PHONE["width"], f"layout viewport is {width}px wide on a 390px phone"
    assert_no_sideways_scroll(page)
    # Every button: the primary ones and those in table rows (Approve, Withdraw) alike must
    # be on screen as the page opens, not only after scrolling a table sideways.
    targets = [
        *page.locator("nav[aria-label=Main] a").all(),
        *page.locator("main button:visible, main a.button:visible").all(),
    ]
    for target in targets:
        box = target.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (
            f"{target} is off the screen on {page.url}: {box}"
        )
        target.click(trial=True, timeout=5000)
    # List pages are cards on a phone: every cell of every row starts and ends on screen
    # (not a column squeezed to a few characters, nor one pushed off to the right).
    for cell in page.locator("main .table-stack td:visible").all()[:60]:
        box = cell.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 1, (
            f"a list cell is off the screen on {page.url}: {box}"
        )
        assert box["width"] >= width * 0.6, f"a list cell is squeezed on {page.url}: {box}"
    for field_ in page.locator(
        "main input:visible, main select:visible, main textarea:visible"
    ).all():
        box = field_.bounding_box()
        assert box is not None and box["x"] + box["width"] <= width + 1, (
            f"a form field sticks out of the screen on {page.url}: {box}"
        )
