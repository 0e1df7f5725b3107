"""The published CRL: its content (RFC 5280 5), when it is published (CA creation, every
revocation, `publish_crls` past half its lifetime), how it is stored, and the public
download with its caching headers."""

from __future__ import annotations

from datetime import timedelta
from email.utils import parsedate_to_datetime
from io import StringIO

import pytest
from cryptography import x509
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from kmsportal.crypto.crl import crl_summary, load_crl, verify_crl_signature
from pki import crl as crl_module
from pki import services
from pki.models import Certificate, CertificateAuthority, RevocationList

from .conftest import csr_pem

pytestmark = pytest.mark.django_db


def issue(ca: CertificateAuthority, key: object, name: str = "www.example.org") -> Certificate:
    return services.certificate_issue_from_csr(
        actor=None,
        ca=ca,
        csr_pem_or_der=csr_pem(key, subject=f"CN={name}", sans=(f"dns:{name}",)),
        profile="tls-server",
    )


def rows(ca: CertificateAuthority, *, delta: bool = False) -> list[RevocationList]:
    """The complete CRLs of ``ca`` (or its delta CRLs), oldest first."""
    return list(RevocationList.objects.filter(ca=ca, is_delta=delta).order_by("crl_number"))


def newest(ca: CertificateAuthority, *, delta: bool = False) -> RevocationList:
    return rows(ca, delta=delta)[-1]


def ca_certificate(ca: CertificateAuthority) -> x509.Certificate:
    return x509.load_der_x509_certificate(bytes(ca.certificate_der))


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- content ----------------------------------------------------------------------------------


def test_a_new_ca_publishes_its_first_crl_at_once(root, issuing) -> None:
    for ca in (root, issuing):
        [first] = rows(ca)
        assert (first.crl_number, first.entry_count, first.trigger) == (1, 0, "ca-created")
        crl = load_crl(bytes(first.crl_der))
        assert verify_crl_signature(crl, ca_certificate(ca))
        assert len(crl) == 0


def test_crl_content_is_rfc_5280(issuing, ec_key) -> None:
    CertificateAuthority.objects.filter(pk=issuing.pk).update(crl_validity_days=3)
    record = issue(issuing, ec_key)
    services.certificate_revoke(actor=None, certificate=record, reason="superseded")
    services.crl_publish(actor=None, ca=issuing)  # the complete CRL (publish_crls)
    row = newest(issuing)
    crl = load_crl(bytes(row.crl_der))
    summary = crl_summary(crl)
    issuer = ca_certificate(issuing)
    assert verify_crl_signature(crl, issuer)
    assert crl.issuer == issuer.subject
    # v2: the DER's TBSCertList starts with version INTEGER 1.
    assert bytes(row.crl_der)[:20].find(b"\x02\x01\x01") != -1
    # 1 and 2: complete and delta at creation; 3: the revocation's delta.
    assert summary.crl_number == row.crl_number == 4
    assert summary.this_update == row.this_update
    assert summary.next_update == row.next_update == row.this_update + timedelta(days=3)
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert summary.authority_key_identifier == ski.digest.hex()
    assert summary.entry_count == row.entry_count == 1
    assert not summary.is_delta
    assert summary.freshest_crl_urls == ("http://testserver/pki/crl/issuing-delta.crl",)
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    number = crl.extensions.get_extension_for_class(x509.CRLNumber)
    assert not aki.critical and not number.critical
    assert row.size == len(row.crl_der) and len(row.sha256) == 64


