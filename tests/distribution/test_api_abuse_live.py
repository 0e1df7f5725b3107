"""The client API against someone who has only public material (issue 13), over real HTTP.

Client certificates travel in every request, so anyone has them: requests with a victim's
certificate and a bad signature must not spend the victim's rate budget nor be audited in
its name; garbage floods are counted per source address and minute, never one chain-locked
audit event each, and limited per address; every refusal is a problem document with the
exact status and code; invalid DH values are 400 `bad_public_key`, audited.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from django.utils import timezone

from audit.models import AuditEvent
from kmsclient.client import FETCH_PATH
from kmsclient.operations import SESSION_PATH
from kmsportal.crypto import protocol
from kmsportal.crypto import session as session_wire
from kmsportal.crypto.dh import FFDHE3072_BYTES, FFDHE3072_P
from kmsportal.crypto.x509 import build_csr, generate_private_key, parse_subject
from tests.distribution.conftest import LiveKMS, assert_refusal_audited
from vault import refusals
from vault.models import Delivery, RefusalTally

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PROBLEM = "application/problem+json"


def _problem(response: requests.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"] == PROBLEM
    body = response.json()
    assert body["code"] == code and body["status"] == status
    assert body["type"].endswith("/" + code) and body["detail"]
    return body


def _audit_count() -> int:
    return AuditEvent.objects.count()


def test_bad_signatures_with_a_victims_certificate_cost_the_victim_nothing(
    kms: LiveKMS, settings
) -> None:
    settings.KMS_CLIENT_RATE_LIMIT = 5
    settings.KMS_API_ADDRESS_REFUSAL_LIMIT = 1000
    key = kms.key()
    victim = kms.enrolled("billing")
    kms.grant("billing", key)
    certificate, _key = kms.credentials("billing")
    impostor_key = generate_private_key("ecp256")
    events = _audit_count()
    for _ in range(20):  # four times the victim's budget
        body, _state = protocol.build_fetch_request(
            key_name="orders-db",
            version=None,
            client_certificate_pem=certificate,
            client_private_key=impostor_key,  # not the victim's key
        )
        _problem(requests.post(kms.url + FETCH_PATH, json=body, timeout=10), 401, "bad_signature")
    # No event per refusal, none in the victim's name; one tally row for this address.
    assert _audit_count() == events
    assert (
        not AuditEvent.objects.filter(actor_name="billing")
        .exclude(action__in=("client.enrolled",))
        .exists()
    )
    tally = RefusalTally.objects.get()
    assert tally.count == 20 and tally.codes == {"bad_signature": 20}
    # The victim's budget is untouched: all five of its requests go through.
    for _ in range(5):
        victim.fetch_key("orders-db")
    assert Delivery.objects.count() == 5


def test_replays_of_a_victims_genuine_requests_cost_the_victim_nothing(
    kms: LiveKMS, settings
) -> None:
    """Plain HTTP is supported, so an on-path observer holds genuine signed requests. Sent
    again (replayed_request) or late (stale_timestamp), they are nobody's: counted for
    their source, never charged to the victim's budget nor audited in its name."""
    settings.KMS_CLIENT_RATE_LIMIT = 3
    settings.KMS_API_ADDRESS_REFUSAL_LIMIT = 1000
    window = settings.KMS_CLIENT_RATE_WINDOW_SECONDS
    if time.time() % window > window - 20:  # keep every request in one budget window
        time.sleep(window - time.time() % window + 0.5)
    key = kms.key()
    victim = kms.enrolled("billing")
    kms.grant("billing", key)
    certificate, private_key = kms.credentials("billing")
    fetch, _state = protocol.build_fetch_request(
        key_name="orders-db",
        version=None,
        client_certificate_pem=certificate,
        client_private_key=private_key,
    )
    late, _state = protocol.build_fetch_request(
        key_name="orders-db",
        version=None,
        client_certificate_pem=certificate,
        client_private_key=private_key,
        now=datetime.now(UTC) - timedelta(minutes=6),
    )
    session, _session_state = session_wire.build_session_request(
        client_private_key=private_key,
        client_certificate_pem=certificate,
        now=datetime.now(UTC),
    )
    assert requests.post(kms.url + FETCH_PATH, json=fetch, timeout=10).status_code == 200
    assert requests.post(kms.url + SESSION_PATH, json=session, timeout=10).status_code == 201
    events = _audit_count()
    for _ in range(10):  # more than three times the victim's budget
        replayed = requests.post(kms.url + FETCH_PATH, json=fetch, timeout=10)
        _problem(replayed, 409, "replayed_request")
        replayed = requests.post(kms.url + SESSION_PATH, json=session, timeout=10)
        _problem(replayed, 409, "replayed_request")
        _problem(requests.post(kms.url + FETCH_PATH, json=late, timeout=10), 401, "stale_timestamp")
    # Not one event per refusal, none in the victim's name; one tally row with all 30.
    assert _audit_count() == events
    tally = RefusalTally.objects.get()
    assert tally.count == 30
    assert tally.codes == {"replayed_request": 20, "stale_timestamp": 10}
    # Its budget held three; the two requests it really sent took two: one remains.
    assert victim.fetch_key("orders-db")
    assert Delivery.objects.count() == 2
    in_its_name = AuditEvent.objects.filter(actor_name="billing").values_list("action", flat=True)
    assert sorted(in_its_name) == [
        "client.enrolled",
        "client.session_opened",
        "key.delivered",
        "key.delivered",
    ]


