"""The PKI endpoints of the admin API over real HTTP (Django's test client) with Bearer
tokens: issuance from a CSR made with `cryptography` and from a generated key pair,
revocation that the CRL shows, validation, CRL publication, CA creation, the two-person rule
for revoking a CA, who may do what (role x token scope), and bad input answered with problem
documents."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from django.test import Client

from accounts.roles import Role
from adminapi.tokens import api_token_create
from audit.models import AuditEvent
from kmsportal.crypto.crl import load_crl, revoked_serials
from pki import services
from pki.models import (
    CARevocationRequest,
    CAState,
    Certificate,
    CertificateAuthority,
    CertificateStatus,
    RevocationList,
)
from tests.factories import approver_make, user_make

BASE = "/api/v1/admin/pki"
PROBLEM = "application/problem+json"


class Api:
    """A test client that sends a personal API token, and JSON bodies."""

    def __init__(self, user: Any, scope: str = "roles") -> None:
        created = api_token_create(actor=user, user=user, name="tests", scope=scope, days=1)
        self.user = user
        self.client = Client(headers={"authorization": f"Bearer {created.secret}"})

    def get(self, path: str, **query: Any) -> Any:
        return self.client.get(BASE + path, query)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.client.post(
            BASE + path, json.dumps(body or {}), content_type="application/json"
        )


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """The response is the problem document ``code`` with ``status``; returns it."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(PROBLEM)
    document = response.json()
    assert document["code"] == code, document
    assert document["status"] == status and document["type"].endswith("/" + code)
    assert document["detail"]
    return document


@pytest.fixture(scope="module")
def leaf_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def csr_pem(key: ec.EllipticCurvePrivateKey, name: str = "www.example.org") -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


@pytest.fixture
def root(db) -> CertificateAuthority:
    return services.certificate_authority_create(
        actor=None, name="root", subject="CN=API Test Root,O=Example Org", key_type="ecp256"
    )


@pytest.fixture
def issuing(root: CertificateAuthority) -> CertificateAuthority:
    return services.certificate_authority_create(
        actor=None,
        name="issuing",
        subject="CN=API Test Issuing,O=Example Org",
        parent=root,
        key_type="ecp256",
    )


@pytest.fixture
def api_as(db) -> Callable[..., Api]:
    """An Api client for a new user holding ``role`` (token scope ``scope``)."""
    made: dict[str, Any] = {}

    def make(role: Role, scope: str = "roles", username: str = "") -> Api:
        name = username or f"api-{role.value.replace('_', '-')}"
        if name not in made:
            made[name] = user_make(name, role)
        return Api(made[name], scope)

    return make