def test_a_revocation_publishes_a_delta_crl_not_a_complete_one(issuing, ec_key) -> None:
    """RFC 5280 5.2.4: each revocation costs a delta CRL of the changes since the base."""
    for index in range(3):
        record = issue(issuing, ec_key, f"h{index}.example.org")
        services.certificate_revoke(actor=None, certificate=record, reason="keyCompromise")
    complete = rows(issuing)
    deltas = rows(issuing, delta=True)
    assert [r.crl_number for r in complete] == [1]
    assert [r.crl_number for r in deltas] == [2, 3, 4, 5]
    assert [r.entry_count for r in deltas] == [0, 1, 2, 3]
    assert {r.base_crl_number for r in deltas} == {1}
    assert [r.crl_der is None for r in deltas] == [True, True, True, False]
    assert complete[0].crl_der is not None  # the complete CRL keeps its bytes
    delta = load_crl(bytes(deltas[-1].crl_der))
    summary = crl_summary(delta)
    assert summary.is_delta and summary.base_crl_number == 1
    indicator = delta.extensions.get_extension_for_class(x509.DeltaCRLIndicator)
    assert indicator.critical
    # The next complete CRL lists them all and gets its own delta.
    services.crl_publish(actor=None, ca=issuing)
    assert newest(issuing).entry_count == 3
    latest_delta = rows(issuing, delta=True)[-1]
    assert latest_delta.base_crl_number == newest(issuing).crl_number


