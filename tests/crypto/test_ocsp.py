"""Tests for kmsportal.crypto.ocsp: responses that OpenSSL and cryptography accept.

The CA hierarchy (root RSA-2048, intermediate, leaves, delegated responder with
id-kp-OCSPSigning and ocsp-nocheck) comes from :func:`tests.crypto.test_crl.build_pki`.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp

from kmsportal.crypto.crl import RevocationReason
from kmsportal.crypto.ocsp import (
    CertStatus,
    OCSPError,
    OCSPMalformedRequest,
    ParsedOCSPRequest,
    build_ocsp_error,
    build_ocsp_response,
    load_ocsp_response,
    ocsp_response_summary,
    parse_ocsp_request,
    request_matches_issuer,
)
from kmsportal.crypto.signer import LoadedKeySigner, Signer
from tests.crypto.test_crl import PKI, build_pki, openssl

NOW = datetime.now(UTC).replace(microsecond=0)
DAY = timedelta(days=1)
REVOKED_AT = NOW - 2 * DAY
#: CertID hashes only identify the issuer; SHA-1 is what clients send (RFC 5019 §2.1.1).
CERT_ID_HASH = hashes.SHA1()  # noqa: S303


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return build_pki(tmp_path_factory.mktemp("ocsp-pki"))


def request_der(
    cert: x509.Certificate,
    issuer: x509.Certificate,
    *,
    nonce: bytes | None = None,
    algorithm: hashes.HashAlgorithm | None = None,
) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, algorithm or CERT_ID_HASH)
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def respond(
    pki: PKI,
    parsed: ParsedOCSPRequest,
    status: CertStatus | str,
    *,
    delegated: bool = False,
    subject: x509.Certificate | None = None,
    revocation_time: datetime | None = None,
    revocation_reason: RevocationReason | str | None = None,
    signer: Signer | None = None,
) -> bytes:
    responder = pki.responder if delegated else pki.root
    default_signer = LoadedKeySigner(pki.responder_key) if delegated else pki.root_signer
    return build_ocsp_response(
        parsed_request=parsed,
        issuer_certificate=pki.root,
        responder_certificate=responder,
        signer=signer or default_signer,
        status=status,
        revocation_time=revocation_time,
        revocation_reason=revocation_reason,
        this_update=NOW,
        next_update=NOW + DAY,
        subject_certificate=subject,
    )


def signature_is_valid(response: ocsp.OCSPResponse, certificate: x509.Certificate) -> bool:
    """Independent check: the signature over tbsResponseData with the responder's key."""
    key = certificate.public_key()
    algorithm = response.signature_hash_algorithm
    assert algorithm is not None
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(
                response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
            )
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
        else:
            raise AssertionError(f"unexpected key type {type(key)}")
    except Exception:
        return False
    return True


def write(directory: Path, name: str, data: bytes) -> str:
    path = directory / name
    path.write_bytes(data)
    return str(path)


# --- parsing and matching -------------------------------------------------------------------


def test_parse_a_request_with_nonce(pki: PKI) -> None:
    nonce = os.urandom(32)

    parsed = parse_ocsp_request(request_der(pki.good_leaf, pki.root, nonce=nonce))

    assert parsed.serial_number == pki.good_leaf.serial_number
    assert isinstance(parsed.hash_algorithm, hashes.SHA1)
    assert len(parsed.issuer_name_hash) == len(parsed.issuer_key_hash) == 20
    assert parsed.nonce == nonce
    assert request_matches_issuer(parsed, pki.root)


def test_parse_a_request_without_nonce(pki: PKI) -> None:
    assert parse_ocsp_request(request_der(pki.good_leaf, pki.root)).nonce is None


def test_issuer_hashes_match_cryptography_for_sha256_too(pki: PKI) -> None:
    parsed = parse_ocsp_request(
        request_der(pki.intermediate_good_leaf, pki.intermediate, algorithm=hashes.SHA256())
    )

    assert request_matches_issuer(parsed, pki.intermediate)
    assert not request_matches_issuer(parsed, pki.root)


def test_a_request_for_another_issuer_does_not_match(pki: PKI) -> None:
    parsed = parse_ocsp_request(request_der(pki.intermediate_good_leaf, pki.intermediate))

    assert not request_matches_issuer(parsed, pki.root)
    with pytest.raises(OCSPError, match="another issuer"):
        respond(pki, parsed, "good")