def crl_serials(ca: CertificateAuthority) -> set[int]:
    """Serials on the CA's newest complete CRL plus its newest delta, as published."""
    serials: set[int] = set()
    for delta in (False, True):
        row = RevocationList.objects.filter(ca=ca, is_delta=delta).order_by("-crl_number").first()
        if row is not None and row.crl_der is not None:
            serials |= set(revoked_serials(load_crl(bytes(row.crl_der))))
    return serials


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_issue_from_csr_list_download_revoke_crl_validate(api_as, issuing, leaf_key) -> None:
    operator = api_as(Role.CA_OPERATOR)
    issued = operator.post(
        "/certificates/issue",
        {"ca": "issuing", "profile": "tls-server", "csr_pem": csr_pem(leaf_key), "days": 30},
    )
    assert issued.status_code == 201, issued.content
    body = issued.json()
    certificate = x509.load_pem_x509_certificate(body["certificate_pem"].encode())
    assert certificate.public_key() == leaf_key.public_key()
    assert body["ca"] == "issuing" and body["status"] == "valid"
    assert body["sans"] == ["dns:www.example.org"]
    assert body["chain"] == ["issuing", "root"]
    pk = body["id"]
    event = AuditEvent.objects.filter(action="certificate.issued").latest("sequence")
    assert event.actor_name == operator.user.get_username()

    # search by subject and by serial; the download is the same certificate
    found = operator.get("/certificates", q="www.example").json()
    assert [item["id"] for item in found["items"]] == [pk]
    assert operator.get("/certificates", q=body["serial"]).json()["items"][0]["id"] == pk
    assert operator.get("/certificates", status="revoked").json()["items"] == []
    der = operator.get(f"/certificates/{pk}/download/der")
    assert der["Content-Type"] == "application/pkix-cert"
    assert der.content == certificate.public_bytes(serialization.Encoding.DER)
    chain = operator.get(f"/certificates/{pk}/download/chain").content.decode()
    assert chain.count("BEGIN CERTIFICATE") == 2

    valid = operator.post(
        "/validate",
        {"certificate_pem": body["certificate_pem"], "hostname": "www.example.org"},
    ).json()
    assert valid["ok"] is True and valid["issued_here"] == pk
    assert [entry["ca"] for entry in valid["path"]] == [None, "issuing", "root"]

    compromised = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0)
    revoked = operator.post(
        f"/certificates/{pk}/revoke",
        {"reason": "keyCompromise", "invalidity_date": compromised.isoformat()},
    )
    assert revoked.status_code == 200, revoked.content
    assert revoked.json()["status"] == "revoked"
    assert revoked.json()["revocation_reason"] == "keyCompromise"
    row = Certificate.objects.get(pk=pk)
    assert row.status == CertificateStatus.REVOKED and row.invalidity_date == compromised
    assert certificate.serial_number in crl_serials(issuing)

    invalid = operator.post(
        "/validate", {"certificate_pem": body["certificate_pem"], "purpose": "server"}
    ).json()
    assert invalid["ok"] is False
    revocation = next(check for check in invalid["checks"] if check["passed"] is False)
    assert "revoked" in revocation["detail"].lower()

    # a second revocation is refused and changes nothing
    again = operator.post(f"/certificates/{pk}/revoke", {"reason": "superseded"})
    problem(again, 409, "revocation_refused")


@pytest.mark.django_db
def test_crl_publish_and_status(api_as, issuing) -> None:
    operator = api_as(Role.CA_OPERATOR)
    before = operator.get("/cas/issuing/crl").json()
    assert before["state"] == "ok" and before["signature_ok"] is True
    number = before["latest"]["crl_number"]
    published = operator.post("/cas/issuing/crl")
    assert published.status_code == 201, published.content
    crl, delta = published.json()["crl"], published.json()["delta"]
    assert crl["crl_number"] > number and crl["is_delta"] is False
    assert delta["is_delta"] is True and delta["base_crl_number"] == crl["crl_number"]
    assert crl["trigger"] == "manual"
    after = operator.get("/cas/issuing/crl").json()
    assert after["latest"]["crl_number"] == crl["crl_number"]
    assert after["latest_delta"]["crl_number"] == delta["crl_number"]
    assert after["crl_url"].endswith("/pki/crl/issuing.crl")
    event = AuditEvent.objects.filter(action="crl.published").latest("sequence")
    assert event.details["trigger"] == "manual"
    assert event.actor_name == operator.user.get_username()


@pytest.mark.django_db
def test_issue_generated_returns_a_pkcs12_under_the_callers_password(api_as, issuing) -> None:
    operator = api_as(Role.CA_OPERATOR)
    password = "s3cret pkcs12 password"
    issued = operator.post(
        "/certificates/issue-generated",
        {
            "ca": "issuing",
            "profile": "tls-client",
            "subject": "CN=robot.example.org",
            "sans": ["dns:robot.example.org"],
            "key_type": "ecp256",
            "password": password,
            "delivery": "pem",
        },
    )
    assert issued.status_code == 201, issued.content
    assert issued["Cache-Control"] == "no-store"
    body = issued.json()
    key, certificate, chain = pkcs12.load_key_and_certificates(
        base64.b64decode(body["pkcs12_base64"]), password.encode()
    )
    assert certificate is not None and key is not None
    assert certificate.public_key() == key.public_key()
    assert len(chain) == 2
    assert body["certificate"]["serial"] == format(certificate.serial_number, "X").zfill(
        len(body["certificate"]["serial"])
    )
    assert "ENCRYPTED PRIVATE KEY" in body["pem_bundle"]
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(base64.b64decode(body["pkcs12_base64"]), b"wrong one")
    # neither the password nor the key reaches the audit log
    for event in AuditEvent.objects.all():
        text = json.dumps(event.details)
        assert password not in text and "PRIVATE KEY" not in text
    delivered = AuditEvent.objects.get(action="certificate.key_delivered")
    assert delivered.details["serial"] == body["certificate"]["serial"]


