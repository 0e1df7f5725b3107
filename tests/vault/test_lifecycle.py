"""Every (state, action) pair of the transition table, through the real services.

Allowed pairs succeed and end in the state the table names; forbidden pairs raise
InvalidTransition naming the state and the action, and change nothing at all.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.utils import timezone

from vault import services
from vault.lifecycle import (
    TRANSITIONS,
    InvalidTransition,
    KeyAction,
    KeyState,
    allowed_actions,
    next_state,
)
from vault.models import DestructionRequest, SymmetricKey

from .conftest import audit_count, make_due, snapshot

pytestmark = pytest.mark.django_db


def _request_for_approval(key: SymmetricKey, requester, state: KeyState) -> DestructionRequest:
    if state in TRANSITIONS[KeyAction.REQUEST_DESTRUCTION]:
        return services.destruction_request_create(
            actor=requester, key=key, waiting_days=7, reason="retired"
        )
    # No service makes a pending request for a key that cannot be destroyed (any more): the
    # row is written directly so that the approval itself meets the table.
    now = timezone.now()
    return DestructionRequest.objects.create(
        key=key,
        waiting_days=7,
        requested_by=requester,
        requested_by_name=requester.username,
        requested_at=now,
        expires_at=now + timedelta(hours=24),
    )


def perform(action: KeyAction, key: SymmetricKey, a, b, state: KeyState) -> Callable[[], object]:
    """The service call for `action`; custodian `a` acts (and requests), `b` approves."""
    calls: dict[KeyAction, Callable[[], object]] = {
        KeyAction.ACTIVATE: lambda: services.symmetric_key_activate(actor=a, key=key),
        KeyAction.ROTATE: lambda: services.symmetric_key_rotate(actor=a, key=key),
        KeyAction.SUSPEND: lambda: services.symmetric_key_suspend(actor=a, key=key),
        KeyAction.RESUME: lambda: services.symmetric_key_resume(actor=a, key=key),
        KeyAction.DEACTIVATE: lambda: services.symmetric_key_deactivate(actor=a, key=key),
        KeyAction.COMPROMISE_KEY: lambda: services.symmetric_key_compromise(
            actor=a, key=key, reason="found in a backup"
        ),
        KeyAction.COMPROMISE_VERSION: lambda: services.key_version_compromise(
            actor=a, key=key, number=1, reason="found in a backup"
        ),
        KeyAction.REQUEST_DESTRUCTION: lambda: services.destruction_request_create(
            actor=a, key=key, waiting_days=7, reason="retired"
        ),
        KeyAction.CANCEL_DESTRUCTION: lambda: services.symmetric_key_destruction_cancel(
            actor=a, key=key
        ),
        KeyAction.DESTROY: lambda: services.symmetric_key_destroy(actor=None, key=key),
    }
    if action == KeyAction.SCHEDULE_DESTRUCTION:
        request = _request_for_approval(key, a, state)
        return lambda: services.destruction_request_approve(actor=b, request=request)
    if action == KeyAction.DESTROY and state == KeyState.PENDING_DESTRUCTION:
        make_due(key)  # the waiting period is over
    return calls[action]


def expected_state(state: KeyState, action: KeyAction) -> KeyState:
    target = next_state(state, action)
    if target is not None:
        return target
    # Decided by the service: the fixture schedules destruction from "active".
    return KeyState.ACTIVE if action == KeyAction.CANCEL_DESTRUCTION else KeyState.DESTROYED


PAIRS = [(state, action) for state in KeyState for action in KeyAction]


def test_table_covers_every_action_and_only_known_states() -> None:
    assert set(TRANSITIONS) == set(KeyAction)
    for table in TRANSITIONS.values():
        assert set(table) <= set(KeyState)


@pytest.mark.parametrize(("state", "action"), PAIRS, ids=[f"{s.value}-{a.value}" for s, a in PAIRS])
def test_transition(
    key_in_state, custodian, second_custodian, state: KeyState, action: KeyAction
) -> None:
    key = key_in_state(state)
    call = perform(action, key, custodian, second_custodian, state)
    if state in TRANSITIONS[action]:
        before = audit_count()
        call()
        key.refresh_from_db()
        assert key.state == expected_state(state, action)
        assert audit_count() == before + 1  # one event per service, in its transaction
        return
    before = snapshot(key)
    with pytest.raises(InvalidTransition) as caught:
        call()
    message = str(caught.value)
    assert caught.value.state == state and caught.value.action == action
    assert state.label in message, message
    assert action.label in message, message
    assert snapshot(key) == before


@pytest.mark.parametrize("state", list(KeyState), ids=[s.value for s in KeyState])
def test_allowed_actions_match_the_table(state: KeyState) -> None:
    assert set(allowed_actions(state)) == {a for a in KeyAction if state in TRANSITIONS[a]}


def test_destroyed_states_allow_nothing() -> None:
    assert allowed_actions(KeyState.DESTROYED) == []
    assert allowed_actions(KeyState.DESTROYED_COMPROMISED) == []
