"""What gets recorded, inside whose transaction, and what never does."""

from __future__ import annotations

import contextlib
import re

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.test import Client

from accounts import services as account_services
from accounts.roles import Role
from audit.models import AuditAction, AuditEvent, AuditLogIsAppendOnly
from audit.services import AuditDetailsError, audit_event_record
from tests.audit.helpers import TABLES, append_events, make_audit_inserts_fail, raw_tampering
from tests.factories import TEST_PASSWORD

pytestmark = pytest.mark.django_db


def last(action: str) -> AuditEvent:
    return AuditEvent.objects.filter(action=action).order_by("-sequence").first()


def test_sign_in_success_and_sign_out_are_recorded(client: Client, admin_user: User) -> None:
    client.post(
        "/accounts/login/",
        {"username": admin_user.username, "password": TEST_PASSWORD},
        REMOTE_ADDR="192.0.2.7",
    )
    event = last(AuditAction.SIGN_IN)
    assert event.actor_name == admin_user.username
    assert event.actor_id == str(admin_user.pk)
    assert event.outcome == "success"
    assert event.source_ip == "192.0.2.7"
    assert len(event.request_id) == 32
    client.post("/accounts/logout/")
    assert last(AuditAction.SIGN_OUT).actor_name == admin_user.username


def test_failed_sign_in_records_the_username_never_the_password(
    client: Client, admin_user: User
) -> None:
    client.post("/accounts/login/", {"username": admin_user.username, "password": "Wrong-Pass-123"})
    event = last(AuditAction.SIGN_IN_FAILED)
    assert event.outcome == "denied"
    assert event.details == {"username": admin_user.username, "reason": "wrong password"}
    assert "Wrong-Pass-123" not in str(event.chain_fields())


def test_failed_sign_in_with_unknown_name_hides_it(client: Client, db) -> None:
    # People type passwords into the username field: an unknown name is never stored in clear.
    client.post("/accounts/login/", {"username": "hunter2-secret", "password": "x"})
    client.post("/accounts/login/", {"username": "hunter2-secret", "password": "y"})
    first, second = AuditEvent.objects.filter(action=AuditAction.SIGN_IN_FAILED).order_by(
        "sequence"
    )
    assert "hunter2-secret" not in str(first.chain_fields())
    assert first.details["reason"] == "unknown user"
    assert first.details["username_fingerprint"] == second.details["username_fingerprint"]


def test_user_management_is_recorded(signed_in, admin_user: User, make_user) -> None:
    client = signed_in(admin_user)
    client.post("/users/new/", {"username": "olga", "roles": ["auditor"]})
    olga = User.objects.get(username="olga")
    created = last(AuditAction.USER_CREATED)
    assert created.actor_name == admin_user.username
    assert created.target_label == "olga" and created.target_id == str(olga.pk)
    assert created.details["roles"] == ["auditor"]

    client.post(f"/users/{olga.pk}/roles/", {"roles": ["key_custodian"]})
    assert last(AuditAction.USER_ROLES_CHANGED).details == {
        "from": ["auditor"],
        "to": ["key_custodian"],
        "waiting_for_approval": [],
        "reason": "",
    }
    client.post(f"/users/{olga.pk}/password/")
    assert last(AuditAction.USER_PASSWORD_RESET).details == {"invitation": True}
    client.post(f"/users/{olga.pk}/deactivate/")
    assert last(AuditAction.USER_DEACTIVATED).target_label == "olga"
    client.post(f"/users/{olga.pk}/reactivate/")
    assert last(AuditAction.USER_REACTIVATED).target_label == "olga"


def test_actor_name_survives_user_deletion(make_user) -> None:
    actor = make_user("temp-admin", Role.ADMINISTRATOR)
    account_services.user_create(actor=actor, username="other", roles=[Role.AUDITOR])
    sequence = last(AuditAction.USER_CREATED).sequence
    actor.delete()
    event = AuditEvent.objects.get(sequence=sequence)
    assert event.actor_name == "temp-admin"
    assert event.actor_type == "user"


def test_every_403_is_recorded_as_access_denied(role_client) -> None:
    client = role_client(Role.KEY_CUSTODIAN)
    assert client.get("/users/").status_code == 403
    event = last(AuditAction.ACCESS_DENIED)
    assert event.outcome == "denied"
    assert event.actor_name == "user-key_custodian"
    assert event.details["path"] == "/users/"
    assert event.target_id == "accounts:user_list"


