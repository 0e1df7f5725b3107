"""Journey 1, administrator: first sign-in with the password `manage.py bootstrap` printed,
MFA enrolment, three new colleagues (key custodian, CA operator, auditor) each with a one-time
invitation link (the administrator never sees their passwords), then a root CA and an
intermediate CA below it; the custodian opens their link, sets their own password and is asked
to enrol their own authenticator.

Only the first administrator comes from outside the pages, the way a deployment gets it:
`manage.py bootstrap`.
"""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from tests.browser.journeys import MFA_ENROLL_PATH, expect

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

COLLEAGUES = [
    ("carol-custodian", "Key custodian"),
    ("omar-operator", "CA operator"),
    ("audrey-auditor", "Auditor"),
]


def bootstrap() -> tuple[str, str]:
    """Run `manage.py bootstrap`; the username and password it prints for the first sign-in."""
    out = io.StringIO()
    call_command("bootstrap", "--username", "admin", stdout=out)
    printed = out.getvalue()
    username = re.search(r"as: (\S+)", printed).group(1)
    password = re.search(r"Password \(shown once, not stored in clear\): (\S+)", printed).group(1)
    return username, password


def create_ca(journey, *, name: str, subject: str, parent: str = "") -> None:
    """New CA form → the confirmation page showing the certificate → create."""
    page = journey.page
    journey.nav("Certificate authorities")
    page.get_by_role("link", name="New CA").click()
    page.get_by_label("Name").fill(name)
    page.get_by_label("Subject").fill(subject)
    page.get_by_label("Parent CA").select_option(parent)
    # EC P-256: the fastest key the form offers, so the journey does not wait for RSA.
    page.get_by_label("Key type").select_option("ecp256")
    journey.shot(f"new-ca-{name}")
    journey.phone()
    page.get_by_role("button", name="Review").click()
    expect(page.get_by_role("heading", name=f"Create CA {name}?")).to_be_visible()
    expect(page.locator("main")).to_contain_text(subject)
    journey.shot(f"confirm-ca-{name}")
    page.get_by_role("button", name="Create CA").click()
    expect(page.locator(".message.success")).to_contain_text(
        f"Certificate authority {name} created"
    )
    expect(page.locator("h1")).to_contain_text(name)


def test_administrator(journey, live_settings: str) -> None:
    username, password = bootstrap()
    page = journey.page

    # --- first sign-in: the sign-in page, then MFA enrolment --------------------------------
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/accounts/login/"))
    journey.shot("sign-in")
    journey.phone()
    assert journey.sign_in(username, password) == "enrolled"
    journey.shot("dashboard-first")

    # --- three colleagues, one role each, invitation links shown once -----------------------
    links: dict[str, str] = {}
    for colleague, role in COLLEAGUES:
        journey.nav("Users")
        page.get_by_role("link", name="New user").click()
        page.get_by_label("Username").fill(colleague)
        page.get_by_label("Email").fill(f"{colleague}@example.org")
        page.get_by_label(role, exact=True).check()
        if colleague == COLLEAGUES[0][0]:
            journey.shot("new-user")
            journey.phone()
        page.get_by_role("button", name="Create user").click()
        expect(page.get_by_role("heading", name=f"User {colleague} created")).to_be_visible()
        links[colleague] = page.locator("#invitation-link").inner_text().strip()
        assert re.search(r"/accounts/invitation/\?token=[\w-]{40,}$", links[colleague])
        expect(page.locator("main")).not_to_contain_text("Password")
        journey.shot(f"invitation-{colleague}")
        if colleague == COLLEAGUES[0][0]:
            # A reload neither creates the user again nor shows the link twice: it says how
            # to get a new link.
            page.reload()
            expect(page.locator("#invitation-gone")).to_contain_text("was shown once")
            expect(page.locator("#invitation-link")).to_have_count(0)
            expect(
                page.get_by_role("link", name="Reset password (new invitation link)")
            ).to_be_visible()
            journey.console_errors.clear()  # the browser logs the expected 410 Gone
            page.get_by_role("link", name=f"Back to {colleague}").click()
        else:
            page.get_by_role("link", name="I have copied it").click()
        expect(page.locator("h1")).to_have_text(colleague)
        expect(page.locator("dl.facts")).to_contain_text(role)
    journey.shot("user-detail")
    journey.phone()
    journey.nav("Users")
    for colleague, role in COLLEAGUES:
        expect(page.locator("tbody tr", has_text=colleague)).to_contain_text(role)  # a label
    journey.shot("users")
    journey.phone()

    # --- a root CA and an intermediate below it ---------------------------------------------
    create_ca(journey, name="journey-root", subject="CN=Journey Root CA,O=Example")
    expect(page.locator("dl.facts").first).to_contain_text("self-signed root")
    journey.shot("root-ca")
    create_ca(
        journey,
        name="journey-issuing",
        subject="CN=Journey Issuing CA,O=Example",
        parent="journey-root",
    )
    expect(page.locator("dl.facts").first).to_contain_text("intermediate, issued by journey-root")
    journey.shot("intermediate-ca")
    journey.phone()
    journey.nav("Certificate authorities")
    for name in ("journey-root", "journey-issuing"):
        first_cell = page.locator("td:first-child", has_text=re.compile(f"^{name}$"))
        expect(page.locator("tbody tr").filter(has=first_cell)).to_contain_text("active")
    journey.shot("certificate-authorities")
    journey.phone()

    journey.nav("Dashboard")
    journey.shot("dashboard")
    journey.phone()

    # --- the custodian sets their own password at the link; the first sign-in asks for MFA --
    journey.sign_out()
    own_password = "carol's own passphrase 2026"
    page.goto(links["carol-custodian"])
    expect(page.get_by_role("heading", name="Welcome, carol-custodian")).to_be_visible()
    journey.shot("invitation-accept")
    page.get_by_label("New password", exact=True).fill(own_password)
    page.get_by_label("New password confirmation").fill(own_password)
    page.get_by_role("button", name="Set my password").click()
    expect(page.locator(".message.success")).to_contain_text("Your password is set")
    # (The link works once: tests/accounts/test_user_admin.py opens it again.)
    page.get_by_label("Username").fill("carol-custodian")
    page.get_by_label("Password").fill(own_password)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(re.escape(MFA_ENROLL_PATH)))
    journey.shot("custodian-first-sign-in")
