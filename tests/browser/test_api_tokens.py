"""Journey: a key custodian makes a personal API token in the portal (after the second
factor), sees it once, uses it from a script, and opens the admin API's docs page, which
renders from the server's own static files under the portal's Content-Security-Policy."""

from __future__ import annotations

import pytest
import requests

from accounts.roles import Role
from tests.browser.journeys import expect
from tests.factories import user_make

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

CUSTODIAN = "kim-custodian"


def test_api_tokens(journey, live_settings: str) -> None:
    user_make(CUSTODIAN, Role.KEY_CUSTODIAN)
    page = journey.page
    assert journey.sign_in(CUSTODIAN) == "enrolled"

    page.locator(".topbar").get_by_role("link", name="API tokens").click()
    page.get_by_label("Name").fill("nightly rotation job")
    page.get_by_label("My roles (read and change)").check()
    page.get_by_label("Expires after (days)").fill("7")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#api-token").inner_text().strip()
    assert token.startswith("kms_")
    journey.shot("api-token-once")
    page.reload()
    expect(page.locator("#token-gone")).to_be_visible()
    assert token not in page.content()
    journey.console_errors.clear()  # the browser logs the expected 410 Gone of that reload

    me = requests.get(
        f"{live_settings}/api/v1/admin/tokens/me",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert me.status_code == 200 and me.json()["roles"] == ["key_custodian"]

    page.goto("/api/v1/docs")
    # Swagger UI ran (its scripts from /static/ninja/) and rendered the operations it read
    # from /api/v1/openapi.json; no CSP violation or script error reached the console.
    expect(page.locator(".swagger-ui .opblock").first).to_be_visible()
    assert page.locator(".swagger-ui .opblock").count() >= 40
    journey.shot("api-docs")

    page.goto("/accounts/api-tokens/")
    page.get_by_role("button", name="Revoke").click()
    expect(page.locator("#tokens")).to_contain_text("revoked")
    again = requests.get(
        f"{live_settings}/api/v1/admin/tokens/me",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert again.status_code == 401
