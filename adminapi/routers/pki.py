"""PKI endpoints: certificate authorities, certificates, CA revocation requests, CRLs and
validation, under ``/api/v1/admin/pki/``.

Each endpoint does what a portal page does, through the same selectors and services and
behind the same permission (declared in :data:`RULES`): it parses the body, checks the
token's permission, calls one service and renders. Every refusal of a service (a
:class:`~pki.errors.PkiError`) becomes a problem document with a stable code; nothing here
changes state except through a service, which records its audit event in its own
transaction.

Where the portal offers a choice, the API accepts exactly that choice: certificates are
issued by the CAs the issuance pages offer (active intermediates other than the key
distribution's own), a new intermediate goes under a CA the CA page offers as parent, and
the certificate of an intermediate CA is never revoked in one step (two-person rule: ask
with ``POST /pki/cas/{name}/revocation-requests``; a second person approves, rejects or the
requester withdraws it through the shared two-person inbox, ``/admin/approvals/ca-revocation/
{id}/approve`` etc. (adminapi.routers.approvals), as in the portal's Approvals pages).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from django.contrib.auth.models import User
from django.http import HttpResponse
from ninja import Query, Router, Status

from kmsportal.errors import KMSError
from pki import approvals, selectors, services
from pki.distribution import ca_distribution_points
from pki.errors import PkiError
from pki.models import (
    CA_NAME_PATTERN,
    CARevocationRequest,
    Certificate,
    CertificateAuthority,
    CRLTrigger,
    RevocationList,
)

from ..auth import ApiRequest, require
from ..permissions import Rule
from ..schemas import PathId
from ..schemas_pki import (
    CACreateIn,
    CADetailOut,
    CADisableIn,
    CAOut,
    CAPreviewOut,
    CARevocationPendingOut,
    CARevocationRequestIn,
    CARevocationRequestOut,
    CertificateDetailOut,
    CertificateFilters,
    CertificateOut,
    CertificatePageOut,
    CRLPublishOut,
    CRLStatusOut,
    IssueCSRIn,
    IssueGeneratedIn,
    IssueGeneratedOut,
    IssuePreviewOut,
    RevocationPreviewOut,
    RevokeIn,
    ValidateIn,
    ValidateOut,
)

router = Router(tags=["PKI"])

VIEW_CA = selectors.VIEW_CA
VIEW_CERTIFICATE = selectors.VIEW_CERTIFICATE
VIEW_CA_REVOCATION_REQUEST = selectors.VIEW_CA_REVOCATION_REQUEST
MANAGE_CA = "pki.manage_certificateauthority"
ISSUE = "pki.issue_certificate"
REVOKE = selectors.REVOKE
PUBLISH_CRL = "pki.publish_crl"

#: One rule per operation (adminapi.permissions); the portal page each mirrors is named beside it.
RULES: dict[str, Rule] = {
    "pki_ca_list": Rule((VIEW_CA,), write=False),  # /pki/
    "pki_ca_get": Rule((VIEW_CA,), write=False),  # /pki/cas/<name>/
    "pki_ca_create": Rule((MANAGE_CA,), write=True),  # /pki/cas/new/
    "pki_ca_preview": Rule((MANAGE_CA,), write=True, note="POST; changes nothing"),
    "pki_ca_disable": Rule((MANAGE_CA,), write=True),  # /pki/cas/<name>/disable/
    # /pki/certificates/<pk>/revoke/ of a CA's certificate: asks, a second person approves.
    "pki_ca_revocation_request": Rule((REVOKE,), write=True),
    "pki_ca_revocation_list": Rule(  # /pki/revocations/
        (VIEW_CA_REVOCATION_REQUEST,), write=False
    ),
    "pki_ca_revocation_get": Rule((VIEW_CA_REVOCATION_REQUEST,), write=False),
    "pki_crl_get": Rule((VIEW_CA,), write=False),  # /pki/cas/<name>/crl/
    "pki_crl_publish": Rule((PUBLISH_CRL,), write=True),  # /pki/cas/<name>/crl/publish/
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

PEM_TYPE = "application/x-pem-file"
DER_CERTIFICATE_TYPE = "application/pkix-cert"


def _allowed(request: ApiRequest, operation: str) -> User:
    """The token's user, once its scope and roles allow ``operation`` (its rule in RULES)."""
    rule = RULES[operation]
    return require(request, *rule.permissions, write=rule.write)