def test_the_crl_reads_serials_from_the_database_not_certificates(
    issuing, ec_key, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = issue(issuing, ec_key)
    services.certificate_revoke(actor=None, certificate=record, reason="superseded")

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a stored certificate was parsed to build the CRL")

    monkeypatch.setattr(x509, "load_pem_x509_certificate", forbidden)
    real = x509.load_der_x509_certificate
    parsed: list[bytes] = []
    monkeypatch.setattr(
        x509, "load_der_x509_certificate", lambda der: parsed.append(der) or real(der)
    )
    services.crl_publish(actor=None, ca=issuing)
    assert parsed == [bytes(issuing.certificate_der)]  # the CA's own, for the issuer name
    assert newest(issuing).entry_count == 1


# --- publish_crls -----------------------------------------------------------------------------


def age(ca: CertificateAuthority, days: float) -> None:
    """Make the newest CRL look ``days`` old (its lifetime unchanged)."""
    row = newest(ca)
    shift = timedelta(days=days)
    RevocationList.objects.filter(pk=row.pk).update(
        this_update=row.this_update - shift, next_update=row.next_update - shift
    )


def test_publish_crls_publishes_only_what_is_due(root, issuing) -> None:
    out = run("publish_crls")
    assert "root: CRL #1 is current" in out and "issuing: CRL #1 is current" in out
    assert [len(rows(root)), len(rows(issuing))] == [1, 1]
    age(issuing, 3.4)  # of 7 days: not yet half
    run("publish_crls")
    assert len(rows(issuing)) == 1
    age(issuing, 0.2)  # 3.6 days: past half
    out = run("publish_crls")
    # Numbers are shared with the delta CRLs (RFC 5280 5.2.3): #2 is the first delta.
    assert "issuing: published CRL #3 with 0 entries and delta CRL #4" in out
    assert "root: CRL #1 is current" in out
    assert newest(issuing).trigger == "scheduled"
    run("publish_crls")  # idempotent: nothing is due now
    assert len(rows(issuing)) == 2 and len(rows(root)) == 1
    event = AuditEvent.objects.filter(action="crl.published").get()
    assert (event.actor_type, event.details["trigger"], event.details["crl_number"]) == (
        "system",
        "scheduled",
        3,
    )


def test_publish_crls_replaces_an_expired_crl(issuing) -> None:
    age(issuing, 8)
    run("publish_crls", "--ca", "issuing")
    assert newest(issuing).next_update > timezone.now()


def test_publish_crls_force_and_one_ca(root, issuing) -> None:
    out = run("publish_crls", "--ca", "issuing", "--force")
    assert "issuing: published CRL #3" in out and "root" not in out
    assert len(rows(root)) == 1
    assert newest(issuing).trigger == "manual"
    run("publish_crls", "--force")
    assert (len(rows(root)), len(rows(issuing))) == (2, 3)


def test_publish_crls_unknown_ca(issuing) -> None:
    with pytest.raises(CommandError, match="no CA named 'nope'"):
        run("publish_crls", "--ca", "nope")


def test_publish_crls_reports_a_ca_it_cannot_sign_for_and_does_the_rest(root, issuing) -> None:
    from pki.signers import ca_signer_cache_clear

    CertificateAuthority.objects.filter(pk=issuing.pk).update(sealed_private_key=b"\x01" * 80)
    ca_signer_cache_clear()
    with pytest.raises(CommandError, match="issuing: the private key of CA issuing cannot be"):
        run("publish_crls", "--force")
    assert len(rows(root)) == 2 and len(rows(issuing)) == 1


def test_publish_crls_renews_the_ocsp_responder(issuing) -> None:
    from pki.models import OCSPResponder

    run("publish_crls")
    first = OCSPResponder.objects.get(ca=issuing)
    run("publish_crls")
    assert OCSPResponder.objects.filter(ca=issuing).count() == 1  # not due
    OCSPResponder.objects.filter(pk=first.pk).update(not_after=timezone.now() + timedelta(days=2))
    run("publish_crls")
    assert OCSPResponder.objects.filter(ca=issuing).count() == 2


# --- downloads --------------------------------------------------------------------------------


def test_download_der(client: Client, issuing, settings) -> None:
    assert settings.DEBUG is False
    row = newest(issuing)
    response = client.get("/pki/crl/issuing.crl")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/pkix-crl"
    assert response.content == bytes(row.crl_der)
    assert response["ETag"] == f'"{row.sha256}"'
    assert parsedate_to_datetime(response["Last-Modified"]) == row.this_update
    expires = parsedate_to_datetime(response["Expires"])
    assert expires <= row.next_update
    max_age = int(response["Cache-Control"].split("max-age=")[1])
    assert response["Cache-Control"].startswith("public, ")
    assert 0 < max_age <= 300
    assert int(response["Content-Length"]) == row.size


def test_download_pem(client: Client, issuing) -> None:
    row = newest(issuing)
    response = client.get("/pki/crl/issuing.pem")
    assert response.status_code == 200
    assert response.content.startswith(b"-----BEGIN X509 CRL-----\n")
    from cryptography.hazmat.primitives.serialization import Encoding

    assert load_crl(response.content).public_bytes(Encoding.DER) == bytes(row.crl_der)
    assert all(len(line) <= 64 for line in response.content.splitlines())
    assert response["ETag"] == f'"{row.sha256}-pem"'


def test_conditional_requests_get_304_without_a_body(client: Client, issuing) -> None:
    first = client.get("/pki/crl/issuing.crl")
    again = client.get("/pki/crl/issuing.crl", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304 and again.content == b""
    assert again["ETag"] == first["ETag"] and "max-age=" in again["Cache-Control"]
    since = client.get("/pki/crl/issuing.crl", HTTP_IF_MODIFIED_SINCE=first["Last-Modified"])
    assert since.status_code == 304 and since.content == b""
    stale = client.get("/pki/crl/issuing.crl", HTTP_IF_NONE_MATCH='"somethingelse"')
    assert stale.status_code == 200 and stale.content == first.content
    # A new CRL has a new ETag: the old one no longer matches.
    services.crl_publish(actor=None, ca=issuing)
    fresh = client.get("/pki/crl/issuing.crl", HTTP_IF_NONE_MATCH=first["ETag"])
    assert fresh.status_code == 200 and fresh["ETag"] != first["ETag"]


def test_head(client: Client, issuing) -> None:
    for url in ("/pki/crl/issuing.crl", "/pki/crl/issuing.pem", "/pki/ca/issuing.crt"):
        get = client.get(url)
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head["ETag"] == get["ETag"] and head["Content-Type"] == get["Content-Type"]


def test_unknown_ca_is_404(client: Client, issuing) -> None:
    for url in ("/pki/crl/nope.crl", "/pki/crl/nope.pem", "/pki/ca/nope.crt", "/pki/ca/nope.pem"):
        assert client.get(url).status_code == 404, url
    assert client.head("/pki/crl/nope.crl").status_code == 404


def test_the_ca_certificate_has_caching_headers(client: Client, issuing) -> None:
    response = client.get("/pki/ca/issuing.crt")
    assert response["Content-Type"] == "application/pkix-cert"
    assert response.content == bytes(issuing.certificate_der)
    assert response["ETag"] == f'"{issuing.fingerprint_sha256.lower()}"'
    assert parsedate_to_datetime(response["Last-Modified"]) == issuing.created_at.replace(
        microsecond=0
    )
    assert response["Cache-Control"] == "public, max-age=86400"
    again = client.get("/pki/ca/issuing.crt", HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304 and again.content == b""
    pem = client.get("/pki/ca/issuing.pem")
    assert pem["ETag"] != response["ETag"]


def test_a_download_never_builds_or_signs(
    client: Client, issuing, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download built a CRL")

    monkeypatch.setattr(crl_module, "build_crl", forbidden)
    monkeypatch.setattr(crl_module, "crl_publish_locked", forbidden)
    for url in ("/pki/crl/issuing.crl", "/pki/crl/issuing.pem"):
        assert client.get(url).status_code == 200


def test_a_ca_without_a_crl_gets_one_on_first_download(client: Client, issuing) -> None:
    """CAs created before CRLs were published at creation: the one fallback."""
    RevocationList.objects.filter(ca=issuing).delete()
    response = client.get("/pki/crl/issuing.crl")
    assert response.status_code == 200
    [row] = rows(issuing)
    assert (row.trigger, row.crl_number) == ("first-download", 1)
    assert response.content == bytes(row.crl_der)
    event = AuditEvent.objects.filter(action="crl.published").get()
    assert event.actor_type == "user" and "anonymous" in event.actor_name
    client.get("/pki/crl/issuing.crl")
    assert len(rows(issuing)) == 1  # once


def test_an_expired_crl_is_served_as_stored_and_not_cached(client: Client, issuing) -> None:
    age(issuing, 8)
    response = client.get("/pki/crl/issuing.crl")
    assert response.status_code == 200 and response["Cache-Control"] == "no-cache"
    assert response.content == bytes(newest(issuing).crl_der)


def test_the_public_views_need_no_sign_in_even_with_login_required_middleware(
    client: Client, issuing, settings
) -> None:
    settings.MIDDLEWARE = [
        *settings.MIDDLEWARE,
        "django.contrib.auth.middleware.LoginRequiredMiddleware",
    ]
    for url in ("/pki/crl/issuing.crl", "/pki/crl/issuing.pem", "/pki/ca/issuing.crt", "/healthz"):
        assert client.get(url).status_code == 200, url
    assert (
        client.post("/pki/ocsp/issuing", b"x", content_type="application/ocsp-request").status_code
        == 200
    )
    assert client.get("/pki/cas/issuing/crl/").status_code == 302


def test_healthz(client: Client, django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert (response.status_code, response.content) == (200, b"ok\n")
    assert client.head("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def test_a_304_never_reads_the_crl_bytes(
    client: Client, issuing, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.get("/pki/crl/issuing.crl")

    def forbidden(**kwargs: object) -> None:
        raise AssertionError("the CRL bytes were read for a 304")

    monkeypatch.setattr(crl_module, "crl_download_der", forbidden)
    again = client.get("/pki/crl/issuing.crl", HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304


def test_a_crl_replaced_during_the_download_is_read_again(
    client: Client, issuing, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = crl_module.crl_download_der
    calls: list[int] = []

    def replaced_once(*, download: crl_module.CRLDownload) -> bytes | None:
        calls.append(download.pk)
        if len(calls) == 1:
            services.crl_publish(actor=None, ca=issuing)  # a newer CRL replaces it
            return real(download=download)  # None: its bytes are gone
        return real(download=download)

    monkeypatch.setattr(crl_module, "crl_download_der", replaced_once)
    response = client.get("/pki/crl/issuing.crl")
    assert response.status_code == 200 and len(calls) == 2
    assert response.content == bytes(newest(issuing).crl_der)
    assert response["ETag"] == f'"{newest(issuing).sha256}"'
