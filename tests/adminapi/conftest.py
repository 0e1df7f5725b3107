"""Fixtures for the admin API: users with one role each, and Bearer-token HTTP clients."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth.models import User
from django.test import Client

from adminapi.tokens import api_token_create


def bearer(user: User, scope: str = "roles", days: int = 7) -> Client:
    """A test client that sends a fresh token of ``user`` on every request (real HTTP
    handling through the whole middleware stack, as from another machine)."""
    created = api_token_create(actor=None, user=user, name="test", scope=scope, days=days)
    client = Client(headers={"Authorization": f"Bearer {created.secret}"})
    client.token = created.token  # type: ignore[attr-defined]
    client.secret = created.secret  # type: ignore[attr-defined]
    return client


@pytest.fixture
def api_client(db) -> Callable[..., Client]:
    return bearer
