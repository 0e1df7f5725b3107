"""What every page shares: one date-time format, human labels, state badges, neutralised
bidi controls, error messages that start with a capital."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from django.template import Context, Template

from accounts.roles import Role
from kmsportal.bidi import bidi_neutralize
from tests.factories import mfa_enroll
from vault import services


def render(source: str, **context: object) -> str:
    return Template(source).render(Context(context))


def test_one_date_time_format_iso_8601_utc() -> None:
    moment = datetime(2026, 12, 1, 13, 20, 5, tzinfo=UTC)
    assert render("{{ t|utc }}", t=moment) == "2026-12-01T13:20:05Z"
    assert render("{{ t }}", t=moment) == "2026-12-01T13:20:05Z"  # no "Dec. 1, 2026, 1:20 p.m."
    assert render('{{ t|utc:"date" }}', t=moment) == "2026-12-01"
    assert render('{{ t|utc|default:"never" }}', t=None) == "never"


def test_bidi_controls_are_shown_as_visible_markers(make_user, signed_in) -> None:
    assert bidi_neutralize("invoice\u202etxt.exe") == "invoice[U+202E]txt.exe"
    services.symmetric_key_create(actor=None, name="spoof", description="invoice\u202etxt.exe")
    client = signed_in(make_user("kim", Role.KEY_CUSTODIAN))
    page = client.get("/keys/spoof/").content.decode()
    assert "invoice[U+202E]txt.exe" in page and "\u202e" not in page


def test_roles_events_and_version_states_have_labels_and_badges(make_user, signed_in) -> None:
    admin = signed_in(make_user("ada", Role.ADMINISTRATOR))
    make_user("kurt", Role.KEY_CUSTODIAN)
    users = admin.get("/users/").content.decode()
    assert '<span class="badge">Key custodian</span>' in users
    assert "key_custodian</span>" not in users

    first, second = make_user("kay", Role.KEY_CUSTODIAN), make_user("ken", Role.KEY_CUSTODIAN)
    key = services.symmetric_key_create(actor=None, name="doomed")
    services.key_version_compromise(actor=None, key=key, number=1, reason="tape lost")
    request = services.destruction_request_create(
        actor=first, key=key, waiting_days=7, reason="retired with the old service"
    )
    mfa_enroll(second)  # only an account with a second factor approves
    services.destruction_request_approve(actor=second, request=request)
    page = signed_in(first).get("/keys/doomed/").content.decode()
    versions = page[page.index("<h2>Versions</h2>") :]
    assert '<span class="badge bad">compromised</span>' in versions
    assert '<span class="badge warn">pending destruction</span>' in versions
    assert "active (primary)" not in versions
    history = page[page.index('<code class="code-name">') - 200 :]
    assert '<code class="code-name">key.created</code>' in history  # the code, after its label
    assert re.search(r"</span> [A-Z][^<]+ <code class=\"code-name\">key.created</code>", history)


def test_error_messages_start_with_a_capital(make_user, signed_in) -> None:
    client = signed_in(make_user("kate", Role.KEY_CUSTODIAN))
    client.post("/clients/new/", {"name": "twice"})
    again = client.post("/clients/new/", {"name": "twice"})
    assert again.status_code == 400
    assert "A client named &#x27;twice&#x27; already exists" in again.content.decode()
