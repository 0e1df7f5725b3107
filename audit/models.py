"""The audit log: append-only events in an RFC 9162 Merkle tree with signed tree heads.

Invariants (see audit.services and audit.sequencer):
- An event is inserted by `audit_event_record` in its caller's transaction, without a global
  lock: `sequence` comes from a database sequence (unique, increasing, not gap-free), `hash`
  is its RFC 9162 leaf hash and `mac` its HMAC under the sealed MAC key
  (kmsportal.crypto.audit_log).
- The sequencer (one at a time) gives committed events leaf indexes 0, 1, 2, ... (AuditLeaf),
  stores the completed perfect subtrees (AuditTreeNode) and signs a tree head (AuditTreeHead).
- Events written before version 2 (migration 0006) are hash-chained (`prev_hash`, the chain
  head row and AuditCheckpoint) and became the first leaves.
- Rows are never updated or deleted: models and querysets refuse, and triggers on every audit
  table refuse UPDATE and DELETE on PostgreSQL and SQLite (and TRUNCATE on PostgreSQL).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.db import models

from kmsportal.crypto.audit_chain import GENESIS_HASH, format_time
from kmsportal.crypto.canonical import canonical_json


class AuditLogIsAppendOnly(Exception):
    """An attempt to change or remove audit rows."""


class CanonicalJSONField(models.TextField):  # type: ignore[type-arg]  # stub generics unused at run time
    """A JSON value stored as its canonical JSON text (kmsportal.crypto.canonical), read as Python.

    The column holds exactly the bytes the event hash covers for it, so the chain check can
    let the database render events (audit.verification) instead of decoding and re-encoding
    every row in Python; a database JSON type would not do: PostgreSQL's jsonb reorders keys
    and adds spaces. Text that is not JSON (only raw tampering can put it there) reads back as
    the raw string: pages still show it, and the chain check fails at that row, since recorded
    details are always an object.
    """

    description = "JSON stored as canonical JSON text"
    # For django-stubs: what the field takes and gives is any JSON value, not text.
    _pyi_private_set_type: Any
    _pyi_private_get_type: Any

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        try:
            return json.loads(value)
        except ValueError:
            return value

    def to_python(self, value: Any) -> Any:
        return value

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return canonical_json(value).decode("utf-8")

    def value_to_string(self, obj: models.Model) -> Any:
        # Like JSONField: serializers (dumpdata) embed the value itself, not its text.
        return self.value_from_object(obj)


class AuditAction(models.TextChoices):
    """Every event type; the README lists them with what each one records."""

    SIGN_IN = "auth.sign_in", "Signed in"
    SIGN_IN_FAILED = "auth.sign_in_failed", "Sign-in failed"
    SIGN_IN_LOCKED = "auth.sign_in_locked", "Sign-in refused: too many failures"
    SIGN_OUT = "auth.sign_out", "Signed out"
    PASSWORD_CHANGED = "auth.password_changed", "Changed own password"
    USER_CREATED = "user.created", "User created"
    USER_ROLES_CHANGED = "user.roles_changed", "User roles changed"
    USER_DEACTIVATED = "user.deactivated", "User deactivated"
    USER_REACTIVATED = "user.reactivated", "User reactivated"
    USER_PASSWORD_RESET = "user.password_reset", "User password reset"
    ACCESS_DENIED = "access.denied", "Access denied"
    AUDIT_SIGNING_KEY_CREATED = "audit.signing_key_created", "Audit signing key created"
    AUDIT_CHECKPOINT = "audit.checkpoint", "Audit checkpoint signed"
    AUDIT_SIGNING_KEY_ROTATED = "audit.signing_key_rotated", "Audit signing key rotated"
    AUDIT_EVENT_REJECTED = "audit.event_rejected", "Audit event rejected: bad MAC"
    AUDIT_VERIFIED = "audit.verified", "Audit chain verified"
    AUDIT_EXPORTED = "audit.exported", "Audit log exported"


class ActorType(models.TextChoices):
    USER = "user", "User"
    CLIENT = "client", "Client service"
    SYSTEM = "system", "System"


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    DENIED = "denied", "Denied"
    ERROR = "error", "Error"


class AppendOnlyQuerySet(models.QuerySet):  # type: ignore[type-arg]  # shared by every audit model
    def update(self, **kwargs: Any) -> int:
        raise AuditLogIsAppendOnly("audit rows cannot be updated")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("audit rows cannot be deleted")

    update.queryset_only = True  # type: ignore[attr-defined]
    delete.queryset_only = True  # type: ignore[attr-defined]


AuditEventQuerySet = AppendOnlyQuerySet


class AppendOnlyModel(models.Model):
    """Rows written once: save() only inserts, delete() refuses."""

    objects = AppendOnlyQuerySet.as_manager()
    # A sealed key column `manage.py rewrap` may re-seal in place (the triggers allow an
    # UPDATE of that column alone; see audit migration 0006).
    resealable_field: str | None = None

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        update_fields = kwargs.get("update_fields")
        if (
            not self._state.adding
            and self.resealable_field
            and update_fields is not None
            and list(update_fields) == [self.resealable_field]
        ):
            super().save(*args, **kwargs)
            return
        if not self._state.adding:
            raise AuditLogIsAppendOnly(f"{self._meta.label} rows cannot be changed once written")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly(f"{self._meta.label} rows cannot be deleted")


class AuditMacKey(AppendOnlyModel):
    """A random 256-bit key for the per-event MACs, sealed under the master keyring."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sealed_key = models.BinaryField()
    created_at = models.DateTimeField(auto_now_add=True)

    resealable_field = "sealed_key"

    class Meta:
        ordering = ["-created_at"]
        default_permissions = ()

    def __str__(self) -> str:
        return f"audit MAC key {self.id}"

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed key to this row and purpose."""
        return f"audit.AuditMacKey:{self.id}:hmac-sha256".encode()


class AuditEvent(models.Model):
    """One security-relevant action, allowed or denied. Never changed once written."""

    # Unique and increasing, from a database sequence (SQLite: max + 1 under its write lock);
    # not gap-free: a rolled-back action leaves a hole. The tree's leaf index is the order.
    sequence = models.BigIntegerField(primary_key=True)
    time = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=10, choices=ActorType.choices)
    actor_id = models.CharField(max_length=64, blank=True)
    # The readable name is kept even if the user is later deleted or renamed.
    actor_name = models.CharField(max_length=150)
    # Event types come from every app (audit.registry); no database choices, so a new type
    # needs no migration of this append-only table.
    action = models.CharField(max_length=64)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_label = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    source_ip = models.CharField(max_length=45, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    # Canonical JSON text: the very bytes hashed (see CanonicalJSONField).
    details = CanonicalJSONField(default=dict, blank=True)
    # Version 1 (chained) events: the previous event's hash; "" for version 2 events.
    prev_hash = models.CharField(max_length=64)
    # Version 1: the chain hash; version 2: the RFC 9162 leaf hash of the entry, hex.
    hash = models.CharField(max_length=64, unique=True)
    # Version 2: HMAC-SHA256 of the entry under `mac_key`, hex ("" for version 1 events).
    mac = models.CharField(max_length=64, blank=True, default="")
    mac_key = models.ForeignKey(AuditMacKey, null=True, blank=True, on_delete=models.PROTECT)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-sequence"]
        # Read, export and verify; nobody may add, change or delete rows by permission.
        default_permissions = ("view",)
        permissions = [
            ("export_auditevent", "Can export the audit log"),
            ("verify_auditevent", "Can verify the audit chain"),
        ]
        indexes = [
            models.Index(fields=["action", "sequence"], name="audit_action_seq"),
            models.Index(fields=["actor_name", "sequence"], name="audit_actor_seq"),
            models.Index(fields=["outcome", "sequence"], name="audit_outcome_seq"),
            models.Index(fields=["target_type", "target_id", "sequence"], name="audit_target_seq"),
        ]

    def __str__(self) -> str:
        return f"#{self.sequence} {self.action} by {self.actor_name} ({self.outcome})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self._state.adding:
            raise AuditLogIsAppendOnly("audit events cannot be changed once written")
        kwargs["force_insert"] = True
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise AuditLogIsAppendOnly("audit events cannot be deleted")

    @property
    def action_label(self) -> str:
        from .registry import audit_action_label

        return audit_action_label(self.action)

    def chain_fields(self) -> dict[str, Any]:
        """The hashed fields, in the form kmsportal.crypto.audit_chain expects."""
        return {
            "sequence": self.sequence,
            "time": format_time(self.time),
            "actor_type": self.actor_type,
            "actor_id": self.actor_id,
            "actor_name": self.actor_name,
            "action": self.action,
            "target_type": self.target_type,
            "target_id": self.target_id,
            "target_label": self.target_label,
            "outcome": self.outcome,
            "source_ip": self.source_ip,
            "request_id": self.request_id,
            "details": self.details,
        }


class AuditChainHead(AppendOnlyModel):
    """The last event of the version 1 hash chain (frozen since version 2, migration 0006).

    Version 1 appends locked this row; version 2 appends take no global lock.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    sequence = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, default=GENESIS_HASH)

    class Meta:
        default_permissions = ()
        constraints = [models.CheckConstraint(condition=models.Q(id=1), name="audit_single_head")]

    def __str__(self) -> str:
        return f"audit chain head at #{self.sequence}"