@pytest.mark.django_db
def test_ca_create_root_and_intermediate(api_as) -> None:
    admin = api_as(Role.ADMINISTRATOR)
    made = admin.post("/cas", {"name": "api-root", "subject": "CN=API Root", "key_type": "ecp256"})
    assert made.status_code == 201, made.content
    assert made.json()["is_root"] and made.json()["parent"] is None
    x509.load_pem_x509_certificate(made.json()["certificate_pem"].encode())
    child = admin.post(
        "/cas",
        {
            "name": "api-issuing",
            "subject": "CN=API Issuing",
            "parent": "api-root",
            "key_type": "ecp256",
            "days": 365,
        },
    )
    assert child.status_code == 201, child.content
    detail = admin.get("/cas/api-issuing").json()
    assert detail["parent"] == "api-root" and detail["path_length"] == 0
    assert detail["chain_pem"].count("BEGIN CERTIFICATE") == 2
    assert detail["certificate_id"] is not None and detail["state"] == "active"
    assert {ca["name"] for ca in admin.get("/cas").json()} == {"api-root", "api-issuing"}
    assert AuditEvent.objects.filter(action="ca.created").count() == 2

    # path length 0: no CA may go below api-issuing, as the CA page offers it no parent
    problem(
        admin.post("/cas", {"name": "below", "subject": "CN=Below", "parent": "api-issuing"}),
        409,
        "parent_not_allowed",
    )
    problem(admin.post("/cas", {"name": "api-root", "subject": "CN=Again"}), 409, "ca_refused")
    disabled = admin.post("/cas/api-issuing/disable", {"reason": "retired"})
    assert disabled.status_code == 200 and disabled.json()["state"] == "disabled"


# --- two-person rule --------------------------------------------------------------------------


INBOX = "/api/v1/admin/approvals/ca-revocation"


@pytest.mark.django_db
def test_ca_revocation_needs_a_second_person(root, issuing, leaf_key) -> None:
    """Asked through the PKI endpoints, decided through the shared two-person inbox, as in
    the portal; the requester can neither approve nor reject, and until a second person
    approves nothing is revoked."""
    asker = Api(approver_make("olga-operator", Role.CA_OPERATOR))
    approver = Api(approver_make("omar-operator", Role.CA_OPERATOR))
    leaf = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(leaf_key).encode(), profile="tls-server"
    )
    own = asker.get("/cas/issuing").json()["certificate_id"]

    # the CA's certificate is never revoked in one step
    problem(
        asker.post(f"/certificates/{own}/revoke", {"reason": "keyCompromise"}),
        409,
        "two_person_required",
    )
    # a request needs a reason for the approver
    problem(
        asker.post("/cas/issuing/revocation-requests", {"reason": "superseded", "comment": " "}),
        409,
        "ca_revocation_refused",
    )
    asked = asker.post(
        "/cas/issuing/revocation-requests",
        {"reason": "cessationOfOperation", "comment": "moving to a new CA"},
    )
    assert asked.status_code == 201, asked.content
    request_id = asked.json()["id"]
    assert asked.json()["status"] == "pending"
    assert AuditEvent.objects.filter(action="ca.revocation_requested").count() == 1
    pending = approver.get("/ca-revocations").json()
    assert [row["id"] for row in pending] == [request_id]
    assert pending[0]["certificates_below"] == 1
    assert approver.get(f"/ca-revocations/{request_id}").json()["requested_by"] == ("olga-operator")
    assert asker.get("/cas/issuing").json()["revocation_requests"][0]["id"] == request_id
    # a second request for the same CA waits for the first
    problem(
        approver.post(
            "/cas/issuing/revocation-requests", {"reason": "superseded", "comment": "retired"}
        ),
        409,
        "ca_revocation_refused",
    )

    # the requester cannot approve (nor reject) their own request; nothing is revoked
    refused = asker.client.post(f"{INBOX}/{request_id}/approve")
    assert refused.status_code == 409, refused.content  # as for every two-person kind
    assert refused["Content-Type"].startswith(PROBLEM)
    assert refused.json()["code"] == "two_person_rule"
    assert "two-person" in refused.json()["detail"], refused.json()
    assert asker.client.post(
        f"{INBOX}/{request_id}/reject", "{}", content_type="application/json"
    ).status_code in (400, 403, 409)
    assert CertificateAuthority.objects.get(name="issuing").state == CAState.ACTIVE
    assert Certificate.objects.get(pk=leaf.pk).status == CertificateStatus.VALID
    assert CARevocationRequest.objects.get(pk=request_id).status == "pending"

    approved = approver.client.post(f"{INBOX}/{request_id}/approve")
    assert approved.status_code == 200, approved.content
    assert approver.get(f"/ca-revocations/{request_id}").json()["status"] == "approved"
    assert approver.get(f"/ca-revocations/{request_id}").json()["decided_by"] == ("omar-operator")
    assert asker.get("/cas/issuing").json()["state"] == "revoked"
    assert asker.get(f"/certificates/{leaf.pk}").json()["status"] == "revoked"
    own_serial = int(Certificate.objects.get(pk=own).serial_hex, 16)
    assert own_serial in crl_serials(root)
    assert AuditEvent.objects.filter(action="ca.revocation_approved").count() == 1
    assert approver.get("/ca-revocations").json() == []