def test_issuer_hashes_match_an_openssl_request(pki: PKI) -> None:
    req_path = pki.directory / "openssl-req.der"
    result = openssl(
        "ocsp", "-issuer", pki.path("intermediate.pem"), "-cert",
        pki.path("intermediate_good_leaf.pem"), "-reqout", str(req_path), cwd=pki.directory,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    parsed = parse_ocsp_request(req_path.read_bytes())

    assert parsed.serial_number == pki.intermediate_good_leaf.serial_number
    assert parsed.nonce is not None  # openssl adds a nonce by default
    assert request_matches_issuer(parsed, pki.intermediate)
    assert not request_matches_issuer(parsed, pki.root)


@pytest.mark.parametrize("data", [b"", b"garbage", b"\x30\x03\x02\x01\x01", "text"])
def test_malformed_requests(data: object) -> None:
    with pytest.raises(OCSPMalformedRequest):
        parse_ocsp_request(data)  # type: ignore[arg-type]


def test_a_request_for_two_certificates_is_malformed(pki: PKI) -> None:
    req_path = pki.directory / "two.der"
    result = openssl(
        "ocsp", "-issuer", pki.path("root.pem"), "-cert", pki.path("good_leaf.pem"),
        "-cert", pki.path("revoked_leaf.pem"), "-reqout", str(req_path), cwd=pki.directory,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr

    with pytest.raises(OCSPMalformedRequest, match="more than one"):
        parse_ocsp_request(req_path.read_bytes())


@pytest.mark.parametrize("nonce", [b"", os.urandom(129)], ids=["empty", "129-octets"])
def test_nonce_outside_rfc_9654_bounds_is_malformed(pki: PKI, nonce: bytes) -> None:
    with pytest.raises(OCSPMalformedRequest, match="nonce"):
        parse_ocsp_request(request_der(pki.good_leaf, pki.root, nonce=nonce))


def test_an_unknown_critical_request_extension_is_malformed(pki: PKI) -> None:
    unknown = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.55555.1"), b"\x05\x00")
    der = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(pki.good_leaf, pki.root, CERT_ID_HASH)
        .add_extension(unknown, critical=True)
        .build()
        .public_bytes(serialization.Encoding.DER)
    )

    with pytest.raises(OCSPMalformedRequest, match="critical request extension"):
        parse_ocsp_request(der)


# --- responses, checked with cryptography -----------------------------------------------------


def test_good_response_signed_by_the_ca(pki: PKI) -> None:
    nonce = os.urandom(32)
    parsed = parse_ocsp_request(request_der(pki.good_leaf, pki.root, nonce=nonce))

    response = load_ocsp_response(respond(pki, parsed, CertStatus.GOOD, subject=pki.good_leaf))

    assert response.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    assert signature_is_valid(response, pki.root)
    assert not signature_is_valid(response, pki.responder)
    assert response.certificates == []  # the CA signs itself: nothing to embed
    assert response.responder_key_hash == (
        x509.SubjectKeyIdentifier.from_public_key(pki.root_key.public_key()).digest
    )
    summary = ocsp_response_summary(response)
    assert summary.response_status == "successful"
    assert summary.cert_status is CertStatus.GOOD
    assert summary.serial_number == pki.good_leaf.serial_number
    assert summary.nonce == nonce
    assert summary.this_update == NOW
    assert summary.next_update == NOW + DAY
    assert summary.revocation_time is None
    assert summary.revocation_reason is None
    # The CertID is echoed exactly.
    assert response.issuer_name_hash == parsed.issuer_name_hash
    assert response.issuer_key_hash == parsed.issuer_key_hash
    assert isinstance(response.hash_algorithm, hashes.SHA1)


def test_revoked_response_carries_time_and_reason(pki: PKI) -> None:
    parsed = parse_ocsp_request(request_der(pki.revoked_leaf, pki.root, nonce=os.urandom(16)))

    response = load_ocsp_response(
        respond(
            pki,
            parsed,
            "revoked",
            revocation_time=REVOKED_AT,
            revocation_reason=RevocationReason.KEY_COMPROMISE,
        )
    )

    assert signature_is_valid(response, pki.root)
    summary = ocsp_response_summary(response)
    assert summary.cert_status is CertStatus.REVOKED
    assert summary.revocation_time == REVOKED_AT
    assert summary.revocation_reason is RevocationReason.KEY_COMPROMISE
    assert response.revocation_reason is x509.ReasonFlags.key_compromise


def test_revoked_with_unspecified_reason_omits_the_reason(pki: PKI) -> None:
    parsed = parse_ocsp_request(request_der(pki.revoked_leaf, pki.root))

    response = load_ocsp_response(
        respond(pki, parsed, "revoked", revocation_time=REVOKED_AT, revocation_reason="unspecified")
    )

    assert response.certificate_status is ocsp.OCSPCertStatus.REVOKED
    assert response.revocation_reason is None


def test_unknown_response_for_a_serial_we_never_issued(pki: PKI) -> None:
    good = parse_ocsp_request(request_der(pki.good_leaf, pki.root, algorithm=hashes.SHA256()))
    never_issued = ParsedOCSPRequest(
        serial_number=0xDEADBEEF,
        issuer_name_hash=good.issuer_name_hash,
        issuer_key_hash=good.issuer_key_hash,
        hash_algorithm=good.hash_algorithm,
        nonce=None,
    )

    response = load_ocsp_response(respond(pki, never_issued, "unknown"))

    assert signature_is_valid(response, pki.root)
    summary = ocsp_response_summary(response)
    assert summary.cert_status is CertStatus.UNKNOWN
    assert summary.serial_number == 0xDEADBEEF
    assert summary.nonce is None
    assert isinstance(response.hash_algorithm, hashes.SHA256)


def test_delegated_responder_embeds_its_certificate(pki: PKI) -> None:
    nonce = os.urandom(32)
    parsed = parse_ocsp_request(request_der(pki.good_leaf, pki.root, nonce=nonce))

    response = load_ocsp_response(respond(pki, parsed, "good", delegated=True))

    assert response.certificates == [pki.responder]
    assert signature_is_valid(response, pki.responder)
    assert not signature_is_valid(response, pki.root)
    summary = ocsp_response_summary(response)
    assert summary.certificate_count == 1
    assert summary.nonce == nonce
    assert summary.responder_key_hash == (
        x509.SubjectKeyIdentifier.from_public_key(pki.responder_key.public_key()).digest.hex()
    )


# --- responses, checked with openssl ---------------------------------------------------------


@pytest.mark.parametrize("delegated", [False, True], ids=["ca-signed", "delegated"])
@pytest.mark.parametrize("revoked", [False, True], ids=["good", "revoked"])
def test_openssl_accepts_the_response_and_its_nonce(
    pki: PKI, delegated: bool, revoked: bool
) -> None:
    leaf, leaf_file = (
        (pki.revoked_leaf, "revoked_leaf.pem") if revoked else (pki.good_leaf, "good_leaf.pem")
    )
    req = request_der(leaf, pki.root, nonce=os.urandom(32))
    parsed = parse_ocsp_request(req)
    resp = respond(
        pki,
        parsed,
        "revoked" if revoked else "good",
        delegated=delegated,
        revocation_time=REVOKED_AT if revoked else None,
        revocation_reason="keyCompromise" if revoked else None,
    )
    tag = f"{'delegated' if delegated else 'ca'}-{'revoked' if revoked else 'good'}"
    req_path = write(pki.directory, f"{tag}.req.der", req)
    resp_path = write(pki.directory, f"{tag}.resp.der", resp)
    # A delegate's certificate travels in the response and chains to the trusted root;
    # -VAfile pins it explicitly in a second check.
    trust = ["-CAfile", pki.path("root.pem")]

    # 1. The nonce: -reqin makes openssl compare the request's nonce with the response's.
    with_nonce = openssl(
        "ocsp", "-reqin", req_path, "-respin", resp_path, "-issuer", pki.path("root.pem"),
        *trust, "-resp_text", cwd=pki.directory,
    )  # fmt: skip
    # 2. The status line for the certificate (-cert builds its own request: no nonce then).
    status = openssl(
        "ocsp", "-respin", resp_path, "-issuer", pki.path("root.pem"),
        "-cert", pki.path(leaf_file), *trust, "-no_nonce", cwd=pki.directory,
    )  # fmt: skip

    assert with_nonce.returncode == 0, with_nonce.stdout + with_nonce.stderr
    assert "Response verify OK" in with_nonce.stdout + with_nonce.stderr
    assert "Nonce Verify error" not in with_nonce.stdout + with_nonce.stderr
    assert "OCSP Nonce" in with_nonce.stdout
    assert status.returncode == 0, status.stdout + status.stderr
    assert "Response verify OK" in status.stdout + status.stderr
    if revoked:
        assert f"{leaf_file}: revoked" in status.stdout
        assert "Reason: keyCompromise" in status.stdout
    else:
        assert f"{leaf_file}: good" in status.stdout
    if delegated:
        pinned = openssl(
            "ocsp", "-reqin", req_path, "-respin", resp_path,
            "-VAfile", pki.path("responder.pem"), cwd=pki.directory,
        )  # fmt: skip
        assert pinned.returncode == 0, pinned.stdout + pinned.stderr
        assert "Response verify OK" in pinned.stdout + pinned.stderr


def test_openssl_notices_a_response_to_another_request(pki: PKI) -> None:
    asked = request_der(pki.good_leaf, pki.root, nonce=os.urandom(32))
    other = parse_ocsp_request(request_der(pki.good_leaf, pki.root, nonce=os.urandom(32)))
    req_path = write(pki.directory, "replay.req.der", asked)
    resp_path = write(pki.directory, "replay.resp.der", respond(pki, other, "good"))

    result = openssl(
        "ocsp", "-reqin", req_path, "-respin", resp_path, "-issuer", pki.path("root.pem"),
        "-CAfile", pki.path("root.pem"), cwd=pki.directory,
    )  # fmt: skip

    assert result.returncode != 0
    assert "Nonce Verify error" in result.stdout + result.stderr


def test_openssl_answers_its_own_request(pki: PKI) -> None:
    """openssl builds the request (with its own nonce); we answer; openssl checks it all."""
    req_path = pki.directory / "own.req.der"
    made = openssl(
        "ocsp", "-issuer", pki.path("root.pem"), "-cert", pki.path("revoked_leaf.pem"),
        "-reqout", str(req_path), cwd=pki.directory,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    parsed = parse_ocsp_request(req_path.read_bytes())
    resp = respond(
        pki,
        parsed,
        "revoked",
        subject=pki.revoked_leaf,
        revocation_time=REVOKED_AT,
        revocation_reason=RevocationReason.CESSATION_OF_OPERATION,
    )
    resp_path = write(pki.directory, "own.resp.der", resp)

    result = openssl(
        "ocsp", "-reqin", str(req_path), "-respin", resp_path, "-issuer", pki.path("root.pem"),
        "-CAfile", pki.path("root.pem"), "-resp_text", cwd=pki.directory,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Response verify OK" in result.stdout + result.stderr
    assert "Cert Status: revoked" in result.stdout
    assert "cessationOfOperation" in result.stdout


# --- inconsistent input ----------------------------------------------------------------------


def _parsed(pki: PKI) -> ParsedOCSPRequest:
    return parse_ocsp_request(request_der(pki.revoked_leaf, pki.root))


def test_revoked_needs_a_time(pki: PKI) -> None:
    with pytest.raises(OCSPError, match="needs its revocation_time"):
        respond(pki, _parsed(pki), "revoked", revocation_reason="keyCompromise")


@pytest.mark.parametrize("status", ["good", "unknown"])
def test_only_revoked_has_time_or_reason(pki: PKI, status: str) -> None:
    with pytest.raises(OCSPError, match="no revocation time or reason"):
        respond(pki, _parsed(pki), status, revocation_time=REVOKED_AT)
    with pytest.raises(OCSPError, match="no revocation time or reason"):
        respond(pki, _parsed(pki), status, revocation_reason="superseded")


@pytest.mark.parametrize("reason", ["removeFromCRL", "aACompromise", "bored"])
def test_reasons_a_revoked_certificate_cannot_carry(pki: PKI, reason: str) -> None:
    with pytest.raises(OCSPError, match="reason"):
        respond(pki, _parsed(pki), "revoked", revocation_time=REVOKED_AT, revocation_reason=reason)


def test_unknown_status_is_refused(pki: PKI) -> None:
    with pytest.raises(OCSPError, match="unknown certificate status 'fine'"):
        respond(pki, _parsed(pki), "fine")


def test_subject_certificate_must_be_the_one_asked_about(pki: PKI) -> None:
    with pytest.raises(OCSPError, match="not the certificate the request asks about"):
        respond(pki, _parsed(pki), "good", subject=pki.good_leaf)


def test_next_update_must_follow_this_update(pki: PKI) -> None:
    with pytest.raises(OCSPError, match="must be after"):
        build_ocsp_response(
            parsed_request=_parsed(pki),
            issuer_certificate=pki.root,
            responder_certificate=pki.root,
            signer=pki.root_signer,
            status="good",
            revocation_time=None,
            revocation_reason=None,
            this_update=NOW,
            next_update=NOW,
            subject_certificate=None,
        )


def test_signer_must_hold_the_responder_key(pki: PKI) -> None:
    with pytest.raises(OCSPError, match="signer's key"):
        respond(pki, _parsed(pki), "good", signer=LoadedKeySigner(pki.responder_key))


def test_a_delegate_without_ocsp_signing_is_refused(pki: PKI) -> None:
    """A leaf issued by the CA but without id-kp-OCSPSigning may not answer for it."""
    with pytest.raises(OCSPError, match="OCSPSigning"):
        build_ocsp_response(
            parsed_request=_parsed(pki),
            issuer_certificate=pki.root,
            responder_certificate=pki.good_leaf,
            signer=LoadedKeySigner(pki.responder_key),
            status="good",
            revocation_time=None,
            revocation_reason=None,
            this_update=NOW,
            next_update=NOW + DAY,
            subject_certificate=None,
        )


def test_a_delegate_of_another_ca_is_refused(pki: PKI) -> None:
    with pytest.raises(OCSPError, match="not issued by this CA"):
        build_ocsp_response(
            parsed_request=_parsed(pki),
            issuer_certificate=pki.root,
            responder_certificate=pki.intermediate_good_leaf,
            signer=LoadedKeySigner(pki.responder_key),
            status="good",
            revocation_time=None,
            revocation_reason=None,
            this_update=NOW,
            next_update=NOW + DAY,
            subject_certificate=None,
        )


# --- error responses and loading ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("malformedRequest", ocsp.OCSPResponseStatus.MALFORMED_REQUEST),
        ("unauthorized", ocsp.OCSPResponseStatus.UNAUTHORIZED),
        ("internalError", ocsp.OCSPResponseStatus.INTERNAL_ERROR),
        ("tryLater", ocsp.OCSPResponseStatus.TRY_LATER),
    ],
)
def test_error_responses(name: str, status: ocsp.OCSPResponseStatus) -> None:
    der = build_ocsp_error(name)

    assert ocsp.load_der_ocsp_response(der).response_status is status
    assert ocsp_response_summary(load_ocsp_response(der)).response_status == name
    assert ocsp_response_summary(load_ocsp_response(der)).cert_status is None


def test_openssl_reads_an_error_response(pki: PKI) -> None:
    resp_path = write(pki.directory, "error.resp.der", build_ocsp_error("malformedRequest"))

    result = openssl("ocsp", "-respin", resp_path, "-resp_text", "-noverify", cwd=pki.directory)

    assert "malformedrequest" in (result.stdout + result.stderr).lower()


@pytest.mark.parametrize("name", ["successful", "MALFORMED_REQUEST", "", None])
def test_build_ocsp_error_refuses_non_error_statuses(name: object) -> None:
    with pytest.raises(OCSPError, match="not an OCSP error status"):
        build_ocsp_error(name)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [b"", b"junk", b"\x30\x00"])
def test_load_ocsp_response_rejects_garbage(data: bytes) -> None:
    with pytest.raises(OCSPError):
        load_ocsp_response(data)


def test_cert_status_enum() -> None:
    assert CertStatus("revoked") is CertStatus.REVOKED
    assert CertStatus.GOOD.ocsp_status is ocsp.OCSPCertStatus.GOOD
    assert CertStatus.UNKNOWN.ocsp_status is ocsp.OCSPCertStatus.UNKNOWN
