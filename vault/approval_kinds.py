"""The vault's two-person kinds, as the shared inbox and confirmation page show them.

Each confirmation lists exactly what approving changes and who is affected: for a grant the
key, the fingerprints of the versions the client could fetch, the client and its
certificate; for a destruction the versions that would be erased and the clients and grants
that lose the key; for an export policy the old and new policy and the grants it allows; for
a re-enrollment the client and the keys its new holder could fetch.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from kmsportal.two_person import Confirmation, Decision, TwoPersonKind, two_person_kind_register

from . import approvals, services
from .lifecycle import VersionState
from .models import (
    Client,
    DestructionRequest,
    ExportPolicy,
    ExportPolicyRequest,
    GrantRequest,
    GrantVersions,
    KeyVersion,
    ReenrollmentRequest,
    SymmetricKey,
)


def _when(moment: Any) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "never"


def _version_line(version: KeyVersion) -> str:
    primary = ", primary" if version.is_primary else ""
    return (
        f"v{version.number}: fingerprint {version.fingerprint} "
        f"({version.get_state_display()}{primary})"
    )


def _fetchable_versions(key: SymmetricKey, versions: str) -> list[KeyVersion]:
    """The versions a grant of ``versions`` would let a client fetch, as of now."""
    usable = key.versions.filter(
        state__in=[VersionState.ACTIVE, VersionState.DEACTIVATED],
        number__gte=key.min_decryption_version,
    ).order_by("-number")
    if versions == GrantVersions.PRIMARY:
        usable = usable.filter(is_primary=True)
    return list(usable)


def _client_facts(client: Client) -> list[tuple[str, str]]:
    facts = [("Client", f"{client.name} ({client.get_state_display()})")]
    if client.description:
        facts.append(("Client description", client.description))
    certificate = client.certificate
    issued_to = client.enrollment_token_issued_to_name or "someone (not recorded)"
    issued_at = _when(client.enrollment_token_issued_at)
    if certificate is None:
        facts.append(
            (
                "Client certificate",
                "not enrolled yet: whoever holds its enrollment token (issued to "
                f"{client.enrollment_token_issued_to_name or client.created_by_name}"
                + (f" at {issued_at}" if client.enrollment_token_issued_at else "")
                + ") can enroll it and then fetch the key",
            )
        )
    else:
        facts += [
            ("Certificate serial", certificate.serial_number_display),
            ("Certificate subject", certificate.subject),
            ("Certificate SHA-256", certificate.fingerprint_sha256),
            (
                "Certificate validity",
                f"{_when(certificate.not_before)} to {_when(certificate.not_after)} "
                f"({certificate.get_status_display()})",
            ),
            (
                "Enrolled",
                _when(client.enrolled_at)
                + (
                    f", with a token issued to {client.enrollment_token_issued_to_name}"
                    if client.enrollment_token_issued_to_name and not client.has_unused_token
                    else ""
                ),
            ),
        ]
        if client.has_unused_token:
            facts.append(
                (
                    "Unused enrollment token",
                    f"issued to {issued_to} at {issued_at}, valid until "
                    f"{_when(client.enrollment_token_expires_at)}. Whoever holds it could "
                    "re-enroll this client with a key of their own: approving voids it",
                )
            )
    held = [g.key.name for g in approvals.live_fetch_grants(client)]
    facts.append(("Keys it may fetch already", ", ".join(sorted(held)) or "none"))
    return facts


# --- grants -------------------------------------------------------------------------------


def _grant_confirmation(request: GrantRequest) -> Confirmation:
    key = request.key
    versions = _fetchable_versions(key, request.versions)
    return Confirmation(
        title=f"Grant key {key.name} to client {request.client.name}",
        changes=[
            ("Key", f"{key.name} ({key.get_state_display()})"),
            ("Export policy", key.get_export_policy_display()),
            ("Versions", request.get_versions_display()),
            *[("Version it could fetch now", _version_line(v)) for v in versions],
            ("Grant expires", _when(request.grant_expires_at)),
        ],
        affected=_client_facts(request.client),
        warning=(
            "Approving lets this client fetch the key material itself. Approve only if you "
            "know who operates the client and why it needs this key."
        ),
    )


def _grant_approve(*, actor: Any, request: GrantRequest) -> Decision:
    had_token = request.client.certificate_id is not None and request.client.has_unused_token
    grant = approvals.grant_request_approve(actor=actor, request=request)
    message = f"Approved: {grant.client.name} may now fetch {grant.key.name}."
    if had_token:
        message += (
            " Its unused enrollment token was voided; a new one now needs a re-enrollment "
            "request, approved by a second custodian."
        )
    return Decision(message)


# --- export policy ------------------------------------------------------------------------


def _policy_confirmation(request: ExportPolicyRequest) -> Confirmation:
    key = request.key
    grants = list(key.grants.filter(withdrawn_at__isnull=True).select_related("client"))
    return Confirmation(
        title=f"Weaken the export policy of key {key.name}",
        changes=[
            ("Key", f"{key.name} ({key.get_state_display()})"),
            ("Export policy now", ExportPolicy(request.from_policy).label),
            ("Export policy after approval", ExportPolicy(request.to_policy).label),
            *[("Version", _version_line(v)) for v in key.versions.order_by("-number")],
        ],
        affected=[
            (
                "Who could then grant it",
                "any single key custodian, alone"
                if request.to_policy == ExportPolicy.SINGLE
                else "a key custodian, with a second one approving",
            ),
            (
                "Clients holding a grant now",
                ", ".join(sorted(g.client.name for g in grants)) or "none",
            ),
        ],
        warning="A weaker policy lets fewer people decide who receives this key's material.",
    )


def _policy_approve(*, actor: Any, request: ExportPolicyRequest) -> Decision:
    key = approvals.export_policy_request_approve(actor=actor, request=request)
    return Decision(f"Approved: the export policy of {key.name} is now '{key.export_policy}'.")


# --- re-enrollment ------------------------------------------------------------------------


def _reenrollment_confirmation(request: ReenrollmentRequest) -> Confirmation:
    client = request.client
    return Confirmation(
        title=f"New enrollment token for client {client.name}",
        changes=[
            (
                "What happens",
                "a new one-time enrollment token is issued and shown to you, once; whoever "
                "enrolls with it becomes this client and can fetch every key it is granted",
            ),
        ],
        affected=_client_facts(client),
        warning="Hand the token only to the person who operates this client service.",
    )


def _reenrollment_approve(*, actor: Any, request: ReenrollmentRequest) -> Decision:
    token = approvals.client_reenrollment_approve(actor=actor, request=request)
    return Decision(
        f"Approved: a new enrollment token for {request.client.name} is below. It works once, "
        "for 24 hours, and is shown only now.",
        once={"Enrollment token": token},
    )


# --- destruction --------------------------------------------------------------------------


def _destruction_confirmation(request: DestructionRequest) -> Confirmation:
    key = request.key
    grants = list(key.grants.filter(withdrawn_at__isnull=True).select_related("client"))
    now = timezone.now()
    clients = sorted(
        {
            f"{g.client.name} ({g.get_versions_display()}"
            + (f", until {_when(g.expires_at)}" if g.expires_at else "")
            + (", expired" if g.expires_at and g.expires_at <= now else "")
            + ")"
            for g in grants
        }
    )
    return Confirmation(
        title=f"Destroy key {key.name}",
        changes=[
            ("Key", f"{key.name} ({key.get_state_display()})"),
            (
                "At once",
                "the key becomes unusable: no encryption, no decryption, no delivery",
            ),
            (
                "After the waiting period",
                f"{request.waiting_days} days after approval its material is erased for good "
                "(cancelable until then); metadata and the audit trail stay",
            ),
            *[
                ("Version erased", _version_line(v))
                for v in key.versions.order_by("-number")
                if not v.is_destroyed
            ],
        ],
        affected=[
            ("Clients and grants that lose the key", "; ".join(clients) or "none"),
            ("Clients that received it", str(key.deliveries.values("client").distinct().count())),
        ],
        warning="Data still encrypted under this key cannot be decrypted once it is erased.",
    )


def _destruction_approve(*, actor: Any, request: DestructionRequest) -> Decision:
    key = services.destruction_request_approve(actor=actor, request=request)
    return Decision(
        f"Approved: {key.name} is unusable now and will be destroyed after "
        f"{key.destroy_after:%Y-%m-%d %H:%M} UTC unless cancelled."
    )


def _destruction_reject(*, actor: Any, request: DestructionRequest, comment: str = "") -> Any:
    if request.requested_by_id == actor.pk:
        raise services.VaultError("you asked for this: withdraw it instead of rejecting it")
    return services.destruction_request_reject(actor=actor, request=request)


def _destruction_withdraw(*, actor: Any, request: DestructionRequest) -> Any:
    if request.requested_by_id != actor.pk:
        raise services.VaultError(
            f"only {request.requested_by_name}, who asked for it, can withdraw this request"
        )
    return services.destruction_request_reject(actor=actor, request=request)


def register() -> None:
    """Called by VaultConfig.ready()."""
    for kind in (
        TwoPersonKind(
            slug="grant",
            label="Key grant",
            model=GrantRequest,
            permission=approvals.GRANT_PERMISSION,
            visible="vault.view_grantrequest",
            summary=lambda r: f"grant {r.key.name} to client {r.client.name}",
            confirmation=_grant_confirmation,
            approve=_grant_approve,
            reject=approvals.grant_request_reject,
            withdraw=approvals.grant_request_withdraw,
            related=("client", "key", "client__certificate"),
        ),
        TwoPersonKind(
            slug="export-policy",
            label="Key export policy",
            model=ExportPolicyRequest,
            permission=approvals.EXPORT_POLICY_PERMISSION,
            visible="vault.view_exportpolicyrequest",
            summary=lambda r: f"{r.key.name}: export policy {r.from_policy} → {r.to_policy}",
            confirmation=_policy_confirmation,
            approve=_policy_approve,
            reject=approvals.export_policy_request_reject,
            withdraw=approvals.export_policy_request_withdraw,
            related=("key",),
        ),
        TwoPersonKind(
            slug="reenrollment",
            label="Client re-enrollment",
            model=ReenrollmentRequest,
            permission=approvals.REENROLLMENT_PERMISSION,
            visible="vault.view_reenrollmentrequest",
            summary=lambda r: f"new enrollment token for client {r.client.name}",
            confirmation=_reenrollment_confirmation,
            approve=_reenrollment_approve,
            reject=approvals.client_reenrollment_reject,
            withdraw=approvals.client_reenrollment_withdraw,
            related=("client", "client__certificate"),
        ),
        TwoPersonKind(
            slug="destruction",
            label="Key destruction",
            model=DestructionRequest,
            permission="vault.destroy_symmetrickey",
            visible="vault.view_destructionrequest",
            summary=lambda r: f"destroy key {r.key.name} after {r.waiting_days} days",
            confirmation=_destruction_confirmation,
            approve=_destruction_approve,
            reject=_destruction_reject,
            withdraw=_destruction_withdraw,
            related=("key",),
        ),
    ):
        two_person_kind_register(kind)