@pytest.mark.django_db
def test_an_approver_without_own_authenticator_cannot_approve(root, issuing) -> None:
    asker = Api(approver_make("olga-operator", Role.CA_OPERATOR))
    newcomer = Api(user_make("nina-operator", Role.CA_OPERATOR))
    asked = asker.post(
        "/cas/issuing/revocation-requests", {"reason": "superseded", "comment": "retired"}
    ).json()
    refused = newcomer.client.post(f"{INBOX}/{asked['id']}/approve")
    assert refused.status_code in (400, 403, 409) and "authenticator" in refused.json()["detail"]
    assert CARevocationRequest.objects.get(pk=asked["id"]).status == "pending"
    assert CertificateAuthority.objects.get(name="issuing").state == CAState.ACTIVE


@pytest.mark.django_db
def test_a_root_has_no_revocation_request(api_as, root) -> None:
    operator = api_as(Role.CA_OPERATOR)
    problem(
        operator.post(
            "/cas/root/revocation-requests", {"reason": "superseded", "comment": "retired"}
        ),
        409,
        "ca_revocation_refused",
    )
    assert not CARevocationRequest.objects.exists()


# --- who may do what --------------------------------------------------------------------------

ALL_ROLES = (Role.ADMINISTRATOR, Role.KEY_CUSTODIAN, Role.CA_OPERATOR, Role.AUDITOR)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"),
    [
        ("get", "/cas", None, {Role.ADMINISTRATOR, Role.CA_OPERATOR, Role.AUDITOR}),
        ("get", "/certificates", None, {Role.ADMINISTRATOR, Role.CA_OPERATOR, Role.AUDITOR}),
        ("get", "/ca-revocations", None, {Role.ADMINISTRATOR, Role.CA_OPERATOR, Role.AUDITOR}),
        ("get", "/cas/issuing/crl", None, {Role.ADMINISTRATOR, Role.CA_OPERATOR, Role.AUDITOR}),
        ("post", "/cas/issuing/crl", {}, {Role.CA_OPERATOR}),
        ("post", "/cas", {"name": "x", "subject": "CN=X"}, {Role.ADMINISTRATOR}),
        (
            "post",
            "/certificates/issue",
            {"ca": "issuing", "profile": "tls-server", "csr_pem": "x"},
            {Role.CA_OPERATOR},
        ),
    ],
)
def test_role_decides_and_read_only_tokens_never_write(
    api_as, issuing, method, path, body, allowed
) -> None:
    writes = method == "post"
    for role in ALL_ROLES:
        for scope in ("roles", "read-only"):
            api = api_as(role, scope)
            response = api.get(path) if method == "get" else api.post(path, body)
            if role in allowed and not (writes and scope == "read-only"):
                assert response.status_code < 403 or response.status_code in (409, 422), (
                    role,
                    scope,
                    response.content,
                )
            else:
                assert response.status_code == 403, (role, scope, response.content)
                assert response["Content-Type"].startswith(PROBLEM)


