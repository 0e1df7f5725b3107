"""PKI endpoints for certificates, under ``/api/v1/admin/pki/certificates``: list, get,
download, issue (from a CSR, or with a generated key pair delivered once as PKCS#12), revoke
(one step for a leaf; a CA's certificate needs two persons, adminapi.routers.pki), release
from hold, and validate a chain as /pki/validate/ does. Same services and permissions as the
portal pages, declared in :data:`RULES`.
"""

from __future__ import annotations

import base64
from typing import Literal

from django.contrib.auth.models import User
from django.http import HttpResponse
from ninja import Query, Router, Status

from kmsportal.errors import KMSError
from pki import selectors, services
from pki.models import (
    Certificate,
    CertificateAuthority,
)

from ..auth import ApiRequest, require
from ..permissions import Rule
from ..schemas import PathId
from ..schemas_pki import (
    CertificateDetailOut,
    CertificateFilters,
    CertificateOut,
    CertificatePageOut,
    IssueCSRIn,
    IssueGeneratedIn,
    IssueGeneratedOut,
    IssuePreviewOut,
    RevocationPreviewOut,
    RevokeIn,
    ValidateIn,
    ValidateOut,
)
from .pki_shared import (
    DER_CERTIFICATE_TYPE,
    ISSUE,
    PEM_TYPE,
    REVOKE,
    VIEW_CERTIFICATE,
    ca_or_404,
    certificate_or_404,
    certificate_out,
    refused,
    summary_out,
)

router = Router(tags=["PKI"])

#: One rule per operation (adminapi.permissions); the portal page each mirrors is named beside it.
RULES: dict[str, Rule] = {
    "pki_certificate_list": Rule((VIEW_CERTIFICATE,), write=False),  # /pki/certificates/
    "pki_certificate_get": Rule((VIEW_CERTIFICATE,), write=False),
    "pki_certificate_download": Rule((VIEW_CERTIFICATE,), write=False),
    "pki_certificate_issue_csr": Rule((ISSUE,), write=True),  # /pki/issue/
    "pki_certificate_issue_preview": Rule((ISSUE,), write=True, note="POST; changes nothing"),
    "pki_certificate_issue_generated": Rule((ISSUE,), write=True),  # /pki/issue/generated/
    "pki_certificate_revoke": Rule((REVOKE,), write=True),  # /pki/certificates/<pk>/revoke/
    "pki_certificate_revoke_preview": Rule((REVOKE,), write=True, note="POST; changes nothing"),
    "pki_certificate_release": Rule((REVOKE,), write=True),  # /pki/certificates/<pk>/release/
    # /pki/validate/: changes nothing, but takes a body (a chain may be 1 MiB), so it is a
    # POST, which read-only tokens never send (adminapi.auth).
    "pki_certificate_validate": Rule(
        (VIEW_CERTIFICATE,), write=True, note="POST for its body; changes nothing"
    ),
}


def _allowed(request: ApiRequest, operation: str) -> User:
    """The token's user, once its scope and roles allow ``operation`` (its rule in RULES)."""
    rule = RULES[operation]
    return require(request, *rule.permissions, write=rule.write)


# --- certificates ----------------------------------------------------------------------------


@router.get(
    "/certificates",
    response=CertificatePageOut,
    summary="List and search certificates (newest first)",
)
def pki_certificate_list(
    request: ApiRequest, filters: Query[CertificateFilters]
) -> dict[str, object]:
    """The certificate list's filters; ``q`` matches subject or SAN (substring) or a serial
    (hex, colons allowed). Keyset-paginated: pass ``next_cursor`` as ``after``."""
    user = _allowed(request, "pki_certificate_list")
    if (
        filters.expires_after
        and filters.expires_before
        and filters.expires_before <= filters.expires_after
    ):
        raise KMSError(
            "expires_before must be after expires_after: nothing can match",
            code="validation_failed",
            status=422,
        )
    page = selectors.certificate_page(
        user=user,
        ca=filters.ca,
        profile=filters.profile,
        status=filters.status,
        expiring_within_days=filters.expiring,
        validity=filters.validity,
        expires_after=filters.expires_after,
        expires_before=filters.expires_before,
        search=filters.q,
        after=filters.after,
        size=filters.limit,
    )
    return {
        "items": [certificate_out(c) for c in page.certificates],
        "next_cursor": page.next_cursor,
    }