def test_a_garbage_flood_is_counted_not_audited_and_limited_per_address(
    kms: LiveKMS, settings
) -> None:
    settings.KMS_API_ADDRESS_REFUSAL_LIMIT = 10
    events = _audit_count()
    statuses = []
    for index in range(30):
        body = b"{not json" if index % 2 else json.dumps({"key_name": "x"}).encode()
        response = requests.post(
            kms.url + FETCH_PATH,
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        statuses.append(response.status_code)
        assert response.headers["Content-Type"] == PROBLEM
    # The first ten are read and refused (400); then the address is refused unread (429).
    assert statuses[:10] == [400] * 10
    assert set(statuses[10:]) == {429}
    limited = requests.post(kms.url + "/api/v1/enroll", json={}, timeout=10)
    body = _problem(limited, 429, "rate_limited")
    assert "address" in body["detail"] and int(limited.headers["Retry-After"]) <= 60
    assert _audit_count() == events, "not one audit event per refused request"
    # All 31 are counted: the ten read and refused, and the 21 answered unread.
    tally = RefusalTally.objects.get()
    assert tally.count == 31
    assert tally.codes == {"malformed_request": 10, "rate_limited": 21}

    # Once the minute is over, one event for that address and minute, with the count.
    assert refusals.refusal_tallies_report(now=timezone.now() + timedelta(minutes=1)) == 1
    event = AuditEvent.objects.get(action="api.requests_refused")
    assert event.outcome == "denied"
    assert event.details["count"] == 31 and event.details["source"] == tally.source
    assert event.details["codes"] == {"malformed_request": 10, "rate_limited": 21}
    assert refusals.refusal_tallies_report(now=timezone.now() + timedelta(minutes=1)) == 0


def test_bad_token_proofs_on_a_pending_enrollment_are_counted_not_audited(
    kms: LiveKMS, settings
) -> None:
    """The token id travels in clear: whoever saw it (or dropped the genuine request) can
    send proofs that fail. They are counted for the address, limited like any other
    refusal nobody can be held to, and the minute's one event names the pending enrollment
    aimed at (client and token id, no secret); the token stays usable."""
    settings.KMS_API_ADDRESS_REFUSAL_LIMIT = 5
    client, token = kms.new_client("reporting")
    token_id, _mac_key = protocol.enrollment_token_keys(token)
    events = _audit_count()
    statuses = []
    for _ in range(8):
        forged, _state = protocol.build_enroll_request(
            token="f" * 64,  # not the token: a proof under another key, with its id
            csr_pem=build_csr(
                private_key=generate_private_key("ecp256"), subject=parse_subject("CN=x")
            ).decode(),
        )
        forged["token_id"] = token_id
        answer = requests.post(kms.url + "/api/v1/enroll", json=forged, timeout=30)
        statuses.append(answer.status_code)
        if answer.status_code == 401:
            _problem(answer, 401, "bad_token_proof")
        else:
            _problem(answer, 429, "rate_limited")
    # Limited per address like any other such refusal: five read, then answered unread.
    assert statuses == [401] * 5 + [429] * 3
    assert _audit_count() == events, "no client.enrollment_refused event per request"
    tally = RefusalTally.objects.get()
    target = f"client reporting, token id {token_id[:8]}"
    assert tally.count == 8
    assert tally.codes == {"bad_token_proof": 5, "rate_limited": 3}
    assert tally.targets == {target: 5}
    client.refresh_from_db()
    assert client.enrollment_token_hash and client.certificate is None  # still pending

    assert refusals.refusal_tallies_report(now=timezone.now() + timedelta(minutes=1)) == 1
    event = AuditEvent.objects.get(action="api.requests_refused")
    assert event.details["targets"] == {target: 5}
    assert token not in json.dumps(event.details)


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        (b"x" * (65 * 1024), {"Content-Type": "application/json"}, 413, "request_too_large"),
        (b"x" * (3 * 1024 * 1024), {"Content-Type": "application/json"}, 413, "request_too_large"),
        (b"{}", {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (
            b"{}",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (b"{}", {}, 415, "unsupported_media_type"),
        (
            b"{}",
            {"Content-Type": "application/json; charset=latin-1"},
            415,
            "unsupported_media_type",
        ),
        (b"{not json", {"Content-Type": "application/json"}, 400, "malformed_request"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "malformed_request"),
        (b"[" * 100000, {"Content-Type": "application/json"}, 413, "request_too_large"),
        (b"[]", {"Content-Type": "application/json"}, 400, "malformed_request"),
    ],
)
@pytest.mark.parametrize("path", [FETCH_PATH, "/api/v1/enroll"])
def test_every_bad_body_is_a_problem_document(
    kms: LiveKMS, path: str, data: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = requests.post(kms.url + path, data=data, headers=headers, timeout=30)
    _problem(response, status, code)


def test_other_methods_and_paths_are_problem_documents(kms: LiveKMS) -> None:
    _problem(requests.get(kms.url + FETCH_PATH, timeout=10), 405, "method_not_allowed")
    _problem(requests.put(kms.url + "/api/v1/enroll", timeout=10), 405, "method_not_allowed")
    _problem(requests.get(kms.url + "/api/v1/", timeout=10), 404, "not_found")
    _problem(requests.post(kms.url + "/api/v1/keys/list", json={}, timeout=10), 404, "not_found")


def _x25519(value: int) -> bytes:
    return value.to_bytes(32, "little")


#: RFC 7748 / libsodium's blocklist: points of small order on Curve25519 (u-coordinates).
X25519_BAD = {
    "zero": _x25519(0),
    "one": _x25519(1),
    "order-8": bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    "p-1": _x25519(2**255 - 19 - 1),
    "p": _x25519(2**255 - 19),
}
FFDHE_BAD = {
    "0": 0,
    "1": 1,
    "p-1": FFDHE3072_P - 1,
    "p": FFDHE3072_P,
    "p+1": FFDHE3072_P + 1,
    "2^3072-1": 2**3072 - 1,
    "order 2q (p-2)": FFDHE3072_P - 2,
}


@pytest.mark.parametrize(
    ("group", "value"),
    [("x25519", v) for v in X25519_BAD.values()]
    + [("ffdhe3072", v.to_bytes(FFDHE3072_BYTES, "big")) for v in FFDHE_BAD.values()],
    ids=[f"x25519 {k}" for k in X25519_BAD] + [f"ffdhe3072 {k}" for k in FFDHE_BAD],
)
def test_an_invalid_dh_value_in_a_signed_request_is_400_bad_public_key(
    kms: LiveKMS, group: str, value: bytes
) -> None:
    key = kms.key()
    kms.enrolled("billing")
    kms.grant("billing", key)
    certificate, private_key = kms.credentials("billing")
    request = protocol.FetchRequest(
        key_name="orders-db",
        version=None,
        group=group,
        client_public=value,
        client_nonce=b"\x07" * 16,
        timestamp=protocol.format_timestamp(timezone.now()),
        client_certificate_pem=certificate,
    )
    body = request.to_json(protocol.sign(private_key, request.signed_bytes()))
    response = requests.post(kms.url + FETCH_PATH, json=body, timeout=30)
    _problem(response, 400, "bad_public_key")
    assert_refusal_audited("bad_public_key", client="billing", key="orders-db")
    assert Delivery.objects.count() == 0
    # The nonce is spent all the same: the same request again is a replay.
    _problem(requests.post(kms.url + FETCH_PATH, json=body, timeout=30), 409, "replayed_request")


def test_the_legacy_enrollment_form_is_refused_and_counted(kms: LiveKMS) -> None:
    _client, token = kms.new_client("billing")
    response = requests.post(
        kms.url + "/api/v1/enroll", json={"token": token, "csr": "x"}, timeout=10
    )
    body = _problem(response, 400, "legacy_enrollment")
    assert "upgrade kmsclient" in body["detail"]
    assert token not in response.text
    assert RefusalTally.objects.get().codes == {"legacy_enrollment": 1}
