"""Vault fixtures: two key custodians, a key factory, and keys put into each state through
the real services (the only direct writes move a deadline into the past)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, connections, transaction
from django.utils import timezone

from accounts.roles import Role
from audit.models import AuditEvent
from tests.factories import approver_make
from vault import services
from vault.lifecycle import KeyState
from vault.models import DestructionRequest, KeyVersion, SymmetricKey


@pytest.fixture
def custodian(db) -> User:
    """A key custodian who may approve (own password, own authenticator)."""
    return approver_make("kim-custodian", Role.KEY_CUSTODIAN)


@pytest.fixture
def second_custodian(db) -> User:
    return approver_make("lou-custodian", Role.KEY_CUSTODIAN)


@pytest.fixture
def key(db) -> Callable[..., SymmetricKey]:
    """Create a key through the service (actor: the system unless given)."""

    def make(name: str = "orders-db", **kwargs: Any) -> SymmetricKey:
        kwargs.setdefault("actor", None)
        return services.symmetric_key_create(name=name, **kwargs)

    return make


def schedule_destruction(
    key: SymmetricKey, requester: User, approver: User, *, waiting_days: int = 7
) -> SymmetricKey:
    request = services.destruction_request_create(
        actor=requester, key=key, waiting_days=waiting_days, reason="retired"
    )
    return services.destruction_request_approve(actor=approver, request=request)


def make_due(key: SymmetricKey) -> None:
    """Move the end of the destruction waiting period into the past."""
    SymmetricKey.objects.filter(pk=key.pk).update(
        destroy_after=timezone.now() - timedelta(seconds=1)
    )


@pytest.fixture
def key_in_state(key, custodian, second_custodian) -> Callable[..., SymmetricKey]:
    """A fresh key brought into `state` through the lifecycle services."""

    def make(state: KeyState, name: str = "orders-db", **kwargs: Any) -> SymmetricKey:
        if state == KeyState.PRE_ACTIVE:
            kwargs.setdefault("activate_at", timezone.now() + timedelta(days=1))
        k = key(name, **kwargs)
        if state == KeyState.SUSPENDED:
            services.symmetric_key_suspend(actor=custodian, key=k)
        elif state == KeyState.DEACTIVATED:
            services.symmetric_key_deactivate(actor=custodian, key=k)
        elif state in (KeyState.COMPROMISED, KeyState.DESTROYED_COMPROMISED):
            services.symmetric_key_compromise(actor=custodian, key=k, reason="leaked in a log")
        if state in (
            KeyState.PENDING_DESTRUCTION,
            KeyState.DESTROYED,
            KeyState.DESTROYED_COMPROMISED,
        ):
            schedule_destruction(k, custodian, second_custodian)
        if state in (KeyState.DESTROYED, KeyState.DESTROYED_COMPROMISED):
            make_due(k)
            assert services.symmetric_keys_destroy_due() == [k.name]
        k.refresh_from_db()
        assert k.state == state
        return k

    return make


def audit_count() -> int:
    return AuditEvent.objects.count()


def snapshot(key: SymmetricKey) -> dict[str, Any]:
    """Everything a refused action must leave as it was."""
    row = SymmetricKey.objects.filter(pk=key.pk).values().get()
    versions = [
        {**v, "sealed_material": bytes(v["sealed_material"] or b"")}
        for v in KeyVersion.objects.filter(key=key).order_by("number").values()
    ]
    requests = list(
        DestructionRequest.objects.filter(key=key).order_by("pk").values("pk", "status")
    )
    return {"key": row, "versions": versions, "requests": requests, "audit": audit_count()}


@contextmanager
def another_node(step: Callable[[], object]) -> Iterator[None]:
    """Run `step` in another connection's transaction and commit it only once this
    connection waits for a row lock of a key (PostgreSQL, transactional tests only).

    Whatever the body reads before it locks the key still shows the state before `step`,
    like a second portal node that acted a moment earlier.
    """
    started = threading.Event()
    problems: list[BaseException] = []

    def work() -> None:
        try:
            with transaction.atomic():
                step()
                started.set()
                deadline = time.monotonic() + 10
                with connection.cursor() as cursor:
                    while time.monotonic() < deadline:
                        # Inside a transaction the activity view is a cached snapshot.
                        cursor.execute("SELECT pg_stat_clear_snapshot()")
                        cursor.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
                            "AND datname = current_database() AND wait_event_type = 'Lock' "
                            "AND query LIKE '%vault_symmetrickey%FOR UPDATE%'"
                        )
                        if cursor.fetchone()[0]:
                            break
                        time.sleep(0.02)
                    else:
                        problems.append(TimeoutError("the test's connection never waited"))
        except BaseException as exc:  # reported in the test's thread
            problems.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=work)
    thread.start()
    assert started.wait(10), problems
    try:
        yield
    finally:
        thread.join(15)
    assert not problems, problems