@contextmanager
def _refused(code: str, status: int = 409) -> Iterator[None]:
    """A service's refusal as a problem document: ``code`` unless the error brings its own."""
    try:
        yield
    except PkiError as exc:
        # A subclass that names its own problem keeps it; the plain PkiError is this one.
        if type(exc) is not PkiError and getattr(exc, "code", None) != getattr(
            PkiError, "code", None
        ):
            raise
        raise KMSError(str(exc), code=code, status=status) from None


def _not_found(what: str) -> KMSError:
    return KMSError(f"No such {what}.", code="not_found", status=404)


def _ca_or_404(user: User, name: str) -> CertificateAuthority:
    # A name that cannot be a CA's is no CA (and never reaches the database).
    ca = selectors.ca_get(user=user, name=name) if re.fullmatch(CA_NAME_PATTERN, name) else None
    if ca is None:
        raise _not_found("certificate authority")
    return ca


def _certificate_or_404(user: User, pk: int) -> Certificate:
    certificate = selectors.certificate_get(user=user, pk=pk)
    if certificate is None:
        raise _not_found("certificate")
    return certificate


def _request_or_404(user: User, pk: int) -> CARevocationRequest:
    asked = selectors.ca_revocation_request_get(user=user, pk=pk)
    if asked is None:
        raise _not_found("CA revocation request")
    return asked


# --- rendering -------------------------------------------------------------------------------


def _ca_out(ca: CertificateAuthority) -> dict[str, object]:
    return {
        "name": ca.name,
        "subject": ca.subject,
        "parent": ca.parent.name if ca.parent is not None else None,
        "is_root": ca.is_root,
        "key_type": ca.key_type,
        "state": ca.state,
        "serial": ca.serial_number_display,
        "fingerprint_sha256": ca.fingerprint_sha256,
        "not_before": ca.not_before,
        "not_after": ca.not_after,
        "path_length": ca.path_length,
        "server_identity": ca.server_identity,
        "disabled_at": ca.disabled_at,
        "revoked_at": ca.revoked_at,
        "revocation_reason": ca.revocation_reason,
        "created_by": ca.created_by_name,
        "created_at": ca.created_at,
    }


def _request_out(asked: CARevocationRequest) -> dict[str, object]:
    return {
        "id": asked.pk,
        "ca": asked.ca.name,
        "certificate_id": asked.certificate_id,
        "serial": asked.certificate.serial_number_display,
        "reason": asked.reason,
        "invalidity_date": asked.invalidity_date,
        "comment": asked.comment,
        "status": asked.status,
        "requested_by": asked.requested_by_name,
        "requested_at": asked.requested_at,
        "expires_at": asked.expires_at,
        "decided_by": asked.decided_by_name,
        "decided_at": asked.decided_at,
        "decision_comment": asked.decision_comment,
    }


def _certificate_out(certificate: Certificate) -> dict[str, object]:
    return {
        "id": certificate.pk,
        "ca": certificate.ca.name,
        "serial": certificate.serial_number_display,
        "subject": certificate.subject,
        "sans": certificate.san_list,
        "profile": certificate.profile,
        "public_key": certificate.public_key,
        "not_before": certificate.not_before,
        "not_after": certificate.not_after,
        "status": certificate.status,
        "revocation_reason": certificate.revocation_reason,
        "revoked_at": certificate.revoked_at,
        "invalidity_date": certificate.invalidity_date,
        "source": certificate.source,
        "issued_by": certificate.issued_by_name,
        "issued_at": certificate.issued_at,
    }


