"""Vault pages through real HTTP: each role's access, the forms, confirmations, approvals."""

from __future__ import annotations

import base64

import pytest
from django.test import Client

from accounts.roles import Role
from audit.models import AuditEvent
from kmsportal.keyring.services import unseal
from vault import services
from vault.lifecycle import KeyState
from vault.models import KeyVersion, SymmetricKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def custodian(make_user, signed_in) -> Client:
    return signed_in(make_user("kc-one", Role.KEY_CUSTODIAN))


@pytest.fixture
def second_custodian(make_user, signed_in) -> Client:
    return signed_in(make_user("kc-two", Role.KEY_CUSTODIAN))


@pytest.fixture
def key() -> SymmetricKey:
    return services.symmetric_key_create(actor=None, name="orders-db", rotation_period_days=90)


ACTION_SLUGS = [
    "activate",
    "rotate",
    "suspend",
    "resume",
    "deactivate",
    "compromise",
    "destroy",
    "cancel-destruction",
    "verify",
]


@pytest.mark.parametrize("role", [Role.ADMINISTRATOR, Role.AUDITOR])
def test_readers_see_keys_but_no_actions(role_client, role: Role, key: SymmetricKey) -> None:
    client = role_client(role)
    assert client.get("/keys/").status_code == 200
    page = client.get("/keys/orders-db/")
    assert page.status_code == 200
    assert b"Rotate" not in page.content and b"New key" not in client.get("/keys/").content
    assert client.get("/keys/new/").status_code == 403
    for slug in ACTION_SLUGS:
        assert client.get(f"/keys/orders-db/{slug}/").status_code == 403, slug
        assert client.post(f"/keys/orders-db/{slug}/").status_code == 403, slug
    assert client.post("/keys/new/", {"name": "x1"}).status_code == 403
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE and key.versions.count() == 1


def test_ca_operator_sees_nothing_of_the_vault(role_client, key: SymmetricKey) -> None:
    client = role_client(Role.CA_OPERATOR)
    for url in [
        "/keys/",
        "/keys/orders-db/",
        "/keys/new/",
        "/keys/approvals/",
        "/keys/orders-db/rotate/",
    ]:
        assert client.get(url).status_code == 403, url
    assert b'href="/keys/"' not in client.get("/").content


def test_anonymous_goes_to_sign_in(client: Client, key: SymmetricKey) -> None:
    assert client.get("/keys/orders-db/").status_code == 302


def test_create_key_through_the_form(custodian: Client) -> None:
    response = custodian.post(
        "/keys/new/",
        {"name": "payments", "description": "card vault", "rotation_period_days": "30"},
    )
    assert response.status_code == 302 and response["Location"] == "/keys/payments/"
    key = SymmetricKey.objects.get(name="payments")
    assert key.state == KeyState.ACTIVE and key.next_rotation_at is not None
    page = custodian.get("/keys/payments/")
    version = key.versions.get()
    assert version.fingerprint.encode() in page.content
    assert b"key.created" in page.content  # the lifecycle timeline comes from the audit log


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "Bad Name"}, b"Use lowercase letters"),
        ({"name": "orders-db"}, b"already exists"),
        ({"name": "new"}, b"reserved word"),
        ({"name": "k1", "rotation_period_days": "0"}, b"greater than or equal to 1"),
        ({"name": "k1", "rotation_period_days": "99999"}, b"less than or equal to 3650"),
        ({"name": "k1", "activate_at": "tomorrow"}, b"Enter a valid date/time"),
    ],
)
def test_bad_input_creates_nothing(
    custodian: Client, key: SymmetricKey, data: dict, message: bytes
) -> None:
    before = SymmetricKey.objects.count(), AuditEvent.objects.filter(action="key.created").count()
    response = custodian.post("/keys/new/", data)
    assert response.status_code == 400
    assert message in response.content
    assert (
        SymmetricKey.objects.count(),
        AuditEvent.objects.filter(action="key.created").count(),
    ) == before


