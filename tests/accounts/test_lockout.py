"""Sign-in lockout per username and per source address."""

from __future__ import annotations

import pytest
from django.test import Client

from accounts.roles import Role
from audit.models import AuditEvent
from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db


def attempt(client: Client, username: str, password: str, address: str = "192.0.2.1"):
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR=address
    )


def test_username_is_locked_after_five_failures(make_user) -> None:
    make_user("target", Role.AUDITOR)
    client = Client()
    for _ in range(5):
        assert attempt(client, "target", "wrong password 1").status_code == 200
    locked = attempt(client, "target", TEST_PASSWORD)  # even the right password
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) == 900
    assert b"Too many failed sign-in attempts" in locked.content
    assert "_auth_user_id" not in client.session
    event = AuditEvent.objects.filter(action="auth.sign_in_locked").get()
    assert event.details == {"limit": "username", "username": "target"}
    # From another address the username is still locked.
    assert attempt(Client(), "target", TEST_PASSWORD, address="198.51.100.9").status_code == 429


def test_unknown_and_known_usernames_get_the_same_answer(make_user) -> None:
    make_user("real-user", Role.AUDITOR)
    for name in ("real-user", "no-such-user"):
        for _ in range(5):
            attempt(Client(), name, "wrong password 1", address=f"203.0.113.{len(name)}")
    real = attempt(Client(), "real-user", "x", address="203.0.113.99")
    ghost = attempt(Client(), "no-such-user", "x", address="203.0.113.98")
    assert real.status_code == ghost.status_code == 429
    strip = lambda body: body.replace(b"real-user", b"").replace(b"no-such-user", b"")  # noqa: E731
    assert b"Too many failed" in real.content and b"Too many failed" in ghost.content
    assert len(strip(real.content)) - len(strip(ghost.content)) in range(-200, 200)


def test_address_is_locked_after_twenty_failures_across_usernames(make_user) -> None:
    make_user("victim", Role.AUDITOR)
    for i in range(20):
        attempt(Client(), f"spray-{i}", "password1234", address="192.0.2.50")
    assert attempt(Client(), "victim", TEST_PASSWORD, address="192.0.2.50").status_code == 429
    assert attempt(Client(), "victim", TEST_PASSWORD, address="192.0.2.51").status_code == 302


def test_success_resets_the_username_count(make_user, settings) -> None:
    make_user("forgetful", Role.AUDITOR)
    for _ in range(4):
        attempt(Client(), "forgetful", "wrong password 1")
    assert attempt(Client(), "forgetful", TEST_PASSWORD).status_code == 302
    for _ in range(4):
        attempt(Client(), "forgetful", "wrong password 1")
    assert attempt(Client(), "forgetful", TEST_PASSWORD).status_code == 302


def test_every_spelling_of_one_username_counts_for_it(make_user) -> None:
    make_user("caop1", Role.AUDITOR)
    for variant in ["  caop1   ", "\uff43aop1", "CAOP1", "caop1\t", "Caop1"]:
        assert attempt(Client(), variant, "wrong password 1").status_code == 200
    for variant in ["caop1", " caop1", "\uff43\uff41\uff4f\uff50\uff11"]:
        assert attempt(Client(), variant, TEST_PASSWORD).status_code == 429
    # The counters are in the shared `counters` cache (the database here), not the default.
    from django.core.cache import cache, caches

    assert not any(key.startswith("kms:signin") for key in getattr(cache, "_cache", {}))
    assert type(caches["counters"]).__name__ == "DatabaseCounterCache"


def test_parallel_attempts_cannot_slip_under_the_limit(make_user) -> None:
    """Each attempt is counted before its password is checked: the count is what decides."""
    from accounts import throttle

    for i in range(5):
        assert throttle.sign_in_attempt_begin(username="Racer", address=f"192.0.2.{i}") is None
    refused = throttle.sign_in_attempt_begin(username=" racer ", address="192.0.2.99")
    assert refused is not None and refused.scope == "username"