def test_csrf_refusal_is_recorded(signed_in, admin_user: User) -> None:
    client = signed_in(admin_user)  # password and second factor
    client.handler.enforce_csrf_checks = True
    response = client.post("/users/new/", {"username": "x"})
    assert response.status_code == 403
    event = last(AuditAction.ACCESS_DENIED)
    assert event.details["reason"].startswith("CSRF check failed")


def test_event_rolls_back_with_the_action(db) -> None:
    class Boom(Exception):
        pass

    before = AuditEvent.objects.count()
    with pytest.raises(Boom), transaction.atomic():
        audit_event_record(action=AuditAction.USER_CREATED, target_label="never")
        raise Boom
    assert AuditEvent.objects.count() == before


def test_fail_closed_user_change_is_not_saved_when_audit_cannot_be_written(
    admin_user: User, make_user
) -> None:
    target = make_user("pat", Role.AUDITOR)
    # Break the audit log for real: its head row disappears while events exist.
    with raw_tampering() as cursor:
        make_audit_inserts_fail(cursor)
    with pytest.raises(Exception, match="audit insert refused"):
        account_services.user_deactivate(actor=admin_user, user=target)
    target.refresh_from_db()
    assert target.is_active
    with pytest.raises(Exception, match="audit insert refused"):
        account_services.user_create(actor=admin_user, username="quinn", roles=[Role.AUDITOR])
    assert not User.objects.filter(username="quinn").exists()


def test_a_caught_audit_failure_still_rolls_the_change_back(make_user) -> None:
    """A caller that swallows the error cannot commit a change without its audit event."""
    target = make_user("sam", Role.AUDITOR)
    with raw_tampering() as cursor:
        make_audit_inserts_fail(cursor)
    with transaction.atomic():
        User.objects.filter(pk=target.pk).update(is_active=False)
        with contextlib.suppress(DatabaseError):  # a careless caller
            audit_event_record(action=AuditAction.USER_DEACTIVATED, target=target)
        assert transaction.get_connection().needs_rollback
    target.refresh_from_db()
    assert target.is_active


def test_fail_closed_through_the_portal(signed_in, admin_user: User, make_user) -> None:
    target = make_user("rita", Role.AUDITOR)
    client = signed_in(admin_user)
    client.raise_request_exception = False
    with raw_tampering() as cursor:
        make_audit_inserts_fail(cursor)
    response = client.post(f"/users/{target.pk}/deactivate/")
    assert response.status_code == 500
    target.refresh_from_db()
    assert target.is_active


def test_details_refuse_secrets_and_unhashable_values(db) -> None:
    with pytest.raises(AuditDetailsError, match="secrets are never written"):
        audit_event_record(action=AuditAction.USER_CREATED, details={"password": "x"})
    with pytest.raises(AuditDetailsError, match="secrets are never written"):
        audit_event_record(
            action=AuditAction.USER_CREATED, details={"nested": {"private_key": "x"}}
        )
    with pytest.raises(AuditDetailsError, match="float"):
        audit_event_record(action=AuditAction.USER_CREATED, details={"ratio": 0.5})
    assert not AuditEvent.objects.filter(action=AuditAction.USER_CREATED).exists()


def test_model_and_queryset_refuse_changes(db) -> None:
    (event,) = append_events(1)
    event.target_label = "changed"
    with pytest.raises(AuditLogIsAppendOnly):
        event.save()
    with pytest.raises(AuditLogIsAppendOnly):
        event.delete()
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.filter(sequence=event.sequence).update(target_label="x")
    with pytest.raises(AuditLogIsAppendOnly):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(sequence=event.sequence).target_label != "changed"


# One UPDATE per audit table that changes a column the triggers protect (on the sealed key
# tables, a column other than the sealed one, which `rewrap` may re-seal).
_UPDATES = {
    "audit_auditevent": "UPDATE audit_auditevent SET target_label = 'x'",
    "audit_auditcheckpoint": "UPDATE audit_auditcheckpoint SET signature = 'x'",
    "audit_auditchainhead": "UPDATE audit_auditchainhead SET hash = 'x'",
    "audit_auditsigningkey": "UPDATE audit_auditsigningkey SET public_key_pem = 'x'",
    "audit_auditmackey": "UPDATE audit_auditmackey SET created_at = created_at - interval '1 day'",
    "audit_auditleaf": "UPDATE audit_auditleaf SET leaf_hash = leaf_hash",
    "audit_audittreenode": "UPDATE audit_audittreenode SET hash = hash",
    "audit_audittreehead": "UPDATE audit_audittreehead SET signature = 'x'",
    "audit_auditrejectedevent": "UPDATE audit_auditrejectedevent SET reason = 'x'",
}
_REFUSED = [
    *_UPDATES.values(),
    *(f"DELETE FROM {table}" for table in _UPDATES),
]