@pytest.mark.django_db
def test_refused_writes_change_nothing(api_as, issuing, leaf_key) -> None:
    before = (Certificate.objects.count(), RevocationList.objects.count())
    body = {"ca": "issuing", "profile": "tls-server", "csr_pem": csr_pem(leaf_key)}
    assert api_as(Role.ADMINISTRATOR).post("/certificates/issue", body).status_code == 403
    assert (
        api_as(Role.CA_OPERATOR, "read-only").post("/certificates/issue", body).status_code == 403
    )
    assert api_as(Role.AUDITOR).post("/cas/issuing/crl").status_code == 403
    assert (Certificate.objects.count(), RevocationList.objects.count()) == before


@pytest.mark.django_db
def test_validation_needs_only_the_certificate_reading_permission(
    api_as, issuing, leaf_key
) -> None:
    """Validating changes nothing: an auditor may do it, as on the validation page. It is a
    POST (a chain may be 1 MiB), which read-only tokens never send."""
    certificate = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(leaf_key).encode(), profile="tls-server"
    )
    body = {"certificate_pem": certificate.certificate_pem}
    before = (Certificate.objects.count(), RevocationList.objects.count())
    events = AuditEvent.objects.order_by("-sequence").values_list("sequence", flat=True).first()
    answer = api_as(Role.AUDITOR).post("/validate", body)
    assert answer.status_code == 200 and answer.json()["ok"] is True
    problem(api_as(Role.AUDITOR, "read-only").post("/validate", body), 403, "read_only_token")
    problem(api_as(Role.KEY_CUSTODIAN).post("/validate", body), 403, "permission_denied")
    assert (Certificate.objects.count(), RevocationList.objects.count()) == before
    assert not AuditEvent.objects.filter(sequence__gt=events, action__startswith="c").exists()


def test_no_token_is_401(client) -> None:
    response = client.get(BASE + "/cas")
    problem(response, 401, "unauthenticated")


# --- bad input --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_bad_input_is_a_problem_document_never_a_500(api_as, root, issuing, leaf_key) -> None:
    operator = api_as(Role.CA_OPERATOR)
    good = {"ca": "issuing", "profile": "tls-server", "csr_pem": csr_pem(leaf_key)}
    problem(
        operator.post("/certificates/issue", {**good, "csr_pem": "not a CSR"}),
        422,
        "issuance_refused",
    )
    problem(operator.post("/certificates/issue", {**good, "ca": "root"}), 409, "ca_not_issuing")
    problem(operator.post("/certificates/issue", {**good, "ca": "nope"}), 409, "ca_not_issuing")
    problem(
        operator.post("/certificates/issue", {**good, "profile": "kms-server"}),
        422,
        "unknown_profile",
    )
    problem(operator.post("/certificates/issue", {**good, "days": 0}), 422, "validation_failed")
    problem(operator.post("/certificates/issue", {"ca": "issuing"}), 422, "validation_failed")
    problem(
        operator.client.post(
            BASE + "/certificates/issue", "{not json", content_type="application/json"
        ),
        400,
        "bad_request",
    )
    problem(
        operator.post(
            "/certificates/issue-generated",
            {"ca": "issuing", "profile": "tls-client", "subject": "CN=x", "password": "short"},
        ),
        422,
        "validation_failed",
    )
    problem(operator.get("/certificates/999999"), 404, "not_found")
    problem(operator.get(f"/certificates/{2**70}"), 422, "validation_failed")
    problem(operator.get("/certificates", after=2**70), 422, "validation_failed")
    problem(operator.get("/certificates", q="a\x00b"), 422, "validation_failed")
    problem(
        operator.post("/certificates/issue", {**good, "subject": "CN=a\x00"}),
        422,
        "validation_failed",
    )
    problem(operator.get("/cas/%00"), 422, "validation_failed")
    problem(operator.get("/cas/NOT-A-NAME/crl"), 404, "not_found")
    problem(operator.get("/cas/nope"), 404, "not_found")
    problem(operator.get("/certificates/1/download/p7b"), 422, "validation_failed")
    problem(operator.get("/certificates", status="lost"), 422, "validation_failed")
    problem(
        operator.get("/certificates", expires_after="2030-01-02", expires_before="2030-01-01"),
        422,
        "validation_failed",
    )
    problem(
        operator.post("/certificates/999999/revoke", {"reason": "superseded"}), 404, "not_found"
    )

    leaf = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=good["csr_pem"].encode(), profile="tls-server"
    )
    problem(
        operator.post(f"/certificates/{leaf.pk}/revoke", {"reason": "removeFromCRL"}),
        422,
        "validation_failed",
    )
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    problem(
        operator.post(
            f"/certificates/{leaf.pk}/revoke",
            {"reason": "keyCompromise", "invalidity_date": future},
        ),
        409,
        "revocation_refused",
    )
    problem(
        operator.post(
            f"/certificates/{leaf.pk}/revoke",
            {"reason": "superseded", "invalidity_date": "2020-01-01T00:00:00Z"},
        ),
        409,
        "revocation_refused",
    )
    problem(operator.post(f"/certificates/{leaf.pk}/release"), 409, "release_refused")
    assert Certificate.objects.get(pk=leaf.pk).status == CertificateStatus.VALID

    garbage = operator.post("/validate", {"certificate_pem": "garbage"})
    assert garbage.status_code == 200 and garbage.json()["ok"] is False
    problem(
        operator.post("/validate", {"certificate_pem": "x", "purpose": "email"}),
        422,
        "validation_failed",
    )