def test_every_action_has_a_confirmation_page(custodian: Client, key: SymmetricKey) -> None:
    detail = custodian.get("/keys/orders-db/")
    for slug in ["rotate", "suspend", "deactivate", "compromise", "destroy", "verify"]:
        assert f"/keys/orders-db/{slug}/".encode() in detail.content, slug
        page = custodian.get(f"/keys/orders-db/{slug}/")
        assert page.status_code == 200
        assert b"Current state" in page.content
    # Actions the state does not allow are not offered.
    assert b"/keys/orders-db/resume/" not in detail.content
    assert b"/keys/orders-db/activate/" not in detail.content


def test_rotate_and_suspend_resume(custodian: Client, key: SymmetricKey) -> None:
    response = custodian.post(
        "/keys/orders-db/rotate/", {"min_decryption_version": ""}, follow=True
    )
    assert b"version 2" in response.content
    assert key.versions.get(is_primary=True).number == 2
    assert custodian.post("/keys/orders-db/suspend/").status_code == 302
    key.refresh_from_db()
    assert key.state == KeyState.SUSPENDED
    response = custodian.post("/keys/orders-db/rotate/")
    assert response.status_code == 400
    assert b"Cannot rotate a key that is suspended" in response.content
    assert custodian.post("/keys/orders-db/resume/").status_code == 302
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE


def test_rotate_refuses_moving_min_version_backwards(custodian: Client, key: SymmetricKey) -> None:
    custodian.post("/keys/orders-db/rotate/", {"min_decryption_version": "2"})
    response = custodian.post("/keys/orders-db/rotate/", {"min_decryption_version": "1"})
    assert response.status_code == 400
    assert b"can only move forward" in response.content
    assert key.versions.count() == 2


def test_compromise_primary_version_from_the_page(custodian: Client, key: SymmetricKey) -> None:
    response = custodian.post(
        "/keys/orders-db/compromise/",
        {"scope": "version", "version": "1", "reason": "found in a public repository"},
        follow=True,
    )
    assert b"version 2" in response.content and b"new primary" in response.content
    assert key.versions.get(number=1).state == "compromised"
    assert b"Compromise impact" in response.content


def test_compromise_form_errors(custodian: Client, key: SymmetricKey) -> None:
    response = custodian.post("/keys/orders-db/compromise/", {"scope": "version", "reason": "x"})
    assert response.status_code == 400 and b"Say which version" in response.content
    response = custodian.post(
        "/keys/orders-db/compromise/", {"scope": "version", "version": "9", "reason": "x"}
    )
    assert response.status_code == 400 and b"has no version 9" in response.content
    response = custodian.post(
        "/keys/orders-db/compromise/",
        {"scope": "key", "reason": "x", "compromised_at": "2999-01-01T00:00"},
    )
    assert response.status_code == 400 and b"cannot be in the future" in response.content
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE


def test_two_person_destruction_through_the_pages(
    custodian: Client, second_custodian: Client, key: SymmetricKey
) -> None:
    response = custodian.post(
        "/keys/orders-db/destroy/", {"waiting_days": "7", "reason": "retired"}, follow=True
    )
    assert b"A different key custodian must approve" in response.content
    inbox = custodian.get("/keys/approvals/")
    assert (
        b"orders-db" in inbox.content
        and b"Withdraw" in inbox.content
        and b">Approve<" not in inbox.content
    )
    request_pk = key.destruction_requests.get().pk
    # The requester's forged approval is refused by the service, not only hidden.
    confirm = f"/approvals/destruction/{request_pk}/"
    response = custodian.post(confirm, {"decision": "approve"}, follow=True)
    assert b"a different key custodian must approve" in response.content
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE
    # The old one-click endpoint approves nothing: it leads to the confirmation page.
    old = second_custodian.post(f"/keys/approvals/{request_pk}/approve/")
    assert old.status_code == 302 and old["Location"] == confirm
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE
    response = second_custodian.post(confirm, {"decision": "approve"}, follow=True)
    assert b"will be destroyed after" in response.content
    key.refresh_from_db()
    assert key.state == KeyState.PENDING_DESTRUCTION
    assert custodian.post("/keys/orders-db/cancel-destruction/").status_code == 302
    key.refresh_from_db()
    assert key.state == KeyState.ACTIVE