def _crl_out(row: RevocationList | None) -> dict[str, object] | None:
    if row is None:
        return None
    return {
        "crl_number": row.crl_number,
        "is_delta": row.is_delta,
        "base_crl_number": row.base_crl_number,
        "this_update": row.this_update,
        "next_update": row.next_update,
        "entry_count": row.entry_count,
        "size": row.size,
        "sha256": row.sha256,
        "trigger": row.trigger,
        "published_by": row.published_by_name,
        "published_at": row.published_at,
    }


def _summary_out(summary: Any) -> dict[str, object]:
    """A decoded certificate (kmsportal.crypto.x509.CertificateSummary) as the previews show it."""
    return {
        "subject": summary.subject,
        "issuer": summary.issuer,
        "not_before": summary.not_before,
        "not_after": summary.not_after,
        "public_key": summary.public_key,
        "signature_algorithm": summary.signature_algorithm,
        "subject_alternative_names": list(summary.subject_alternative_names),
        "key_usage": list(summary.key_usage),
        "extended_key_usage": list(summary.extended_key_usage),
        "is_ca": summary.is_ca,
        "path_length": summary.path_length,
        "crl_distribution_points": list(summary.crl_distribution_points),
        "ca_issuers_urls": list(summary.ca_issuers_urls),
        "ocsp_urls": list(summary.ocsp_urls),
    }


def _latest_delta(ca: CertificateAuthority) -> RevocationList | None:
    return (
        RevocationList.objects.filter(ca=ca, is_delta=True)
        .defer("crl_der")
        .order_by("-crl_number")
        .first()
    )


# --- certificate authorities -----------------------------------------------------------------


@router.get("/cas", response=list[CAOut], summary="List CAs")
def pki_ca_list(request: ApiRequest) -> list[dict[str, object]]:
    """Every CA, roots first, then by name."""
    user = _allowed(request, "pki_ca_list")
    return [_ca_out(ca) for ca in selectors.ca_list(user=user)]


@router.get(
    "/cas/{name}",
    response=CADetailOut,
    summary="A CA with its certificate, chain and URLs",
)
def pki_ca_get(request: ApiRequest, name: str) -> dict[str, object]:
    user = _allowed(request, "pki_ca_get")
    return _ca_detail_out(user, _ca_or_404(user, name))


def _ca_detail_out(user: User, ca: CertificateAuthority) -> dict[str, object]:
    detail = selectors.ca_detail(ca=ca)
    own = selectors.ca_own_certificate(ca=ca)
    points = ca_distribution_points(ca.name)
    return {
        **_ca_out(ca),
        "certificate_pem": ca.certificate_pem,
        "chain_pem": selectors.ca_chain_pem(ca=ca),
        "certificate_id": own.pk if own is not None else None,
        "children": [child.name for child in detail.children],
        "issued_count": detail.issued_count,
        "crl_url": detail.crl_url,
        "delta_crl_url": points.delta_crl,
        "ocsp_url": detail.ocsp_url,
        "ca_issuers_url": detail.ca_issuers_url,
        "revocation_requests": [
            _request_out(asked)
            for asked in (
                selectors.ca_revocation_requests_of(user=user, certificate=own)
                if own is not None
                else []
            )
        ],
    }


@router.post(
    "/cas",
    response={201: CADetailOut},
    summary="Create a root or an intermediate CA",
)
def pki_ca_create(request: ApiRequest, body: CACreateIn) -> Status[dict[str, object]]:
    """No ``parent``: a self-signed root. With ``parent``: an intermediate signed by that CA,
    which must be one the CA page offers (active, unexpired, room in its path length, not
    one of the key distribution's own CAs)."""
    user = _allowed(request, "pki_ca_create")
    with _refused("ca_refused"):
        ca = services.certificate_authority_create(actor=user, **_ca_arguments(user, body))
    return Status(201, _ca_detail_out(user, _ca_or_404(user, ca.name)))