@pytest.mark.django_db
def test_hold_and_release(api_as, issuing, leaf_key) -> None:
    operator = api_as(Role.CA_OPERATOR)
    leaf = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(leaf_key).encode(), profile="tls-server"
    )
    held = operator.post(f"/certificates/{leaf.pk}/revoke", {"reason": "certificateHold"})
    assert held.json()["revocation_reason"] == "certificateHold"
    serial = int(leaf.serial_hex, 16)
    assert serial in crl_serials(issuing)
    released = operator.post(f"/certificates/{leaf.pk}/release")
    assert released.status_code == 200 and released.json()["status"] == "valid"
    assert serial not in crl_serials(issuing)


def test_each_operation_needs_what_its_portal_page_needs() -> None:
    """Parity with the PKI pages' own permissions (pki.views), one page per operation."""
    from adminapi.routers import certificates, pki

    RULES = {**pki.RULES, **certificates.RULES}
    from pki import views

    pages = {
        "pki_ca_list": views.CAListView,
        "pki_ca_get": views.CADetailView,
        "pki_ca_create": views.CACreateView,
        "pki_ca_preview": views.CACreateView,
        "pki_ca_disable": views.CADisableView,
        "pki_ca_revocation_request": views.CertificateRevokeView,
        "pki_ca_revocation_list": views.CARevocationApprovalsView,
        "pki_ca_revocation_get": views.CARevocationApprovalsView,
        "pki_crl_get": views.CRLHealthView,
        "pki_crl_publish": views.CRLPublishView,
        "pki_certificate_list": views.CertificateListView,
        "pki_certificate_get": views.CertificateDetailView,
        "pki_certificate_download": views.CertificateDownloadView,
        "pki_certificate_issue_csr": views.IssueFromCSRView,
        "pki_certificate_issue_generated": views.IssueGeneratedView,
        "pki_certificate_issue_preview": views.IssueFromCSRView,
        "pki_certificate_revoke": views.CertificateRevokeView,
        "pki_certificate_revoke_preview": views.CertificateRevokeView,
        "pki_certificate_release": views.CertificateReleaseView,
        "pki_certificate_validate": views.ValidateView,
    }
    assert set(pages) == set(RULES)
    for operation_id, page in pages.items():
        assert RULES[operation_id].permissions == (page.permission_required,), operation_id


