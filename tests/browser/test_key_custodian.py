"""Journey 2, key custodian: signs in with MFA (enrolling at the first sign-in), creates a key,
rotates it, reports a version compromised, registers a client service and asks to grant it the
key, requests the key's destruction; a second custodian approves both on their confirmation
pages (two-person rule); the first
signs in again, now with a code from the authenticator app, and finds the key pending
destruction.

Prerequisites made with the services (journey 1 makes them through the pages): the two
custodians' accounts.
"""

from __future__ import annotations

import re

import pytest

from accounts.roles import Role
from tests.browser.journeys import expect

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

KEY = "payments-db"
CLIENT = "billing"


def version_row(page, number: int):
    """The row of key version `number` in the key page's versions table."""
    first_cell = page.locator("td:first-child", has_text=re.compile(f"^{number}\\b"))
    return page.locator("table").first.locator("tbody tr").filter(has=first_cell)


def key_action(journey, title: str, step: str) -> None:
    """Open one of the key page's actions: its confirmation page says what will happen."""
    page = journey.page
    page.get_by_role("link", name=f"{title}…").click()
    expect(page.get_by_role("heading", name=f"{title}: {KEY}")).to_be_visible()
    journey.shot(step)


@pytest.fixture
def custodians(make_user) -> None:
    """What journey 1 leaves for this one: two key custodians (two-person rule)."""
    make_user("carol-custodian", Role.KEY_CUSTODIAN)
    make_user("dave-custodian", Role.KEY_CUSTODIAN)


