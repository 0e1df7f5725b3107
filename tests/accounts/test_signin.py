"""Sign-in, sign-out, password hashing, sessions and CSRF, through real HTTP requests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone

from accounts.roles import Role
from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db


def test_sign_in_page_uses_project_template(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert "registration/login.html" in [t.name for t in response.templates]
    assert b"Sign in" in response.content


def test_anonymous_user_is_sent_to_sign_in(client: Client) -> None:
    response = client.get("/users/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=/users/")


def test_sign_in_and_out(client: Client, make_user) -> None:
    # An auditor: the password alone signs in (tests/accounts/test_mfa.py: the second factor).
    auditor = make_user("olga-auditor", Role.AUDITOR)
    response = client.post(
        "/accounts/login/", {"username": auditor.username, "password": TEST_PASSWORD}
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    page = client.get("/")
    assert page.status_code == 200
    assert auditor.username.encode() in page.content

    assert client.get("/accounts/logout/").status_code == 405  # sign-out is POST only
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/").status_code == 302  # signed out: back to sign-in


def test_wrong_password_is_refused_with_message(client: Client, admin_user: User) -> None:
    response = client.post(
        "/accounts/login/", {"username": admin_user.username, "password": "not the password"}
    )
    assert response.status_code == 200
    assert b"did not match" in response.content
    assert "_auth_user_id" not in client.session


def test_unknown_user_gets_the_same_message(client: Client, db) -> None:
    response = client.post("/accounts/login/", {"username": "nobody", "password": "whatever1"})
    assert b"did not match" in response.content


def test_inactive_user_cannot_sign_in(client: Client, make_user) -> None:
    user = make_user("bob", Role.AUDITOR)
    user.is_active = False
    user.save()
    response = client.post("/accounts/login/", {"username": "bob", "password": TEST_PASSWORD})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


@pytest.mark.real_password_hasher
def test_passwords_are_stored_with_argon2(make_user) -> None:
    user = make_user("carol", Role.AUDITOR)
    user.refresh_from_db()
    assert user.password.startswith("argon2$argon2id$")
    assert TEST_PASSWORD not in user.password
    assert user.check_password(TEST_PASSWORD)


def test_post_without_csrf_token_is_refused(admin_user: User) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/accounts/login/", {"username": admin_user.username, "password": TEST_PASSWORD}
    )
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_signed_in_post_without_csrf_token_changes_nothing(
    signed_in, admin_user: User, make_user
) -> None:
    target = make_user("dave", Role.AUDITOR)
    client = signed_in(admin_user)  # password and second factor
    client.handler.enforce_csrf_checks = True
    response = client.post(f"/users/{target.pk}/deactivate/")
    assert response.status_code == 403
    target.refresh_from_db()
    assert target.is_active


def test_session_idle_timeout_is_30_minutes_and_rolls(
    signed_in, admin_user: User, settings
) -> None:
    assert settings.SESSION_COOKIE_AGE == 30 * 60
    client = signed_in(admin_user)
    client.get("/")
    session = Session.objects.get(session_key=client.session.session_key)
    remaining = session.expire_date - timezone.now()
    assert timedelta(minutes=29) < remaining <= timedelta(minutes=30)


def test_expired_session_is_signed_out(signed_in, admin_user: User) -> None:
    client = signed_in(admin_user)
    Session.objects.filter(session_key=client.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    assert client.get("/").status_code == 302


def test_changing_own_password_ends_other_sessions(signed_in, admin_user: User) -> None:
    first = signed_in(admin_user)
    second = signed_in(admin_user)
    response = first.post(
        "/accounts/password/",
        {
            "old_password": TEST_PASSWORD,
            "new_password1": "a brand new passphrase 7",
            "new_password2": "a brand new passphrase 7",
        },
    )
    assert response.status_code == 302
    assert first.get("/").status_code == 200  # the session that changed it stays
    assert second.get("/").status_code == 302  # every other session ended


def test_security_headers(client: Client) -> None:
    response = client.get("/accounts/login/", secure=True)
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")


def test_cookies_are_secure_httponly_samesite(client: Client, admin_user: User) -> None:
    client.post("/accounts/login/", {"username": admin_user.username, "password": TEST_PASSWORD})
    cookie = client.cookies["sessionid"]
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