@router.get(
    "/certificates/{int:certificate_id}",
    response=CertificateDetailOut,
    summary="A certificate, decoded, with its PEM",
)
def pki_certificate_get(request: ApiRequest, certificate_id: PathId) -> dict[str, object]:
    user = _allowed(request, "pki_certificate_get")
    return _certificate_detail_out(certificate_or_404(user, certificate_id))


def _certificate_detail_out(certificate: Certificate) -> dict[str, object]:
    detail = selectors.certificate_detail(certificate=certificate)
    certified = selectors.ca_of_certificate(certificate=certificate)
    summary = detail.summary
    return {
        **certificate_out(certificate),
        "fingerprint_sha256": certificate.fingerprint_sha256,
        "certificate_pem": certificate.certificate_pem,
        "chain": [ca.name for ca in detail.chain],
        "ca_of_certificate": certified.name if certified is not None else None,
        "key_usage": list(summary.key_usage),
        "extended_key_usage": list(summary.extended_key_usage),
        "signature_algorithm": summary.signature_algorithm,
        "crl_distribution_points": list(summary.crl_distribution_points),
        "ocsp_urls": list(summary.ocsp_urls),
    }


@router.get(
    "/certificates/{int:certificate_id}/download/{encoding}",
    summary="Download a certificate: pem, der, or chain (PEM with its intermediates)",
    response={200: None},
    openapi_extra={
        "responses": {
            200: {  # the same key as response= (an int): one "200" in the document
                "description": "The certificate",
                "content": {
                    PEM_TYPE: {"schema": {"type": "string"}},
                    DER_CERTIFICATE_TYPE: {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    },
)
def pki_certificate_download(
    request: ApiRequest,
    encoding: Literal["pem", "der", "chain"],
    certificate_id: PathId,
) -> HttpResponse:
    user = _allowed(request, "pki_certificate_download")
    certificate = certificate_or_404(user, certificate_id)
    stem = f"{certificate.ca.name}-{certificate.serial_number_display}"
    content: str | bytes
    if encoding == "pem":
        content, content_type, filename = certificate.certificate_pem, PEM_TYPE, f"{stem}.pem"
    elif encoding == "der":
        content, content_type, filename = (
            bytes(certificate.certificate_der),
            DER_CERTIFICATE_TYPE,
            f"{stem}.crt",
        )
    else:
        content, content_type, filename = (
            selectors.certificate_fullchain_pem(certificate=certificate),
            PEM_TYPE,
            f"{stem}-fullchain.pem",
        )
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _issuing_ca(user: User, name: str) -> CertificateAuthority:
    """A CA the issuance pages offer: active intermediates, not the internal ones."""
    if name not in {offered for offered, _ in selectors.ca_issuing_choices(user=user)}:
        raise KMSError(
            f"CA {name!r} does not issue certificates here: choose an active intermediate CA "
            "(roots sign intermediates only; the key distribution's own CAs issue only "
            "through enrollment)",
            code="ca_not_issuing",
            status=409,
        )
    return ca_or_404(user, name)


def _profile(name: str) -> str:
    if name not in {offered for offered, _ in selectors.profile_choices()}:
        choices = ", ".join(offered for offered, _ in selectors.profile_choices())
        raise KMSError(
            f"unknown profile {name!r}; choose one of {choices}",
            code="unknown_profile",
            status=422,
        )
    return name


@router.post(
    "/certificates/issue",
    response={201: CertificateDetailOut},
    summary="Issue a certificate from a CSR",
)
def pki_certificate_issue_csr(request: ApiRequest, body: IssueCSRIn) -> Status[dict[str, object]]:
    """The CSR (PEM) must verify and use an acceptable key (RSA >= 2048 bits or EC) and hash
    (no SHA-1). ``subject`` and ``sans`` replace the CSR's, as on the review page. ``days``
    defaults to the profile's maximum, never past the CA's own expiry."""
    user = _allowed(request, "pki_certificate_issue_csr")
    ca = _issuing_ca(user, body.ca)
    with refused("issuance_refused", status=422):
        certificate = services.certificate_issue_from_csr(
            actor=user,
            ca=ca,
            csr_pem_or_der=body.csr_pem.encode("utf-8"),
            profile=_profile(body.profile),
            subject_override=body.subject,
            sans_override=body.sans,
            days=body.days,
        )
    return Status(201, _certificate_detail_out(certificate_or_404(user, certificate.pk)))


@router.post(
    "/certificates/issue-preview",
    response=IssuePreviewOut,
    summary="What issuing from this CSR would sign (the review page); changes nothing",
)
def pki_certificate_issue_preview(request: ApiRequest, body: IssueCSRIn) -> dict[str, object]:
    """The same checks as issuing, and the certificate that would be signed (bar serial and
    the second of notBefore), signed by a throwaway key: nothing is stored or audited."""
    user = _allowed(request, "pki_certificate_issue_preview")
    ca = _issuing_ca(user, body.ca)
    with refused("issuance_refused", status=422):
        preview = services.certificate_csr_preview(
            ca=ca,
            csr_pem_or_der=body.csr_pem.encode("utf-8"),
            profile=_profile(body.profile),
            subject_override=body.subject,
            sans_override=body.sans,
            days=body.days,
        )
    return {
        "ca": preview.ca.name,
        "profile": preview.profile,
        "subject": preview.subject,
        "sans": preview.sans,
        "days": preview.days,
        "certificate": summary_out(preview.summary),
    }


@router.post(
    "/certificates/issue-generated",
    response={201: IssueGeneratedOut},
    summary="Issue a certificate with a key pair generated here (PKCS#12, once)",
)
def pki_certificate_issue_generated(
    request: ApiRequest, body: IssueGeneratedIn, response: HttpResponse
) -> Status[dict[str, object]]:
    """The key pair is generated in memory, and returned once inside a PKCS#12 (and, with
    ``delivery=pem``, an encrypted PEM bundle) protected by ``password`` (8 characters at
    least). Neither the key nor the password is stored, logged or audited; every call
    issues a new certificate. The answer is never cached."""
    user = _allowed(request, "pki_certificate_issue_generated")
    response["Cache-Control"] = "no-store"
    ca = _issuing_ca(user, body.ca)
    with refused("issuance_refused", status=422):
        credential = services.certificate_issue_generated(
            actor=user,
            ca=ca,
            subject=body.subject,
            sans=body.sans,
            profile=_profile(body.profile),
            pkcs12_password=body.password,
            days=body.days,
            key_type=body.key_type,
            pem_bundle=body.delivery == "pem",
        )
    pem_bundle = credential.pem_bundle
    return Status(
        201,
        {
            "certificate": certificate_out(credential.certificate),
            "pkcs12_base64": base64.b64encode(credential.pkcs12).decode("ascii"),
            "pem_bundle": pem_bundle.decode("ascii") if pem_bundle is not None else None,
        },
    )


@router.post(
    "/certificates/{int:certificate_id}/revoke",
    response=CertificateOut,
    summary="Revoke a certificate (RFC 5280 reason); its CA's CRL is republished",
)
def pki_certificate_revoke(
    request: ApiRequest, body: RevokeIn, certificate_id: PathId
) -> dict[str, object]:
    """``certificateHold`` is the one revocation that can be undone (``release``). The
    certificate of an intermediate CA is refused here (``two_person_required``): ask for
    the CA's revocation instead."""
    user = _allowed(request, "pki_certificate_revoke")
    certificate = certificate_or_404(user, certificate_id)
    certified = selectors.ca_of_certificate(certificate=certificate)
    if certified is not None:
        raise KMSError(
            f"certificate {certificate.serial_number_display} is the certificate of CA "
            f"{certified.name}: revoking it revokes the CA and everything below it, which "
            "needs two people. Ask with POST /api/v1/admin/pki/cas/"
            f"{certified.name}/revocation-requests; another person approves it",
            code="two_person_required",
            status=409,
        )
    with refused("revocation_refused"):
        revoked = services.certificate_revoke(
            actor=user,
            certificate=certificate,
            reason=body.reason,
            invalidity_date=body.invalidity_date,
        )
    return certificate_out(revoked)


@router.post(
    "/certificates/{int:certificate_id}/revoke-preview",
    response=RevocationPreviewOut,
    summary="What revoking this certificate would do (the confirmation page); changes nothing",
)
def pki_certificate_revoke_preview(
    request: ApiRequest, body: RevokeIn, certificate_id: PathId
) -> dict[str, object]:
    """The same checks as revoking, and what it would take along: for an intermediate CA's
    certificate, the CAs and certificates below (whose revocation needs a second person)."""
    user = _allowed(request, "pki_certificate_revoke_preview")
    certificate = certificate_or_404(user, certificate_id)
    with refused("revocation_refused"):
        preview = services.certificate_revocation_preview(
            certificate=certificate, reason=body.reason, invalidity_date=body.invalidity_date
        )
    return {
        "certificate_id": certificate.pk,
        "serial": certificate.serial_number_display,
        "reason": preview.reason.value,
        "invalidity_date": preview.invalidity_date,
        "revoked_ca": preview.revoked_ca.name if preview.revoked_ca is not None else None,
        "cas_below": preview.cas_below,
        "certificates_below": preview.certificates_below,
        "current_crl_number": preview.current_crl_number,
    }


@router.post(
    "/certificates/{int:certificate_id}/release",
    response=CertificateOut,
    summary="Release a certificate from hold (certificateHold)",
)
def pki_certificate_release(request: ApiRequest, certificate_id: PathId) -> dict[str, object]:
    user = _allowed(request, "pki_certificate_release")
    certificate = certificate_or_404(user, certificate_id)
    with refused("release_refused"):
        released = services.certificate_release(actor=user, certificate=certificate)
    return certificate_out(released)


@router.post(
    "/validate",
    response=ValidateOut,
    summary="Validate a certificate (and chain): every check, pass or fail",
)
def pki_certificate_validate(request: ApiRequest, body: ValidateIn) -> dict[str, object]:
    """Path to one of this PKI's roots, signatures, validity, constraints, usage for
    ``purpose``, ``hostname`` and revocation. Changes nothing. Input that is not a
    certificate fails the decoding check (``ok`` false), as on the page."""
    user = _allowed(request, "pki_certificate_validate")
    with refused("validation_refused", status=422):
        outcome = services.certificate_validate(
            actor=user,
            pem_data=body.certificate_pem.encode("utf-8"),
            chain_pem=body.chain_pem.encode("utf-8") if body.chain_pem.strip() else None,
            purpose=body.purpose,
            hostname=body.hostname,
        )
    report = outcome.report
    return {
        "ok": report.ok,
        "checks": [
            {"name": check.name, "passed": check.passed, "detail": check.detail}
            for check in report.checks
        ],
        "path": [{"subject": entry.subject, "ca": entry.ca_name} for entry in outcome.path],
        "paths_tried": list(report.paths_tried),
        "purpose": outcome.purpose,
        "hostname": outcome.hostname,
        "subject": outcome.leaf.subject if outcome.leaf is not None else None,
        "serial": outcome.leaf.serial_number if outcome.leaf is not None else None,
        "issued_here": outcome.issued_here.pk if outcome.issued_here is not None else None,
    }
