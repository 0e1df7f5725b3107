"""Key states and the one transition table (NIST SP 800-57 Part 1, section 7).

Every lifecycle service asks `next_state(key_state, action)` before changing anything; an
action the current state does not allow raises `InvalidTransition`, whose message names both.

States of a key:
    pre-active ──activate──▶ active ◀──resume── suspended
        │                     │  ╲──suspend──▶    │
        │                     ╰──deactivate──▶ deactivated ◀─┘
        ╰──── compromise (from any live state) ──▶ compromised
    any non-destroyed state ──(two-person approval)──▶ pending destruction
    pending destruction ──cancel──▶ the state it came from
    pending destruction ──destroy (after the waiting period)──▶ destroyed / destroyed-compromised

"Pending destruction" is not a NIST state: like AWS KMS's PendingDeletion, it makes the key
unusable during the waiting period while the destruction can still be cancelled.
"""

from __future__ import annotations

from django.db import models

from kmsportal.crypto.errors import KMSError


class KeyState(models.TextChoices):
    PRE_ACTIVE = "pre_active", "pre-active"
    ACTIVE = "active", "active"
    SUSPENDED = "suspended", "suspended"
    DEACTIVATED = "deactivated", "deactivated"
    COMPROMISED = "compromised", "compromised"
    PENDING_DESTRUCTION = "pending_destruction", "pending destruction"
    DESTROYED = "destroyed", "destroyed"
    DESTROYED_COMPROMISED = "destroyed_compromised", "destroyed (compromised)"


class VersionState(models.TextChoices):
    """A version is active (primary: encrypts and decrypts), deactivated (decrypts only),
    compromised (never used again), or destroyed (material erased)."""

    PRE_ACTIVE = "pre_active", "pre-active"
    ACTIVE = "active", "active (primary)"
    DEACTIVATED = "deactivated", "decrypt only"
    COMPROMISED = "compromised", "compromised"
    DESTROYED = "destroyed", "destroyed"
    DESTROYED_COMPROMISED = "destroyed_compromised", "destroyed (compromised)"


class KeyAction(models.TextChoices):
    ACTIVATE = "activate", "activate"
    ROTATE = "rotate", "rotate"
    SUSPEND = "suspend", "suspend"
    RESUME = "resume", "resume"
    DEACTIVATE = "deactivate", "deactivate"
    COMPROMISE_KEY = "compromise_key", "report compromised"
    COMPROMISE_VERSION = "compromise_version", "report a version compromised"
    REQUEST_DESTRUCTION = "request_destruction", "request destruction of"
    SCHEDULE_DESTRUCTION = "schedule_destruction", "schedule destruction of"
    CANCEL_DESTRUCTION = "cancel_destruction", "cancel destruction of"
    DESTROY = "destroy", "destroy"


LIVE = (KeyState.PRE_ACTIVE, KeyState.ACTIVE, KeyState.SUSPENDED, KeyState.DEACTIVATED)
DESTROYABLE = (*LIVE, KeyState.COMPROMISED)
# The state after the action; None where the service decides from the row (cancel returns to
# the state before destruction was scheduled; destroy keeps "compromised" visible).
_SAME = "same"
TRANSITIONS: dict[KeyAction, dict[KeyState, KeyState | str | None]] = {
    KeyAction.ACTIVATE: {KeyState.PRE_ACTIVE: KeyState.ACTIVE},
    KeyAction.ROTATE: {KeyState.ACTIVE: KeyState.ACTIVE},
    KeyAction.SUSPEND: {KeyState.ACTIVE: KeyState.SUSPENDED},
    KeyAction.RESUME: {KeyState.SUSPENDED: KeyState.ACTIVE},
    KeyAction.DEACTIVATE: {
        KeyState.ACTIVE: KeyState.DEACTIVATED,
        KeyState.SUSPENDED: KeyState.DEACTIVATED,
    },
    KeyAction.COMPROMISE_KEY: {state: KeyState.COMPROMISED for state in LIVE},
    KeyAction.COMPROMISE_VERSION: {
        KeyState.ACTIVE: _SAME,
        KeyState.SUSPENDED: _SAME,
        KeyState.DEACTIVATED: _SAME,
    },
    KeyAction.REQUEST_DESTRUCTION: {state: _SAME for state in DESTROYABLE},
    KeyAction.SCHEDULE_DESTRUCTION: {state: KeyState.PENDING_DESTRUCTION for state in DESTROYABLE},
    KeyAction.CANCEL_DESTRUCTION: {KeyState.PENDING_DESTRUCTION: None},
    KeyAction.DESTROY: {KeyState.PENDING_DESTRUCTION: None},
}


class InvalidTransition(KMSError):
    """The key's current state does not allow the action."""

    code = "invalid_transition"
    status = 409

    def __init__(self, state: KeyState, action: KeyAction) -> None:
        self.state = KeyState(state)
        self.action = KeyAction(action)
        super().__init__(f"cannot {self.action.label} a key that is {self.state.label}")


def next_state(state: KeyState | str, action: KeyAction) -> KeyState | None:
    """The state `action` leads to from `state` (None: decided by the service).

    Raises InvalidTransition if the table has no entry for the pair.
    """
    allowed = TRANSITIONS[KeyAction(action)]
    state = KeyState(state)
    if state not in allowed:
        raise InvalidTransition(state, action)
    target = allowed[state]
    if target == _SAME:
        return state
    return None if target is None else KeyState(target)


def state_after(state: KeyState | str, action: KeyAction) -> KeyState:
    """`next_state` for an action whose table entry names the state it leads to: every
    action but cancel-destruction and destroy (there the service decides from the row)."""
    target = next_state(state, action)
    if target is None:
        raise ValueError(f"the service decides the state after {KeyAction(action).label}")
    return target


def allowed_actions(state: KeyState | str) -> list[KeyAction]:
    """Actions a person may start from `state` (what the key page offers)."""
    state = KeyState(state)
    return [action for action, table in TRANSITIONS.items() if state in table]