def test_destruction_waiting_period_out_of_range(custodian: Client, key: SymmetricKey) -> None:
    response = custodian.post("/keys/orders-db/destroy/", {"waiting_days": "3"})
    assert response.status_code == 400 and b"greater than or equal to 7" in response.content
    assert not key.destruction_requests.exists()


def test_tampered_blob_shows_a_clear_error_not_a_500(custodian: Client, key: SymmetricKey) -> None:
    services.symmetric_key_rotate(actor=None, key=key)
    v1 = KeyVersion.objects.get(key=key, number=1)
    # Copy version 1's sealed blob onto version 2: it must not open there.
    KeyVersion.objects.filter(key=key, number=2).update(sealed_material=v1.sealed_material)
    response = custodian.post("/keys/orders-db/verify/", follow=True)
    assert response.status_code == 200
    assert b"Sealed material of key orders-db failed its check: version 2" in response.content
    event = AuditEvent.objects.filter(action="key.integrity_failed").get()
    assert event.outcome == "error" and event.details["failed"][0]["version"] == 2


def test_actions_on_a_destroyed_key_are_refused(custodian: Client, key: SymmetricKey) -> None:
    SymmetricKey.objects.filter(pk=key.pk).update(state=KeyState.DESTROYED)
    for slug in ["rotate", "suspend", "deactivate", "destroy"]:
        response = custodian.post(
            f"/keys/orders-db/{slug}/", {"waiting_days": "7", "scope": "key", "reason": "x"}
        )
        assert response.status_code == 400, slug
        assert b"a key that is destroyed" in response.content, slug


def test_unknown_key_and_action_are_404(custodian: Client, key: SymmetricKey) -> None:
    assert custodian.get("/keys/nope/").status_code == 404
    assert custodian.get("/keys/orders-db/explode/").status_code == 404


def test_key_list_filters_and_pages(custodian: Client) -> None:
    for i in range(60):
        services.symmetric_key_create(actor=None, name=f"svc-{i:03d}")
    services.symmetric_key_suspend(actor=None, key=SymmetricKey.objects.get(name="svc-007"))
    first = custodian.get("/keys/").context["page"]
    assert len(first.keys) == 50 and first.next_cursor == "svc-049"
    second = custodian.get("/keys/", {"after": first.next_cursor}).context["page"]
    assert [k.name for k in second.keys][:2] == [
        "svc-050",
        "svc-051",
    ] and second.next_cursor is None
    suspended = custodian.get("/keys/", {"state": "suspended"}).context["page"]
    assert [k.name for k in suspended.keys] == ["svc-007"]
    matching = custodian.get("/keys/", {"q": "svc-05"}).context["page"].keys
    assert [k.name for k in matching] == [f"svc-05{i}" for i in range(10)]
    assert custodian.get("/keys/", {"state": "bogus"}).status_code == 400


def test_overdue_badge(custodian: Client) -> None:
    from datetime import timedelta

    from django.utils import timezone

    k = services.symmetric_key_create(actor=None, name="late", rotation_period_days=1)
    SymmetricKey.objects.filter(pk=k.pk).update(
        next_rotation_at=timezone.now() - timedelta(hours=1)
    )
    assert b"overdue" in custodian.get("/keys/").content
    assert [x.name for x in custodian.get("/keys/", {"overdue": "on"}).context["page"].keys] == [
        "late"
    ]


def test_no_key_material_in_any_page(custodian: Client, key: SymmetricKey) -> None:
    services.symmetric_key_rotate(actor=None, key=key)
    bodies = b"".join(
        custodian.get(url).content
        for url in [
            "/keys/",
            "/keys/orders-db/",
            "/keys/orders-db/rotate/",
            "/keys/approvals/",
            "/",
        ]
    )
    for version in key.versions.all():
        material = unseal(version.sealed_material, aad=version.aad)
        for form in (
            material,
            material.hex().encode(),
            material.hex().upper().encode(),
            base64.b64encode(material),
            base64.urlsafe_b64encode(material),
        ):
            assert form not in bodies