def test_key_custodian(custodians: None, journey, live_settings: str) -> None:
    page = journey.page

    assert journey.sign_in("carol-custodian") == "enrolled"
    journey.shot("dashboard-first")

    # --- create a key -----------------------------------------------------------------------
    journey.nav("Keys")
    page.get_by_role("link", name="New key").click()
    page.get_by_label("Name").fill(KEY)
    page.get_by_label("Description").fill("Encrypts card tokens in the payments database")
    page.get_by_label("Rotate every (days)").fill("90")
    journey.shot("new-key")
    journey.phone()
    page.get_by_role("button", name="Create key").click()
    expect(page.locator(".message.success")).to_contain_text(f"Key {KEY} created")
    expect(page.locator("h1 .badge")).to_have_text("active")
    first_fingerprint = version_row(page, 1).locator("code").inner_text()
    assert re.fullmatch(r"[0-9A-F]{6}", first_fingerprint), first_fingerprint
    journey.shot("key-created")

    # --- rotate it --------------------------------------------------------------------------
    key_action(journey, "Rotate", "rotate")
    journey.phone()
    page.get_by_role("button", name="Rotate", exact=True).click()
    expect(page.locator(".message.success")).to_contain_text("Rotated: version 2")
    expect(version_row(page, 2)).to_contain_text("primary")
    expect(version_row(page, 1)).not_to_contain_text("primary")
    expect(version_row(page, 1).locator("code")).to_have_text(first_fingerprint)
    second_fingerprint = version_row(page, 2).locator("code").inner_text()
    journey.shot("rotated")

    # --- report version 1 compromised -------------------------------------------------------
    key_action(journey, "Report compromised", "report-compromised")
    page.get_by_label("One version").check()
    page.get_by_label("Version", exact=True).fill("1")
    page.get_by_label("Reason").fill("backup tape with version 1 lost in transit")
    journey.phone()  # the form as it opens on a phone (the phone's copy is not submitted)
    page.get_by_role("button", name="Report compromised").click()
    expect(page.locator(".message.success")).to_contain_text("Version 1 is compromised")
    expect(version_row(page, 1)).to_contain_text("compromised")
    expect(version_row(page, 1)).to_contain_text("backup tape")
    expect(version_row(page, 2)).to_contain_text("primary")
    journey.shot("version-compromised")

    # --- register a client service and grant it the key -------------------------------------
    journey.nav("Clients")
    page.get_by_role("link", name="Register a client").click()
    page.get_by_label("Name").fill(CLIENT)
    page.get_by_label("Description").fill("Invoicing service")
    journey.shot("register-client")
    page.get_by_role("button", name="Register").click()
    token = page.locator("#enrollment-token").inner_text().strip()
    assert re.fullmatch(r"[0-9a-f]{64}", token), "no one-time enrollment token shown"
    journey.shot("enrollment-token")
    page.get_by_role("link", name="I have copied it").click()
    expect(page.locator("h1")).to_contain_text(CLIENT)
    page.get_by_label("Key name").fill(KEY)
    page.get_by_label("Reason").fill("invoicing stores card tokens encrypted under this key")
    page.get_by_role("button", name="Grant (or request)").click()
    # The key's export policy is two-person (the default): the grant is only a request.
    expect(page.locator(".message.success")).to_contain_text(
        "a second key custodian must approve it"
    )
    expect(page.locator("#grant-requests")).to_contain_text(KEY)
    expect(page.get_by_text("No grants.")).to_be_visible()
    journey.shot("grant-requested")
    journey.phone()

    # --- the key page now: the README's key screenshot ---------------------------------------
    journey.nav("Keys")
    page.locator("tbody tr", has_text=KEY).get_by_role("link", name=KEY).click()
    expect(page.locator("h1")).to_contain_text(KEY)
    expect(page.locator("#export-policy")).to_contain_text("two-person")
    journey.shot("key-detail", readme="key-detail.png")
    journey.phone()

    # --- request its destruction --------------------------------------------------------------
    key_action(journey, "Request destruction", "request-destruction")
    page.get_by_label("Reason").fill("payments moved to the new platform")
    page.get_by_role("button", name="Request destruction").click()
    expect(page.locator(".message.success")).to_contain_text("Destruction requested")
    expect(page.get_by_role("heading", name="Pending approval")).to_be_visible()
    journey.shot("destruction-requested")
    # The requester cannot approve their own requests: the confirmation page offers only
    # Withdraw.
    journey.nav("Approvals")
    request_row = page.locator("tbody tr", has_text=f"destroy key {KEY}")
    expect(request_row).to_contain_text("carol-custodian")
    request_row.get_by_role("link", name="Review or withdraw").click()
    expect(page.get_by_role("button", name="Withdraw")).to_be_visible()
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    journey.shot("approvals-requester")
    journey.sign_out()

    # --- a second custodian approves -----------------------------------------------------------
    assert journey.sign_in("dave-custodian") == "enrolled"
    journey.shot("dashboard-second-custodian")
    journey.phone()
    journey.nav("Approvals")
    journey.shot("approvals")
    journey.phone()
    # First the grant: its confirmation page names the key, its fingerprint and the client.
    grant_row = page.locator("tbody tr", has_text=f"grant {KEY} to client {CLIENT}")
    expect(grant_row).to_contain_text("carol-custodian")
    grant_row.get_by_role("link", name="Review").click()
    expect(page.locator("h1")).to_have_text(f"Grant key {KEY} to client {CLIENT}")
    expect(page.locator("#changes")).to_contain_text(f"fingerprint {second_fingerprint}")
    expect(page.locator("#affected")).to_contain_text(CLIENT)
    expect(page.locator("#affected")).to_contain_text("not enrolled yet")
    journey.shot("grant-confirmation")
    journey.phone()
    page.get_by_role("button", name="Approve").click()
    expect(page.locator(".message.success")).to_contain_text(f"{CLIENT} may now fetch {KEY}")
    # Then the destruction: the versions erased and the client that loses the key.
    destroy_row = page.locator("tbody tr", has_text=f"destroy key {KEY}")
    destroy_row.get_by_role("link", name="Review").click()
    expect(page.locator("h1")).to_have_text(f"Destroy key {KEY}")
    expect(page.locator("#changes")).to_contain_text(second_fingerprint)
    expect(page.locator("#affected")).to_contain_text(CLIENT)
    journey.shot("destruction-confirmation")
    page.get_by_role("button", name="Approve").click()
    expect(page.locator(".message.success")).to_contain_text(f"Approved: {KEY} is unusable now")
    expect(page.locator("main")).to_contain_text("Nothing waits for approval.")
    journey.shot("approved")
    journey.sign_out()

    # --- the first custodian again: a code from the app this time, and the key's fate -------
    assert journey.sign_in("carol-custodian") == "verified"
    journey.nav("Keys")
    row = page.locator("tbody tr", has_text=KEY)
    expect(row).to_contain_text("pending destruction")
    journey.shot("keys")
    journey.phone()
    row.get_by_role("link", name=KEY).click()
    expect(page.locator("h1 .badge")).to_have_text("pending destruction")
    timeline = page.locator("ol.timeline")
    for done in ("key.destruction_approved by dave-custodian", "key.rotated by carol-custodian"):
        expect(timeline).to_contain_text(done)
    journey.shot("key-pending-destruction")

    journey.nav("Dashboard")
    expect(page.locator("main")).to_contain_text("pending destruction")
    journey.shot("dashboard")
    journey.phone()
