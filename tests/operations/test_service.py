"""vault.operations on a real database: every operation and key type, the policy checks, one
audit event per batch."""

from __future__ import annotations

import base64

import pytest

from audit.models import AuditEvent
from vault import services
from vault.models import KeyVersion
from vault.operations import OperationRefused, key_operation_perform

pytestmark = pytest.mark.django_db

ENCRYPTING = ("encrypt", "decrypt", "reencrypt", "generate-data-key")
SIGNING = ("sign", "verify", "public-key")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run(client, operation, key, *items, **options):
    return key_operation_perform(
        client=client, operation=operation, key_name=key, items=list(items), options=options
    ).results


@pytest.mark.parametrize("key_type", ["aes-256-gcm", "rsa-3072"])
def test_encrypt_decrypt_round_trip(service, make_key, grant, key_type) -> None:
    key = make_key("orders", key_type)
    grant(service, key, *ENCRYPTING)
    [encrypted] = run(
        service, "encrypt", "orders", {"plaintext": b64(b"card 4111"), "context": {"t": "a"}}
    )
    assert encrypted["version"] == 1 and encrypted["ciphertext"].startswith("kms:v1:")
    [decrypted] = run(
        service, "decrypt", "orders", {"ciphertext": encrypted["ciphertext"], "context": {"t": "a"}}
    )
    assert base64.b64decode(decrypted["plaintext"]) == b"card 4111"
    [wrong] = run(
        service, "decrypt", "orders", {"ciphertext": encrypted["ciphertext"], "context": {"t": "b"}}
    )
    assert wrong["error"]["code"] == "decryption_failed"