@pytest.mark.django_db
def test_malformed_names_and_values_are_refused_by_the_services(api_as, issuing, leaf_key) -> None:
    """What only the services can judge (subjects, SANs, profile limits) comes back as a
    problem document naming the operation, never a 500, and nothing is made."""
    admin, operator = api_as(Role.ADMINISTRATOR), api_as(Role.CA_OPERATOR)
    before = (CertificateAuthority.objects.count(), Certificate.objects.count())
    for subject in ("CN=", "X=1", "CN=a,,", "=", "CN=" + "a" * 1000, "ü"):
        problem(admin.post("/cas", {"name": "bad", "subject": subject}), 409, "ca_refused")
    problem(admin.post("/cas", {"name": "new", "subject": "CN=New"}), 409, "ca_refused")
    problem(admin.post("/cas", {"name": "Bad_Name", "subject": "CN=x"}), 422, "validation_failed")
    good = {"ca": "issuing", "profile": "tls-server", "csr_pem": csr_pem(leaf_key)}
    for san in ("dns:", "ip:999.1.1.1", "uri:::", "x", "email:@", "dns:*.*"):
        problem(
            operator.post("/certificates/issue", {**good, "sans": [san]}), 422, "issuance_refused"
        )
    problem(operator.post("/certificates/issue", {**good, "days": 3650}), 422, "issuance_refused")
    generated = {"ca": "issuing", "profile": "tls-server", "password": "long enough"}
    problem(
        operator.post("/certificates/issue-generated", {**generated, "subject": ""}),
        422,
        "issuance_refused",
    )
    assert (CertificateAuthority.objects.count(), Certificate.objects.count()) == before
    for hostname in ("*.", "[::1]", "a" * 253, "ü.example", ".."):
        answer = operator.post("/validate", {"certificate_pem": "x", "hostname": hostname})
        assert answer.status_code == 200 and answer.json()["ok"] is False


@pytest.mark.django_db
def test_previews_show_what_would_be_made_and_change_nothing(api_as, root, issuing, leaf_key):
    """The confirmation pages as calls: the same checks, the certificate that would be
    signed or what a revocation would take along; no row and no audit event is added."""
    admin, operator = api_as(Role.ADMINISTRATOR), api_as(Role.CA_OPERATOR)
    leaf = services.certificate_issue_from_csr(
        actor=None, ca=issuing, csr_pem_or_der=csr_pem(leaf_key).encode(), profile="tls-server"
    )
    own = Certificate.objects.get(ca=root, serial_hex=issuing.serial_hex)
    counts = (
        CertificateAuthority.objects.count(),
        Certificate.objects.count(),
        RevocationList.objects.count(),
        AuditEvent.objects.exclude(action__startswith="api.").count(),
    )

    ca = admin.post(
        "/ca-preview",
        {"name": "next", "subject": "CN=Next CA", "parent": "root", "key_type": "ecp256"},
    )
    assert ca.status_code == 200, ca.content
    assert ca.json()["certificate"]["is_ca"] and ca.json()["certificate"]["path_length"] == 0
    assert ca.json()["certificate"]["issuer"] == "CN=API Test Root,O=Example Org"
    problem(
        admin.post("/ca-preview", {"name": "issuing", "subject": "CN=Again"}), 409, "ca_refused"
    )

    body = {
        "ca": "issuing",
        "profile": "tls-server",
        "csr_pem": csr_pem(leaf_key, "api.example.org"),
        "sans": ["dns:api.example.org", "dns:www.api.example.org"],
        "days": 10,
    }
    issue = operator.post("/certificates/issue-preview", body).json()
    assert issue["sans"] == ["dns:api.example.org", "dns:www.api.example.org"]
    assert issue["subject"] == "CN=api.example.org" and issue["days"] == 10
    assert issue["certificate"]["extended_key_usage"] == ["serverAuth"]
    assert issue["certificate"]["issuer"] == "CN=API Test Issuing,O=Example Org"
    problem(
        operator.post("/certificates/issue-preview", {**body, "csr_pem": "x"}),
        422,
        "issuance_refused",
    )

    revoke = operator.post(f"/certificates/{own.pk}/revoke-preview", {"reason": "superseded"})
    assert revoke.json()["revoked_ca"] == "issuing"
    assert revoke.json()["certificates_below"] == 1
    plain = operator.post(f"/certificates/{leaf.pk}/revoke-preview", {"reason": "superseded"})
    assert plain.json()["revoked_ca"] is None and plain.json()["certificates_below"] == 0
    problem(
        operator.post(f"/certificates/{own.pk}/revoke-preview", {"reason": "certificateHold"}),
        409,
        "revocation_refused",
    )
    assert counts == (
        CertificateAuthority.objects.count(),
        Certificate.objects.count(),
        RevocationList.objects.count(),
        AuditEvent.objects.exclude(action__startswith="api.").count(),
    )
