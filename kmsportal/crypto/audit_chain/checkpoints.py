"""Signed checkpoints of the version 1 chain: payload, Ed25519 signature, the checkpoint chain."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from kmsportal.crypto.audit_chain.canonical import canonical_json

CHECKPOINT_FIELDS = ("sequence", "hash", "time", "previous_signature", "signature")

# --------------------------------------------------------------------------- checkpoints


def checkpoint_payload(
    *, sequence: int, event_hash: str, time: str, previous_signature: str
) -> bytes:
    """The bytes a checkpoint signature covers: canonical JSON of its four signed fields."""
    return canonical_json(
        {
            "sequence": sequence,
            "hash": event_hash,
            "time": time,
            "previous_signature": previous_signature,
        }
    )


def checkpoint_sign(private_key: Ed25519PrivateKey, payload: bytes) -> str:
    """Sign a checkpoint payload with the audit key; returns the signature as base64."""
    return base64.b64encode(private_key.sign(payload)).decode("ascii")


def checkpoint_verify(public_key: Ed25519PublicKey, payload: bytes, signature_b64: str) -> bool:
    """True iff ``signature_b64`` is the canonical base64 of a valid signature over ``payload``.

    Non-canonical base64 (other padding bits, whitespace) is refused: checkpoints chain by
    comparing signature *strings*, so one signature must have exactly one spelling.
    """
    if not isinstance(signature_b64, str):
        return False
    try:
        signature = base64.b64decode(signature_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    if base64.b64encode(signature).decode("ascii") != signature_b64:
        return False
    try:
        public_key.verify(signature, payload)
    except InvalidSignature:
        return False
    return True


def public_key_to_pem(pk: Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM of an Ed25519 public key."""
    return pk.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def public_key_from_pem(text: str) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM; ``ValueError`` if it is anything else."""
    try:
        key = serialization.load_pem_public_key(text.encode("utf-8"))
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"expected an Ed25519 public key, got {type(key).__name__}")
    return key


@dataclass(frozen=True, slots=True)
class CheckpointResult:
    """Outcome of :func:`verify_checkpoints`; ``broken_at`` is the offending checkpoint's sequence."""

    ok: bool
    checkpoints_verified: int
    broken_at: int | None
    problem: str | None


# --------------------------------------------------------------------------- checkpoint chain


def verify_checkpoints(
    checkpoints: Iterable[Mapping[str, Any]],
    public_key: Ed25519PublicKey,
    *,
    event_hashes: Mapping[int, str] | Callable[[int], str | None],
    expected_first_previous_signature: str | None = None,
    last_event_sequence: int | None = None,
) -> CheckpointResult:
    """Verify signed checkpoints (ascending) against the public key and the known event hashes.

    For every checkpoint, in this order: the signature verifies over
    :func:`checkpoint_payload`; its ``previous_signature`` equals the previous checkpoint's
    ``signature`` (for the first one: equals ``expected_first_previous_signature`` when that is
    given, ``""`` for the first checkpoint of the log); its sequence is greater than the
    previous one's; when the caller says the events are complete up to
    ``last_event_sequence``, it does not sign an event beyond it (tail truncated); and when
    ``event_hashes`` knows its sequence (a mapping, or a lookup returning ``None`` when
    unknown), the hashes are equal.
    """
    lookup = event_hashes.get if isinstance(event_hashes, Mapping) else event_hashes
    verified, _index, broken_at, problem = check_checkpoints(
        checkpoints, public_key, lookup, expected_first_previous_signature, last_event_sequence
    )
    return CheckpointResult(problem is None, verified, broken_at, problem)


def check_checkpoints(
    checkpoints: Iterable[Mapping[str, Any]],
    public_key: Ed25519PublicKey,
    lookup: Callable[[int], str | None],
    expected_first_previous_signature: str | None,
    last_event_sequence: int | None,
) -> tuple[int, int | None, int | None, str | None]:
    """Core of :func:`verify_checkpoints`: (verified, index of broken one, its sequence, problem)."""
    previous: tuple[int, str] | None = None  # sequence and signature of the last good one
    verified = 0
    for index, checkpoint in enumerate(checkpoints):
        try:
            sequence, hash_, time, previous_signature, signature = (
                checkpoint[field] for field in CHECKPOINT_FIELDS
            )
        except KeyError as exc:
            return verified, index, None, f"checkpoint #{index + 1}: missing field {exc.args[0]!r}"
        if type(sequence) is not int or not all(
            isinstance(v, str) for v in (hash_, time, previous_signature, signature)
        ):
            return verified, index, None, f"checkpoint #{index + 1}: a field has the wrong type"
        name = f"checkpoint at {sequence}"
        payload = checkpoint_payload(
            sequence=sequence, event_hash=hash_, time=time, previous_signature=previous_signature
        )
        problem = None
        if not checkpoint_verify(public_key, payload, signature):
            problem = f"{name}: signature does not verify with the public key (forged or altered)"
        elif previous is None:
            if expected_first_previous_signature not in (None, previous_signature):
                problem = (
                    f"{name}: previous_signature does not match the expected one "
                    "(earlier checkpoints missing?)"
                )
        elif previous_signature != previous[1]:
            problem = (
                f"{name}: previous_signature does not match the signature of the checkpoint "
                f"at {previous[0]} (checkpoint removed, inserted or reordered)"
            )
        elif sequence <= previous[0]:
            problem = f"{name} follows the checkpoint at {previous[0]}: sequence not increasing"
        if problem is None and last_event_sequence is not None and sequence > last_event_sequence:
            # A validly signed checkpoint proves that event existed: the log lost its tail.
            problem = (
                f"checkpoint signs event {sequence} but the log ends at {last_event_sequence} "
                "(tail truncated)"
            )
        if problem is None:
            known = lookup(sequence)
            if known is not None and known != hash_:
                problem = f"{name} signs hash {hash_} but event {sequence} has hash {known}"
        if problem is not None:
            return verified, index, sequence, problem
        previous = (sequence, signature)
        verified += 1
    return verified, None, None, None