def test_the_refused_statements_cover_every_audit_table() -> None:
    """A new audit table must get triggers (TABLES of migration 0006, or a later migration's)
    and a row in the test below."""
    from django.apps import apps

    tables = {model._meta.db_table for model in apps.get_app_config("audit").get_models()}
    assert set(_UPDATES) == set(TABLES) == tables


def _a_row_in_every_audit_table() -> None:
    """Row-level triggers fire only on rows: make sure every audit table has one. A fresh
    install has no version 1 chain head, checkpoint or rejected event, so the test writes
    them (inserting is allowed)."""
    from django.utils import timezone

    from audit.checking import audit_checkpoint_create
    from audit.models import (
        AuditChainHead,
        AuditCheckpoint,
        AuditRejectedEvent,
        AuditSigningKey,
    )

    events = append_events(3)
    audit_checkpoint_create()
    if not AuditChainHead.objects.exists():
        AuditChainHead.objects.create(id=1, sequence=0)
    if not AuditCheckpoint.objects.exists():
        AuditCheckpoint.objects.create(
            sequence=events[0].sequence,
            hash=events[0].hash,
            time=timezone.now(),
            signature="test",
            signing_key=AuditSigningKey.objects.first(),
        )
    AuditRejectedEvent.objects.create(event=events[1], reason="test", time=timezone.now())
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(f"SELECT count(*) FROM {table}")
            assert cursor.fetchone()[0] > 0, table


@pytest.mark.parametrize(
    "statement",
    [
        *_REFUSED,
        *(
            [
                "TRUNCATE audit_auditevent CASCADE",
                "TRUNCATE audit_auditcheckpoint",
                "TRUNCATE audit_audittreehead CASCADE",
                "TRUNCATE audit_auditleaf CASCADE",
            ]
            if connection.vendor == "postgresql"
            else []
        ),
    ],
)
def test_triggers_refuse_update_delete_truncate(statement: str) -> None:
    """On PostgreSQL and SQLite alike, whatever the application does, on every audit table."""
    if connection.vendor == "sqlite":
        statement = statement.replace("interval '1 day'", "1")
    _a_row_in_every_audit_table()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # else TRUNCATE fails otherwise
    with (
        pytest.raises(Exception, match="append-only"),
        transaction.atomic(),
        connection.cursor() as c,
    ):
        c.execute(statement)


def test_no_role_may_change_or_delete_audit_rows(db) -> None:
    from django.contrib.auth.models import Permission

    codenames = set(
        Permission.objects.filter(content_type__app_label="audit").values_list(
            "codename", flat=True
        )
    )
    assert not {c for c in codenames if c.startswith(("add_", "change_", "delete_"))}
    assert {"view_auditevent", "export_auditevent", "verify_auditevent"} <= codenames


def test_known_secret_never_reaches_the_audit_table(client: Client, signed_in, make_user) -> None:
    secret = "S3cret-Passphrase-For-Audit-Test"
    admin = make_user("sam", Role.ADMINISTRATOR)
    # Wrong password with a known account, a password typed as a username, a good sign-in,
    # a user created with a chosen password, and a chosen password reset.
    client.post("/accounts/login/", {"username": "sam", "password": secret})
    client.post("/accounts/login/", {"username": secret, "password": secret})
    admin_client = signed_in(admin)
    created = admin_client.post(
        "/users/new/", {"username": "tina", "roles": ["auditor"]}, follow=True
    )
    link = re.search(rb'id="invitation-link">http://testserver([^<]+)<', created.content)
    invitation = link.group(1).decode()
    # Tina sets her own password at the invitation link (its token is no secret of ours to
    # keep out: it is spent; only its hash is stored, never in the audit log either).
    Client().post(invitation, {"new_password1": secret, "new_password2": secret})
    tina = User.objects.get(username="tina")
    assert Client().login(username="tina", password=secret)
    reset = admin_client.post(f"/users/{tina.pk}/password/", follow=True)
    again = re.search(rb'id="invitation-link">http://testserver([^<]+)<', reset.content)
    Client().post(
        again.group(1).decode(), {"new_password1": secret + "2", "new_password2": secret + "2"}
    )
    token = invitation.rsplit("token=", 1)[-1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM audit_auditevent")
        rows = cursor.fetchall()
    assert len(rows) >= 5
    dump = repr(rows)
    assert secret not in dump
    assert secret.encode().hex() not in dump
    assert token not in dump