def _ca_arguments(user: User, body: CACreateIn) -> dict[str, Any]:
    """The service's arguments; the parent must be one the CA page offers."""
    parent = None
    if body.parent:
        offered = {name for name, _ in selectors.ca_parent_choices(user=user)}
        if body.parent not in offered:
            raise KMSError(
                f"CA {body.parent!r} cannot sign a new intermediate: it must be an active, "
                "unexpired CA whose path length leaves room for one more CA below it",
                code="parent_not_allowed",
                status=409,
            )
        parent = _ca_or_404(user, body.parent)
    return {
        "name": body.name,
        "subject": body.subject,
        "parent": parent,
        "key_type": body.key_type,
        "days": body.days,
        "path_length": body.path_length,
    }


@router.post(
    "/ca-preview",
    response=CAPreviewOut,
    summary="What creating this CA would make (the confirmation page); changes nothing",
)
def pki_ca_preview(request: ApiRequest, body: CACreateIn) -> dict[str, object]:
    """The same checks as creating it, and the CA certificate it would get, signed by a
    throwaway key: no key is generated and nothing is stored or audited."""
    user = _allowed(request, "pki_ca_preview")
    with _refused("ca_refused"):
        preview = services.certificate_authority_preview(**_ca_arguments(user, body))
    return {
        "name": preview.name,
        "subject": preview.subject,
        "parent": preview.parent.name if preview.parent is not None else None,
        "key_type": str(preview.key_type),
        "days": preview.days,
        "path_length": preview.path_length,
        "certificate": _summary_out(preview.summary),
    }


@router.post(
    "/cas/{name}/disable",
    response=CAOut,
    summary="Disable a CA (it issues nothing more)",
)
def pki_ca_disable(request: ApiRequest, name: str, body: CADisableIn) -> dict[str, object]:
    user = _allowed(request, "pki_ca_disable")
    ca = _ca_or_404(user, name)
    with _refused("ca_refused"):
        services.certificate_authority_disable(actor=user, ca=ca, reason=body.reason)
    return _ca_out(_ca_or_404(user, name))


# --- CA revocation (two-person rule) ----------------------------------------------------------


@router.post(
    "/cas/{name}/revocation-requests",
    response={201: CARevocationRequestOut},
    summary="Ask for a CA's revocation (a second person approves)",
)
def pki_ca_revocation_request(
    request: ApiRequest, name: str, body: CARevocationRequestIn
) -> Status[dict[str, object]]:
    """Revoking an intermediate CA revokes it, every CA below it and everything they issued.
    Nothing is revoked now: a different person who may revoke certificates approves the
    request (``POST /api/v1/admin/approvals/ca-revocation/{id}/approve``) before it expires."""
    user = _allowed(request, "pki_ca_revocation_request")
    ca = _ca_or_404(user, name)
    own = selectors.ca_own_certificate(ca=ca)
    if own is None:
        raise KMSError(
            f"CA {ca.name} is a root: it has no issuer whose CRL could list it. Disable it, "
            "and remove it from the relying parties' trust stores",
            code="ca_revocation_refused",
            status=409,
        )
    with _refused("ca_revocation_refused"):
        asked = approvals.ca_revocation_request(
            actor=user,
            certificate=own,
            reason=body.reason,
            invalidity_date=body.invalidity_date,
            comment=body.comment,
        )
    return Status(201, _request_out(asked))


@router.get(
    "/ca-revocations",
    response=list[CARevocationPendingOut],
    summary="Pending CA revocation requests",
)
def pki_ca_revocation_list(request: ApiRequest) -> list[dict[str, object]]:
    """Oldest first, each with what approving it would revoke as of now."""
    user = _allowed(request, "pki_ca_revocation_list")
    return [
        {
            **_request_out(row.request),
            "cas_below": row.cas_below,
            "certificates_below": row.certificates_below,
            "problem": row.problem,
        }
        for row in selectors.ca_revocation_requests_pending(user=user)
    ]


@router.get(
    "/ca-revocations/{int:request_id}",
    response=CARevocationRequestOut,
    summary="A CA revocation request",
)
def pki_ca_revocation_get(request: ApiRequest, request_id: PathId) -> dict[str, object]:
    user = _allowed(request, "pki_ca_revocation_get")
    return _request_out(_request_or_404(user, request_id))


# --- CRLs ------------------------------------------------------------------------------------