class AuditSigningKey(AppendOnlyModel):
    """An Ed25519 key that signs tree heads (and version 1 checkpoints); the private half only
    ever sealed. The newest row signs; rotation adds a row and records it in the log."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    sealed_private_key = models.BinaryField()
    public_key_pem = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    resealable_field = "sealed_private_key"

    class Meta:
        ordering = ["-created_at"]
        default_permissions = ()

    def __str__(self) -> str:
        return f"audit signing key {self.id}"

    @property
    def aad(self) -> bytes:
        """Associated data binding the sealed private key to this row and purpose."""
        return f"audit.AuditSigningKey:{self.id}:ed25519".encode()


class AuditCheckpoint(AppendOnlyModel):
    """Version 1: a signature over (sequence, hash, time, previous checkpoint's signature)."""

    sequence = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    time = models.DateTimeField()
    previous_signature = models.TextField(blank=True)
    signature = models.TextField()
    signing_key = models.ForeignKey(AuditSigningKey, on_delete=models.PROTECT)

    class Meta:
        ordering = ["-sequence"]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"checkpoint at #{self.sequence}"

    def chain_fields(self) -> dict[str, Any]:
        return {
            "sequence": self.sequence,
            "hash": self.hash,
            "time": format_time(self.time),
            "previous_signature": self.previous_signature,
            "signature": self.signature,
        }


class AuditLeaf(AppendOnlyModel):
    """The event at a leaf of the tree; written by the sequencer."""

    # An auto field only for its storage: SQLite then keeps rows in leaf order (the rowid),
    # which the bulk verification reads in ranges. Values are always given by the sequencer.
    leaf_index = models.BigAutoField(primary_key=True)
    event = models.OneToOneField(AuditEvent, on_delete=models.PROTECT, related_name="leaf")
    leaf_hash = models.BinaryField(max_length=32)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"leaf {self.leaf_index}"


def tree_node_key(level: int, index: int) -> int:
    """Primary key of the perfect subtree ``(level, index)``: level in the top 8 bits."""
    return (level << 48) | index


class AuditTreeNode(AppendOnlyModel):
    """The hash of a perfect subtree of 2**level leaves (level >= 1), for proofs in O(log n)."""

    key = models.BigAutoField(primary_key=True)  # see AuditLeaf.leaf_index; tree_node_key()
    hash = models.BinaryField(max_length=32)

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"tree node {self.key >> 48}/{self.key & ((1 << 48) - 1)}"


class AuditTreeHead(AppendOnlyModel):
    """A signed tree head: the tree of the first `tree_size` leaves has root `root_hash`."""

    tree_size = models.BigIntegerField(primary_key=True)
    root_hash = models.CharField(max_length=64)
    timestamp = models.DateTimeField()
    key_id = models.CharField(max_length=64)
    signature = models.TextField()
    signing_key = models.ForeignKey(AuditSigningKey, on_delete=models.PROTECT)

    class Meta:
        ordering = ["-tree_size"]
        default_permissions = ()

    def __str__(self) -> str:
        return f"tree head of size {self.tree_size}"


class AuditRejectedEvent(AppendOnlyModel):
    """An event the sequencer refused to integrate: its MAC did not verify (forged or altered)."""

    event = models.OneToOneField(
        AuditEvent, primary_key=True, on_delete=models.PROTECT, related_name="rejection"
    )
    reason = models.CharField(max_length=255)
    time = models.DateTimeField()

    class Meta:
        default_permissions = ()

    def __str__(self) -> str:
        return f"rejected event {self.event_id}"
