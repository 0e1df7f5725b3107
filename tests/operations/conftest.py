"""Fixtures for the operations API: keys of every type (made once per test database where
RSA would be slow), a client service and grants naming operations."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.distribution.conftest import kms  # noqa: F401 (the live KMS fixture)
from vault import services
from vault.models import Client, Grant, SymmetricKey
from vault.operation_cache import operation_cache_clear


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    operation_cache_clear()


@pytest.fixture
def service(db) -> Client:
    return Client.objects.create(name="billing", created_by_name="test")


@pytest.fixture
def make_key(db) -> Callable[..., SymmetricKey]:
    def make(name: str, key_type: str = "aes-256-gcm", **kwargs) -> SymmetricKey:
        return services.symmetric_key_create(actor=None, name=name, key_type=key_type, **kwargs)

    return make


@pytest.fixture
def grant(db) -> Callable[..., Grant]:
    def make(client: Client, key: SymmetricKey, *operations: str) -> Grant:
        return Grant.objects.create(
            client=client, key=key, operations=",".join(operations), created_by_name="test"
        )

    return make
