"""Two-person rule for making key material leave: grants, export policies, re-enrollment.

No single person can cause key material to leave the KMS. A client fetches a key only under
a live grant, with a certificate it enrolled with a one-time token, so each of these is a
door the rule guards (docs/separation-of-duties.md):

- **granting** a key to a client (:func:`grant_request_create`) follows the key's export
  policy: ``never`` refuses, ``two-person`` (the default) makes a :class:`GrantRequest` a
  second key custodian approves on a confirmation page, ``single`` (keys marked
  low-sensitivity) grants at once;
- **weakening** a key's export policy (never → two-person → single) is itself a request;
  tightening applies at once, and tightening to ``never`` withdraws the key's live grants;
- **re-enrolling** a client that holds live fetchable grants (a new enrollment token:
  whoever holds it enrolls a key pair of their own and fetches those keys) is a request;
  the approver receives the token, once. A client without such grants gets a token at once.

Every decision goes through kmsportal.two_person: the request row is locked first, so
approvers racing take turns and the second finds it decided; the approver is never the
requester and must be eligible (accounts.approvers: own password, own authenticator,
cooling-off). The granting itself is vault.clients' :func:`grant_create` /
:func:`client_enrollment_token_renew`, called in the approval's transaction. Every service
is one transaction with its audit event.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from accounts.approvers import approver_check
from audit.services import audit_event_record
from kmsportal.actors import actor_name
from kmsportal.crypto.operations import grant_operations
from kmsportal.two_person import (
    TwoPersonError,
    TwoPersonStatus,
    two_person_check_not_requester,
    two_person_check_unexpired,
    two_person_decide,
    two_person_lapse,
    two_person_locked,
    two_person_reason,
    two_person_reject,
    two_person_withdraw,
)

from .clients import (
    client_enrollment_token_renew,
    client_enrollment_token_void,
    grant_checks,
    grant_create,
)
from .events import VaultAction
from .models import (
    Client,
    ClientState,
    ExportPolicy,
    ExportPolicyRequest,
    Grant,
    GrantRequest,
    GrantVersions,
    ReenrollmentRequest,
    SymmetricKey,
)
from .refusals import DistributionError

REQUEST_TTL = timedelta(hours=72)
# What deciding each kind needs (the approver's role must hold it, past the cooling-off).
GRANT_PERMISSION = "vault.add_grant"
EXPORT_POLICY_PERMISSION = "vault.export_policy_symmetrickey"
REENROLLMENT_PERMISSION = "vault.change_client"

Pending = TwoPersonStatus.PENDING


def _record(
    action: VaultAction, *, actor: User | None, target: Any, label: str, **details: Any
) -> None:
    audit_event_record(
        action=action, actor=actor, target=target, target_label=label, details=details
    )


def _create(model: type[models.Model], *, actor: User, reason: str, **fields: Any) -> Any:
    now = timezone.now()
    try:
        with transaction.atomic():
            return model._default_manager.create(
                reason=two_person_reason(reason),
                requested_by=actor,
                requested_by_name=actor_name(actor),
                requested_at=now,
                expires_at=now + REQUEST_TTL,
                **fields,
            )
    except IntegrityError:
        raise TwoPersonError(
            "the same request is already waiting for approval; approve, reject or withdraw that one"
        ) from None


_EXPIRED = {
    "GrantRequest": VaultAction.GRANT_REQUEST_EXPIRED,
    "ExportPolicyRequest": VaultAction.KEY_EXPORT_POLICY_EXPIRED,
    "ReenrollmentRequest": VaultAction.CLIENT_REENROLLMENT_EXPIRED,
}


def _lapse(model: type, **where: Any) -> None:
    """Pending requests past their time become ``expired`` (visibly, audited, not deleted)."""

    def record(request: Any) -> None:
        target = request.client if model is ReenrollmentRequest else request.key
        _record(
            _EXPIRED[model.__name__],
            actor=None,
            target=target,
            label=target.name,
            request=request.pk,
            requested_by=request.requested_by_name,
            expired_at=request.expires_at.isoformat(),
        )

    two_person_lapse(
        model, record=record, related=("client", "key") if model is GrantRequest else (), **where
    )


@dataclass(frozen=True)
class _Closing:
    """Rejecting and withdrawing a request of one kind: the same two steps for every kind
    (kmsportal.two_person decides, then the kind's event is recorded in the transaction)."""

    model: type
    related: tuple[str, ...]
    target: Callable[[Any], Any]  # what the request is about (a key or a client)
    rejected: VaultAction
    withdrawn: VaultAction
    details: Callable[[Any], dict[str, Any]] = lambda request: {}

    def reject(self, *, actor: User, request: Any, comment: str = "") -> Any:
        """Another custodian turns the request down (also once expired)."""
        with transaction.atomic():
            request = two_person_reject(
                self.model, request.pk, actor=actor, comment=comment, related=self.related
            )
            self._record(self.rejected, actor, request, comment=request.decision_comment)
        return request

    def withdraw(self, *, actor: User, request: Any) -> Any:
        """The requester takes the request back."""
        with transaction.atomic():
            request = two_person_withdraw(self.model, request.pk, actor=actor, related=self.related)
            self._record(self.withdrawn, actor, request)
        return request

    def _record(self, action: VaultAction, actor: User, request: Any, **more: Any) -> None:
        target = self.target(request)
        _record(
            action,
            actor=actor,
            target=target,
            label=target.name,
            request=request.pk,
            **self.details(request),
            **more,
        )


def live_fetch_grants(client: Client) -> list[Grant]:
    """The client's live grants that release key material (fetch)."""
    now = timezone.now()
    grants = client.grants.filter(withdrawn_at__isnull=True).select_related("key")
    return [
        g
        for g in grants
        if (g.expires_at is None or g.expires_at > now)
        and g.releases_key_material
        and not g.key.is_destroyed
    ]


# --- grants -------------------------------------------------------------------------------


@dataclass(frozen=True)
class GrantOutcome:
    grant: Grant | None  # made now (export policy `single`)
    request: GrantRequest | None  # waiting for a second custodian


@transaction.atomic
def grant_request_create(
    *,
    actor: User,
    client: Client,
    key: SymmetricKey,
    reason: str,
    versions: str = GrantVersions.PRIMARY,
    expires_at: datetime | None = None,
    operations: str | list[str] = "fetch",
) -> GrantOutcome:
    """Ask for ``client`` to be allowed to fetch ``key``, as the key's export policy says:
    refused for ``never``; a request a second custodian approves for ``two-person``; the
    grant at once for ``single``. A reason is always required. The grant's own checks
    (client not revoked, key not destroyed, no live grant yet) apply at request time too."""
    key = SymmetricKey.objects.select_for_update().get(pk=key.pk)
    cleaned = two_person_reason(reason)
    try:
        operations = grant_operations(key.key_type, operations)
    except ValueError as exc:
        raise DistributionError(str(exc)) from None
    if "fetch" not in operations.split(","):
        # Operations that keep the key inside the KMS release no key material: a one-person
        # action whatever the export policy (issue 17). grant_create makes its own checks.
        grant = grant_create(
            actor=actor,
            client=client,
            key=key,
            versions=versions,
            expires_at=expires_at,
            operations=operations,
        )
        return GrantOutcome(grant=grant, request=None)
    if key.export_policy == ExportPolicy.NEVER:
        raise TwoPersonError(
            f"key {key.name}'s export policy is 'never': no client may fetch it. Changing "
            "the policy is itself a two-person request."
        )
    grant_checks(client=client, key=key, versions=versions, expires_at=expires_at)
    if key.export_policy == ExportPolicy.SINGLE:
        grant = grant_create(
            actor=actor,
            client=client,
            key=key,
            versions=versions,
            expires_at=expires_at,
            operations=operations,
        )
        return GrantOutcome(grant=grant, request=None)
    _lapse(GrantRequest, client=client, key=key)
    request = _create(
        GrantRequest,
        actor=actor,
        reason=cleaned,
        client=client,
        key=key,
        versions=versions,
        operations=operations,
        grant_expires_at=expires_at,
    )
    _record(
        VaultAction.GRANT_REQUESTED,
        actor=actor,
        target=key,
        label=key.name,
        request=request.pk,
        client=client.name,
        key=key.name,
        versions=versions,
        operations=operations,
        expires_at=expires_at.isoformat() if expires_at else None,
        reason=request.reason,
        request_expires_at=request.expires_at.isoformat(),
    )
    return GrantOutcome(grant=None, request=request)


@transaction.atomic
def grant_request_approve(*, actor: User, request: GrantRequest) -> Grant:
    """Second custodian: approve; the grant is made now (vault.clients.grant_create).

    Refused (nothing changes) for the requester, an ineligible approver, an expired request,
    and when the key's policy became ``never`` meanwhile.

    An enrolled client's unused enrollment token is voided in the same transaction (and the
    confirmation page says so beforehand): whoever holds it could otherwise re-enroll the
    client with a key of their own and fetch what the approver granted to the certificate
    they saw. Getting a new token afterwards is a re-enrollment request, two-person again.
    An unenrolled client keeps its token (the only way to enroll; the page names who holds
    it)."""
    request = two_person_locked(GrantRequest, request.pk, related=("client", "key"))
    two_person_check_not_requester(request, actor)
    approver_check(user=actor, permission=GRANT_PERMISSION)
    two_person_check_unexpired(request)
    key = SymmetricKey.objects.select_for_update().get(pk=request.key_id)
    if key.export_policy == ExportPolicy.NEVER:
        raise TwoPersonError(f"key {key.name}'s export policy became 'never'; reject this")
    client = Client.objects.select_for_update().get(pk=request.client_id)
    request.client = client
    if client.certificate_id is not None:
        client_enrollment_token_void(
            actor=actor, client=client, why=f"grant request {request.pk} approved"
        )
    grant = grant_create(
        actor=actor,
        client=request.client,
        key=key,
        versions=request.versions,
        expires_at=request.grant_expires_at,
        operations=request.operations,
    )
    request.grant = grant
    request.save(update_fields=["grant"])
    two_person_decide(request, actor=actor, status=TwoPersonStatus.APPROVED)
    _record(
        VaultAction.GRANT_REQUEST_APPROVED,
        actor=actor,
        target=key,
        label=key.name,
        request=request.pk,
        client=request.client.name,
        key=key.name,
        requested_by=request.requested_by_name,
    )
    return grant


_GRANTS = _Closing(
    GrantRequest,
    related=("client", "key"),
    target=lambda request: request.key,
    rejected=VaultAction.GRANT_REQUEST_REJECTED,
    withdrawn=VaultAction.GRANT_REQUEST_WITHDRAWN,
    details=lambda request: {"client": request.client.name},
)
grant_request_reject = _GRANTS.reject
grant_request_withdraw = _GRANTS.withdraw


# --- export policy ------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyOutcome:
    key: SymmetricKey
    request: ExportPolicyRequest | None  # a weaker policy waits for a second custodian
    grants_withdrawn: int = 0


def _policy_apply(
    *, actor: User, key: SymmetricKey, policy: str, reason: str, **details: Any
) -> int:
    previous = key.export_policy
    key.export_policy = policy
    key.save(update_fields=["export_policy", "updated_at"])
    withdrawn = 0
    if policy == ExportPolicy.NEVER:
        # No client may fetch it any more: its live grants end in the same transaction.
        now = timezone.now()
        withdrawn = Grant.objects.filter(key=key, withdrawn_at__isnull=True).update(
            withdrawn_at=now, withdrawn_by_name=actor_name(actor)
        )
    _record(
        VaultAction.KEY_EXPORT_POLICY_CHANGED,
        actor=actor,
        target=key,
        label=key.name,
        key=key.name,
        **{"from": previous, "to": policy},
        reason=reason,
        grants_withdrawn=withdrawn,
        **details,
    )
    return withdrawn


@transaction.atomic
def export_policy_set(*, actor: User, key: SymmetricKey, policy: str, reason: str) -> PolicyOutcome:
    """Change ``key``'s export policy: a stricter one at once (``never`` also withdraws the
    key's live grants); a weaker one becomes a request a second custodian approves."""
    key = SymmetricKey.objects.select_for_update().get(pk=key.pk)
    cleaned = two_person_reason(reason)
    try:
        policy = ExportPolicy(policy).value
    except ValueError:
        raise TwoPersonError(f"unknown export policy {policy!r}") from None
    if policy == key.export_policy:
        raise TwoPersonError(f"key {key.name}'s export policy is already '{policy}'")
    if ExportPolicy.strictness(policy) > ExportPolicy.strictness(key.export_policy):
        withdrawn = _policy_apply(actor=actor, key=key, policy=policy, reason=cleaned)
        return PolicyOutcome(key=key, request=None, grants_withdrawn=withdrawn)
    _lapse(ExportPolicyRequest, key=key)
    request = _create(
        ExportPolicyRequest,
        actor=actor,
        reason=cleaned,
        key=key,
        from_policy=key.export_policy,
        to_policy=policy,
    )
    _record(
        VaultAction.KEY_EXPORT_POLICY_REQUESTED,
        actor=actor,
        target=key,
        label=key.name,
        request=request.pk,
        key=key.name,
        **{"from": request.from_policy, "to": request.to_policy},
        reason=request.reason,
        request_expires_at=request.expires_at.isoformat(),
    )
    return PolicyOutcome(key=key, request=request)


@transaction.atomic
def export_policy_request_approve(*, actor: User, request: ExportPolicyRequest) -> SymmetricKey:
    """Second custodian: the weaker policy applies now (if the key's policy is still the one
    the request started from; otherwise refused)."""
    request = two_person_locked(ExportPolicyRequest, request.pk, related=("key",))
    two_person_check_not_requester(request, actor)
    approver_check(user=actor, permission=EXPORT_POLICY_PERMISSION)
    two_person_check_unexpired(request)
    key = SymmetricKey.objects.select_for_update().get(pk=request.key_id)
    if key.export_policy != request.from_policy:
        raise TwoPersonError(
            f"key {key.name}'s policy changed meanwhile (now '{key.export_policy}'); reject this"
        )
    two_person_decide(request, actor=actor, status=TwoPersonStatus.APPROVED)
    _policy_apply(
        actor=actor,
        key=key,
        policy=request.to_policy,
        reason=request.reason,
        request=request.pk,
        requested_by=request.requested_by_name,
    )
    return key


_EXPORT_POLICIES = _Closing(
    ExportPolicyRequest,
    related=("key",),
    target=lambda request: request.key,
    rejected=VaultAction.KEY_EXPORT_POLICY_REJECTED,
    withdrawn=VaultAction.KEY_EXPORT_POLICY_WITHDRAWN,
)
export_policy_request_reject = _EXPORT_POLICIES.reject
export_policy_request_withdraw = _EXPORT_POLICIES.withdraw


# --- re-enrollment ------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenOutcome:
    token: str | None  # issued now (the client holds no fetchable grant)
    request: ReenrollmentRequest | None  # waiting for a second custodian


@transaction.atomic
def client_reenrollment_request(*, actor: User, client: Client, reason: str) -> TokenOutcome:
    """A new enrollment token for ``client``: at once when it holds no live fetchable grant,
    else a request a second custodian approves (the approver receives the token)."""
    client = Client.objects.select_for_update().get(pk=client.pk)
    cleaned = two_person_reason(reason)
    if client.state == ClientState.REVOKED:
        raise DistributionError(f"client {client.name} is revoked")
    grants = live_fetch_grants(client)
    if not grants:
        return TokenOutcome(
            token=client_enrollment_token_renew(actor=actor, client=client), request=None
        )
    _lapse(ReenrollmentRequest, client=client)
    request = _create(ReenrollmentRequest, actor=actor, reason=cleaned, client=client)
    _record(
        VaultAction.CLIENT_REENROLLMENT_REQUESTED,
        actor=actor,
        target=client,
        label=client.name,
        request=request.pk,
        client=client.name,
        keys=sorted(g.key.name for g in grants),
        reason=request.reason,
        request_expires_at=request.expires_at.isoformat(),
    )
    return TokenOutcome(token=None, request=request)


@transaction.atomic
def client_reenrollment_approve(*, actor: User, request: ReenrollmentRequest) -> str:
    """Second custodian: approve; returns the new enrollment token (show it once)."""
    request = two_person_locked(ReenrollmentRequest, request.pk, related=("client",))
    two_person_check_not_requester(request, actor)
    approver_check(user=actor, permission=REENROLLMENT_PERMISSION)
    two_person_check_unexpired(request)
    token = client_enrollment_token_renew(actor=actor, client=request.client)
    two_person_decide(request, actor=actor, status=TwoPersonStatus.APPROVED)
    _record(
        VaultAction.CLIENT_REENROLLMENT_APPROVED,
        actor=actor,
        target=request.client,
        label=request.client.name,
        request=request.pk,
        requested_by=request.requested_by_name,
    )
    return token


_REENROLLMENTS = _Closing(
    ReenrollmentRequest,
    related=("client",),
    target=lambda request: request.client,
    rejected=VaultAction.CLIENT_REENROLLMENT_REJECTED,
    withdrawn=VaultAction.CLIENT_REENROLLMENT_WITHDRAWN,
)
client_reenrollment_reject = _REENROLLMENTS.reject
client_reenrollment_withdraw = _REENROLLMENTS.withdraw
