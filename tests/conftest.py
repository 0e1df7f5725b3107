"""Shared fixtures: users with roles, signed-in clients, a fast password hasher."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.roles import Role
from tests import factories


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings, request) -> None:
    """Argon2 is deliberately slow; tests that are not about hashing use MD5."""
    if "real_password_hasher" not in request.keywords:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _no_approver_cooling_off(settings) -> None:
    """Users made in a test approve at once (KMS_APPROVER_COOLING_OFF=0); the default of
    24 h is proved by tests/accounts/test_separation_of_duties.py, which sets it back."""
    settings.KMS_APPROVER_COOLING_OFF = 0


@pytest.fixture(autouse=True)
def _empty_cache(request, django_db_blocker):
    """No test inherits another's cached values or counters. The `counters` cache is a
    database table: a test's transaction rolls it back, but a transactional test's flush
    does not empty it (Django flushes only its models' tables), so that is done here."""
    from django.core.cache import cache, caches

    cache.clear()
    yield
    marker = request.node.get_closest_marker("django_db")
    if marker and (marker.kwargs.get("transaction") or marker.args[:1] == (True,)):
        with django_db_blocker.unblock():
            caches["counters"].clear()


@pytest.fixture(autouse=True)
def _static_files_without_manifest(settings) -> None:
    """Production serves collected, hashed static files; tests have not run collectstatic."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _audit_tables_flushable(request, _django_db_marker, django_db_blocker):
    """Let Django's between-test flush (TRUNCATE) pass the audit log's PostgreSQL triggers.

    Only for transactional tests (`@pytest.mark.django_db(transaction=True,
    serialized_rollback=True)`, which every transactional test must use); live-server
    tests must use the marker too, so that this teardown runs before the flush). The test
    itself runs with the triggers armed; the bypass is honoured for superusers only (see
    audit migration 0002).
    """
    marker = request.node.get_closest_marker("django_db")
    transactional = bool(
        marker and (marker.kwargs.get("transaction") or marker.args[:1] == (True,))
    )
    if not transactional:
        yield
        return
    from django.db import connection

    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("RESET kmsportal.audit_maintenance")
    yield
    with django_db_blocker.unblock():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET kmsportal.audit_maintenance = 'on'")


@pytest.fixture
def make_user(db) -> Callable[..., User]:
    """Create a user with roles through the service; password is TEST_PASSWORD."""

    def make(username: str, *roles: Role, email: str = "") -> User:
        return factories.user_make(username, *roles, email=email)

    return make


@pytest.fixture
def admin_user(make_user) -> User:
    return make_user("alice-admin", Role.ADMINISTRATOR)


@pytest.fixture
def signed_in(db) -> Callable[[User], Client]:
    """A fresh test client signed in as the given user through the real pages.

    The password form first; then, for a user who needs the second factor (a role that
    requires it, or an enrolled authenticator), a TOTP code on the MFA page, enrolling an
    authenticator through the services first if the user has none
    (tests.factories.sign_in). The same MFA user can be signed in twice within one
    30-second step (each step's code is accepted once): keep the client for more.
    """

    def sign_in(user: User) -> Client:
        return factories.sign_in(user)

    return sign_in


@pytest.fixture
def role_client(make_user, signed_in) -> Callable[[Role], Client]:
    """A client signed in as a new user holding exactly `role`."""

    def for_role(role: Role) -> Client:
        return signed_in(make_user(f"user-{role.value}", role))

    return for_role