@pytest.mark.parametrize("key_type", ["rsa-4096", "ecdsa-p256", "ecdsa-p384", "ed25519"])
def test_sign_verify_public_key(service, make_key, grant, key_type) -> None:
    key = make_key("release", key_type)
    grant(service, key, *SIGNING)
    [signed] = run(service, "sign", "release", {"message": b64(b"v1.2.3")})
    [ok, bad] = run(
        service,
        "verify",
        "release",
        {"message": b64(b"v1.2.3"), "signature": signed["signature"]},
        {"message": b64(b"v1.2.4"), "signature": signed["signature"]},
    )
    assert ok["valid"] is True and bad["valid"] is False
    [public] = run(service, "public-key", "release", {})
    assert public["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
    assert KeyVersion.objects.get(key=key, number=1).fingerprint  # SPKI SHA-256
    assert len(KeyVersion.objects.get(key=key, number=1).fingerprint) == 64


def test_mac_and_verify(service, make_key, grant) -> None:
    key = make_key("tokens", "hmac-sha256")
    grant(service, key, "mac", "mac-verify")
    [made] = run(service, "mac", "tokens", {"message": b64(b"session=42")})
    [ok, bad] = run(
        service,
        "mac-verify",
        "tokens",
        {"message": b64(b"session=42"), "mac": made["mac"]},
        {"message": b64(b"session=43"), "mac": made["mac"]},
    )
    assert (ok["valid"], bad["valid"]) == (True, False)


def test_data_key_with_and_without_plaintext(service, make_key, grant) -> None:
    grant(service, make_key("envelope"), *ENCRYPTING)
    [with_plain] = run(service, "generate-data-key", "envelope", {"context": {"f": "x"}})
    [without] = run(service, "generate-data-key", "envelope", {}, plaintext=False)
    assert "plaintext" not in without
    [unwrapped] = run(
        service,
        "decrypt",
        "envelope",
        {"ciphertext": with_plain["ciphertext"], "context": {"f": "x"}},
    )
    assert unwrapped["plaintext"] == with_plain["plaintext"]


def test_grant_without_decrypt_is_refused_and_audited(service, make_key, grant) -> None:
    grant(service, make_key("orders"), "encrypt")
    [encrypted] = run(service, "encrypt", "orders", {"plaintext": b64(b"x")})
    with pytest.raises(OperationRefused) as caught:
        run(service, "decrypt", "orders", {"ciphertext": encrypted["ciphertext"]})
    assert (caught.value.code, caught.value.status) == ("operation_not_granted", 403)
    event = AuditEvent.objects.filter(action="key.operation_refused").latest("sequence")
    assert event.details["code"] == "operation_not_granted" and event.outcome == "denied"


def test_no_grant_and_unsupported_operation(service, make_key, grant) -> None:
    make_key("secret")
    with pytest.raises(OperationRefused) as caught:
        run(service, "encrypt", "secret", {"plaintext": b64(b"x")})
    assert caught.value.code == "not_granted"
    grant(service, make_key("signer", "ed25519"), "encrypt", "sign")
    with pytest.raises(OperationRefused) as caught:
        run(service, "encrypt", "signer", {"plaintext": b64(b"x")})
    assert caught.value.code == "unsupported_operation"


def test_rotation_and_reencrypt_moves_to_newest_version(service, make_key, grant) -> None:
    key = make_key("orders")
    grant(service, key, *ENCRYPTING)
    [old] = run(service, "encrypt", "orders", {"plaintext": b64(b"pay me"), "context": {"a": "1"}})
    services.symmetric_key_rotate(actor=None, key=key)
    [moved] = run(
        service, "reencrypt", "orders", {"ciphertext": old["ciphertext"], "context": {"a": "1"}}
    )
    assert moved["version"] == 2 and "plaintext" not in moved
    [back] = run(
        service, "decrypt", "orders", {"ciphertext": moved["ciphertext"], "context": {"a": "1"}}
    )
    assert base64.b64decode(back["plaintext"]) == b"pay me"
    # Once the minimum decryption version passes 1, the old ciphertext is refused.
    services.symmetric_key_rotate(actor=None, key=key, min_decryption_version=2)
    [refused] = run(
        service, "decrypt", "orders", {"ciphertext": old["ciphertext"], "context": {"a": "1"}}
    )
    assert refused["error"]["code"] == "version_below_minimum"


def test_reencrypt_under_another_key(service, make_key, grant) -> None:
    grant(service, make_key("old-key"), *ENCRYPTING)
    grant(service, make_key("new-key", "rsa-3072"), "encrypt", "decrypt")
    [old] = run(service, "encrypt", "old-key", {"plaintext": b64(b"move me")})
    [moved] = run(
        service,
        "reencrypt",
        "old-key",
        {"ciphertext": old["ciphertext"]},
        destination_key="new-key",
    )
    assert moved["key"] == "new-key"
    [plain] = run(service, "decrypt", "new-key", {"ciphertext": moved["ciphertext"]})
    assert base64.b64decode(plain["plaintext"]) == b"move me"


def test_required_context(service, make_key, grant) -> None:
    grant(service, make_key("tenant-data", required_context_keys=["tenant"]), *ENCRYPTING)
    [refused, ok] = run(
        service,
        "encrypt",
        "tenant-data",
        {"plaintext": b64(b"x")},
        {"plaintext": b64(b"x"), "context": {"tenant": "acme"}},
    )
    assert refused["error"]["code"] == "context_required" and "ciphertext" in ok


def test_items_sharing_a_context_are_each_checked(service, make_key, grant) -> None:
    # Contexts are checked and encoded once per distinct context in a batch: the same answers
    # as checking each item, whatever the order, and each key's required names still apply.
    grant(service, make_key("shared-ctx", required_context_keys=["tenant"]), *ENCRYPTING)
    good = {"tenant": "acme", "app": "billing"}
    items = [
        {"plaintext": b64(b"a"), "context": good},
        {"plaintext": b64(b"b"), "context": {"app": "billing", "tenant": "acme"}},
        {"plaintext": b64(b"c"), "context": {"tenant": ["acme"]}},
        {"plaintext": b64(b"d"), "context": {"app": "billing"}},
        {"plaintext": b64(b"e"), "context": good},
        {"plaintext": b64(b"f")},
    ]
    results = run(service, "encrypt", "shared-ctx", *items)
    codes = [r["error"]["code"] if "error" in r else "ok" for r in results]
    assert codes == ["ok", "ok", "bad_context", "context_required", "ok", "context_required"]
    back = run(
        service,
        "decrypt",
        "shared-ctx",
        {"ciphertext": results[0]["ciphertext"], "context": good},
        {"ciphertext": results[1]["ciphertext"], "context": good},  # the same, other order
        {"ciphertext": results[4]["ciphertext"], "context": {**good, "app": "other"}},
        {"ciphertext": results[4]["ciphertext"], "context": good},
    )
    assert [r.get("plaintext") or r["error"]["code"] for r in back] == [
        b64(b"a"),
        b64(b"b"),
        "decryption_failed",
        b64(b"e"),
    ]


@pytest.mark.parametrize(
    "text", ["not base64!", "eA=", "eA", "eA==eA==", " eA==", "eA==\n", "e-A=", "é"]
)
def test_an_item_that_is_not_strict_base64_is_bad_input(service, make_key, grant, text) -> None:
    grant(service, make_key("strict-b64"), *ENCRYPTING)
    [encrypted, accepted] = run(
        service, "encrypt", "strict-b64", {"plaintext": text}, {"plaintext": "eA=="}
    )
    assert encrypted["error"]["code"] == "bad_input" and "ciphertext" in accepted


def test_destroyed_version_is_refused_with_a_clear_code(
    service, make_key, grant, make_user
) -> None:
    from accounts.roles import Role
    from tests.factories import approver_make
    from tests.vault.conftest import make_due, schedule_destruction

    key = make_key("shredded")
    grant(service, key, *ENCRYPTING)
    [made] = run(service, "encrypt", "shredded", {"plaintext": b64(b"gone")})
    schedule_destruction(
        key, make_user("a", Role.KEY_CUSTODIAN), approver_make("b", Role.KEY_CUSTODIAN)
    )
    with pytest.raises(OperationRefused) as caught:
        run(service, "decrypt", "shredded", {"ciphertext": made["ciphertext"]})
    assert caught.value.code == "key_pending_destruction"
    make_due(key)
    services.symmetric_keys_destroy_due()
    with pytest.raises(OperationRefused) as caught:
        run(service, "decrypt", "shredded", {"ciphertext": made["ciphertext"]})
    assert (caught.value.code, caught.value.status) == ("key_destroyed", 410)


def test_destroyed_version_of_a_live_key(service, make_key, grant) -> None:
    """A version erased while the key lives on (as a destroyed key's would be) answers
    version_destroyed for its ciphertexts, even when its loaded key is cached."""
    key = make_key("partly")
    grant(service, key, *ENCRYPTING)
    [made] = run(service, "encrypt", "partly", {"plaintext": b64(b"x")})
    run(service, "decrypt", "partly", {"ciphertext": made["ciphertext"]})  # now cached
    services.symmetric_key_rotate(actor=None, key=key)
    KeyVersion.objects.filter(key=key, number=1).update(state="destroyed", sealed_material=None)
    [refused] = run(service, "decrypt", "partly", {"ciphertext": made["ciphertext"]})
    assert refused["error"]["code"] == "version_destroyed"


def test_compromised_version_refused_unless_policy_allows_and_audited(
    service, make_key, grant
) -> None:
    strict = make_key("strict")
    lenient = make_key("lenient", allow_compromised_decrypt=True)
    for key in (strict, lenient):
        grant(service, key, *ENCRYPTING)
    made = {
        k.name: run(service, "encrypt", k.name, {"plaintext": b64(b"x")})[0]
        for k in (strict, lenient)
    }
    for key in (strict, lenient):
        services.key_version_compromise(actor=None, key=key, number=1, reason="leaked")
    [refused] = run(service, "decrypt", "strict", {"ciphertext": made["strict"]["ciphertext"]})
    assert refused["error"]["code"] == "version_compromised"
    [allowed] = run(service, "decrypt", "lenient", {"ciphertext": made["lenient"]["ciphertext"]})
    assert base64.b64decode(allowed["plaintext"]) == b"x"
    events = AuditEvent.objects.filter(action="key.operation").order_by("sequence")
    decrypts = [e.details for e in events if e.details["operation"] == "decrypt"]
    assert [d.get("compromised_versions_used") for d in decrypts] == [[1], [1]]
    assert [d["failed"] for d in decrypts] == [1, 0]


def test_suspended_key_is_refused(service, make_key, grant) -> None:
    key = make_key("paused")
    grant(service, key, *ENCRYPTING)
    services.symmetric_key_suspend(actor=None, key=key)
    with pytest.raises(OperationRefused) as caught:
        run(service, "encrypt", "paused", {"plaintext": b64(b"x")})
    assert caught.value.code == "key_suspended"


def test_batch_of_1000_is_one_audit_event(service, make_key, grant) -> None:
    grant(service, make_key("bulk"), *ENCRYPTING)
    before = AuditEvent.objects.count()
    items = [{"plaintext": b64(b"%d" % i)} for i in range(1000)]
    items[10] = {"plaintext": "not base64!"}
    results = run(service, "encrypt", "bulk", *items)
    assert len(results) == 1000 and results[10]["error"]["code"] == "bad_input"
    assert AuditEvent.objects.count() == before + 1
    event = AuditEvent.objects.latest("sequence")
    assert (event.details["count"], event.details["succeeded"], event.details["failed"]) == (
        1000,
        999,
        1,
    )
    assert event.outcome == "error"
    with pytest.raises(OperationRefused) as caught:
        run(service, "encrypt", "bulk", *items, {"plaintext": ""})
    assert caught.value.code == "bad_batch"


def test_no_secret_in_audit(service, make_key, grant) -> None:
    grant(service, make_key("quiet"), *ENCRYPTING)
    [made] = run(service, "generate-data-key", "quiet", {"context": {"c": "d"}})
    run(service, "decrypt", "quiet", {"ciphertext": made["ciphertext"], "context": {"c": "d"}})
    dump = str(list(AuditEvent.objects.values_list("details", flat=True)))
    assert made["plaintext"] not in dump and made["ciphertext"] not in dump


def test_key_form_creates_a_signing_key(make_user) -> None:
    from accounts.roles import Role
    from tests.factories import sign_in
    from vault.models import SymmetricKey

    browser = sign_in(make_user("kim", Role.KEY_CUSTODIAN))
    response = browser.post(
        "/keys/new/",
        {"name": "releases", "key_type": "ecdsa-p256", "required_context_keys": "a, b"},
    )
    assert response.status_code == 302
    key = SymmetricKey.objects.get(name="releases")
    assert (key.key_type, key.required_context_keys) == ("ecdsa-p256", ["a", "b"])
    page = browser.get("/keys/releases/")
    assert key.versions.get().fingerprint.encode() in page.content


def test_key_create_command_takes_a_type(db) -> None:
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("key_create", "hmac-key", "--type", "hmac-sha256", stdout=out)
    assert "HMAC-SHA256" in out.getvalue()


def test_a_key_going_away_leaves_the_process_cache(service, make_key, grant, make_user) -> None:
    from accounts.roles import Role
    from tests.factories import approver_make
    from tests.vault.conftest import schedule_destruction
    from vault import operation_cache

    key = make_key("leaving")
    grant(service, key, *ENCRYPTING)
    run(service, "encrypt", "leaving", {"plaintext": b64(b"x")})
    assert any(entry.key_id == key.pk for entry in operation_cache._cache.values())
    schedule_destruction(
        key, make_user("a", Role.KEY_CUSTODIAN), approver_make("b", Role.KEY_CUSTODIAN)
    )
    with pytest.raises(OperationRefused):
        run(service, "encrypt", "leaving", {"plaintext": b64(b"x")})
    assert not any(entry.key_id == key.pk for entry in operation_cache._cache.values())