@router.get(
    "/cas/{name}/crl",
    response=CRLStatusOut,
    summary="The CA's current CRL, checked, with its delta and recent history",
)
def pki_crl_get(request: ApiRequest, name: str) -> dict[str, object]:
    """What the CRL page shows: the newest complete CRL (signature checked against the
    stored bytes), its verdict (ok, due, expired, missing), the newest delta CRL and the
    last CRLs published. The CRLs themselves are at ``crl_url`` and ``delta_crl_url``."""
    user = _allowed(request, "pki_crl_get")
    ca = _ca_or_404(user, name)
    health = selectors.crl_health(ca=ca)
    points = ca_distribution_points(ca.name)
    return {
        "ca": ca.name,
        "state": health.state,
        "signature_ok": health.signature_ok,
        "problem": health.problem,
        "latest": _crl_out(health.latest),
        "latest_delta": _crl_out(_latest_delta(ca)),
        "history": [_crl_out(row) for row in health.history],
        "crl_url": health.crl_url,
        "delta_crl_url": points.delta_crl,
        "pem_url": health.pem_url,
    }


@router.post(
    "/cas/{name}/crl",
    response={201: CRLPublishOut},
    summary="Publish the CA's CRL now (a complete CRL and its delta)",
)
def pki_crl_publish(request: ApiRequest, name: str) -> Status[dict[str, object]]:
    """Audited as ``crl.published`` with trigger ``manual``, as "publish now" on the CRL page."""
    user = _allowed(request, "pki_crl_publish")
    ca = _ca_or_404(user, name)
    with _refused("crl_refused"):
        row = services.crl_publish(actor=user, ca=ca, trigger=CRLTrigger.MANUAL)
    assert row is not None  # a forced publication always publishes
    return Status(201, {"ca": ca.name, "crl": _crl_out(row), "delta": _crl_out(_latest_delta(ca))})


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
        "items": [_certificate_out(c) for c in page.certificates],
        "next_cursor": page.next_cursor,
    }


@router.get(
    "/certificates/{int:certificate_id}",
    response=CertificateDetailOut,
    summary="A certificate, decoded, with its PEM",
)
def pki_certificate_get(request: ApiRequest, certificate_id: PathId) -> dict[str, object]:
    user = _allowed(request, "pki_certificate_get")
    return _certificate_detail_out(_certificate_or_404(user, certificate_id))


def _certificate_detail_out(certificate: Certificate) -> dict[str, object]:
    detail = selectors.certificate_detail(certificate=certificate)
    certified = selectors.ca_of_certificate(certificate=certificate)
    summary = detail.summary
    return {
        **_certificate_out(certificate),
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
    certificate = _certificate_or_404(user, certificate_id)
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
    return _ca_or_404(user, name)


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
    with _refused("issuance_refused", status=422):
        certificate = services.certificate_issue_from_csr(
            actor=user,
            ca=ca,
            csr_pem_or_der=body.csr_pem.encode("utf-8"),
            profile=_profile(body.profile),
            subject_override=body.subject,
            sans_override=body.sans,
            days=body.days,
        )
    return Status(201, _certificate_detail_out(_certificate_or_404(user, certificate.pk)))


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
    with _refused("issuance_refused", status=422):
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
        "certificate": _summary_out(preview.summary),
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
    with _refused("issuance_refused", status=422):
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
            "certificate": _certificate_out(credential.certificate),
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
    certificate = _certificate_or_404(user, certificate_id)
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
    with _refused("revocation_refused"):
        revoked = services.certificate_revoke(
            actor=user,
            certificate=certificate,
            reason=body.reason,
            invalidity_date=body.invalidity_date,
        )
    return _certificate_out(revoked)


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
    certificate = _certificate_or_404(user, certificate_id)
    with _refused("revocation_refused"):
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
    certificate = _certificate_or_404(user, certificate_id)
    with _refused("release_refused"):
        released = services.certificate_release(actor=user, certificate=certificate)
    return _certificate_out(released)


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
    with _refused("validation_refused", status=422):
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
