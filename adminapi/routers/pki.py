"""PKI endpoints: certificate authorities, CA revocation requests and CRLs, under
``/api/v1/admin/pki/`` (certificates: adminapi.routers.certificates).

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

from typing import Any

from django.contrib.auth.models import User
from ninja import Router, Status

from kmsportal.errors import KMSError
from pki import approvals, selectors, services
from pki.distribution import ca_distribution_points
from pki.models import (
    CARevocationRequest,
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
    CRLPublishOut,
    CRLStatusOut,
)
from .pki_shared import (
    MANAGE_CA,
    PUBLISH_CRL,
    REVOKE,
    VIEW_CA,
    VIEW_CA_REVOCATION_REQUEST,
    ca_or_404,
    not_found,
    refused,
    summary_out,
)

router = Router(tags=["PKI"])

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
}


def _allowed(request: ApiRequest, operation: str) -> User:
    """The token's user, once its scope and roles allow ``operation`` (its rule in RULES)."""
    rule = RULES[operation]
    return require(request, *rule.permissions, write=rule.write)


def _request_or_404(user: User, pk: int) -> CARevocationRequest:
    asked = selectors.ca_revocation_request_get(user=user, pk=pk)
    if asked is None:
        raise not_found("CA revocation request")
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
    return _ca_detail_out(user, ca_or_404(user, name))


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
    with refused("ca_refused"):
        ca = services.certificate_authority_create(actor=user, **_ca_arguments(user, body))
    return Status(201, _ca_detail_out(user, ca_or_404(user, ca.name)))


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
        parent = ca_or_404(user, body.parent)
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
    with refused("ca_refused"):
        preview = services.certificate_authority_preview(**_ca_arguments(user, body))
    return {
        "name": preview.name,
        "subject": preview.subject,
        "parent": preview.parent.name if preview.parent is not None else None,
        "key_type": str(preview.key_type),
        "days": preview.days,
        "path_length": preview.path_length,
        "certificate": summary_out(preview.summary),
    }


@router.post(
    "/cas/{name}/disable",
    response=CAOut,
    summary="Disable a CA (it issues nothing more)",
)
def pki_ca_disable(request: ApiRequest, name: str, body: CADisableIn) -> dict[str, object]:
    user = _allowed(request, "pki_ca_disable")
    ca = ca_or_404(user, name)
    with refused("ca_refused"):
        services.certificate_authority_disable(actor=user, ca=ca, reason=body.reason)
    return _ca_out(ca_or_404(user, name))


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
    ca = ca_or_404(user, name)
    own = selectors.ca_own_certificate(ca=ca)
    if own is None:
        raise KMSError(
            f"CA {ca.name} is a root: it has no issuer whose CRL could list it. Disable it, "
            "and remove it from the relying parties' trust stores",
            code="ca_revocation_refused",
            status=409,
        )
    with refused("ca_revocation_refused"):
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
    ca = ca_or_404(user, name)
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
    ca = ca_or_404(user, name)
    with refused("crl_refused"):
        row = services.crl_publish(actor=user, ca=ca, trigger=CRLTrigger.MANUAL)
    assert row is not None  # a forced publication always publishes
    return Status(201, {"ca": ca.name, "crl": _crl_out(row), "delta": _crl_out(_latest_delta(ca))})
