"""The two-person rule, built once: one person asks with a reason, a different one decides.

Every two-person flow (key destruction, CA revocation, granting a fetchable key, weakening a
key's export policy, re-enrolling a client that holds grants, granting a privileged role)
keeps a request row with who asked, why and when, until when it may be approved, and who
decided. What is common lives here once:

- :class:`TwoPersonRequest` (the columns and the expiry rule) and :class:`TwoPersonChange`
  (plus one status set, a required reason and the decider's comment) for the models;
- :func:`two_person_locked`, :func:`two_person_decide`, :func:`two_person_reason` for the
  services: lock the row first (so two approvers racing take turns and the second finds the
  request decided), refuse what is not pending, one decision per request;
- the registry of :class:`TwoPersonKind`: per kind, the confirmation page's facts (exactly
  what changes and who is affected) and its approve/reject/withdraw services. The dashboard
  inbox and the confirmation pages (accounts.approval_views) are the same for every kind;
- :func:`pending_summary`, the inbox counts.

Who may approve (a different person, holding the kind's permission, past the cooling-off,
with a password and second factor of their own) is checked by the services through
accounts.approvers; this module stays below accounts and knows no role.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models
from django.db.models import Count, Q
from django.utils import timezone

from kmsportal.crypto.errors import KMSError

PENDING = "pending"


class TwoPersonRequest(models.Model):
    """Abstract: the requester, the deadline and the decider of a two-person request.

    Subclasses add ``status`` (choices including ``pending``) and what is asked for.
    """

    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_by_name = models.CharField(max_length=150)
    requested_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    decided_by_name = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    # Each subclass declares the field, with its own choices (``pending`` among them).
    status: str

    class Meta:
        abstract = True

    if TYPE_CHECKING:
        # Django adds this to each subclass, for the ``status`` field (with choices) it declares.
        def get_status_display(self) -> str: ...

    @property
    def is_expired(self) -> bool:
        """Still pending, but past its time: it can only be rejected or withdrawn now."""
        return self.status == PENDING and self.expires_at <= timezone.now()


class TwoPersonStatus(models.TextChoices):
    PENDING = "pending", "waiting for approval"
    APPROVED = "approved", "approved"
    REJECTED = "rejected", "rejected"
    WITHDRAWN = "withdrawn", "withdrawn"
    EXPIRED = "expired", "expired"


class TwoPersonChange(TwoPersonRequest):
    """Abstract: a two-person request with the common status set and a required reason."""

    reason = models.TextField(max_length=1000)
    status = models.CharField(
        max_length=12, choices=TwoPersonStatus.choices, default=TwoPersonStatus.PENDING
    )
    decision_comment = models.TextField(blank=True, max_length=1000)

    class Meta:
        abstract = True


class TwoPersonError(KMSError):
    """A two-person step that cannot be taken as asked; the message says why."""

    code = "two_person_rule"
    status = 409


def two_person_reason(reason: str) -> str:
    """The request's reason, stripped; a blank one is refused."""
    cleaned = (reason or "").strip()
    if not cleaned:
        raise TwoPersonError("say why: a two-person request needs a reason")
    return cleaned[:1000]


R = TypeVar("R", bound=TwoPersonRequest)


def two_person_locked(model: type[R], pk: object, *, related: tuple[str, ...] = ()) -> R:
    """The request row, locked for this transaction and freshly read; it must be pending.

    Every decision starts here: two approvers racing take turns on the row lock and the
    second one finds the request decided (and is refused, nothing changes twice).
    """
    queryset = model._default_manager.select_for_update(of=("self",)).select_related(*related)
    request = queryset.get(pk=pk)
    if request.status != PENDING:
        who = f" by {request.decided_by_name}" if request.decided_by_name else ""
        raise TwoPersonError(
            f"this request is already {request.get_status_display()}{who}; nothing was changed"
        )
    return request


def two_person_check_not_requester(
    request: TwoPersonRequest,
    actor: User,
    message: str = "you asked for this; a different person must approve it (two-person rule)",
) -> None:
    """The requester never approves their own request; ``message`` may name who must."""
    if request.requested_by_id == actor.pk:
        raise TwoPersonError(message)


def two_person_check_unexpired(request: TwoPersonRequest) -> None:
    if request.is_expired:
        raise TwoPersonError(
            f"this request expired at {request.expires_at:%Y-%m-%d %H:%M} UTC; ask again "
            "(this one can only be rejected or withdrawn)"
        )


def two_person_decide(
    request: TwoPersonRequest, *, actor: User, status: str, comment: str = ""
) -> None:
    """Record the decision on a locked, pending request."""
    request.status = status
    request.decided_by = actor
    request.decided_by_name = actor.get_username()
    request.decided_at = timezone.now()
    fields = ["status", "decided_by", "decided_by_name", "decided_at"]
    if hasattr(request, "decision_comment"):
        request.decision_comment = (comment or "").strip()[:1000]
        fields.append("decision_comment")
    request.save(update_fields=fields)


def two_person_lapse(
    model: type[R], *, record: Callable[[R], None], related: tuple[str, ...] = (), **where: Any
) -> list[R]:
    """Pending requests of ``model`` (matching ``where``) past their time become ``expired``,
    visibly and audited: ``record`` is called for each, in this transaction."""
    now = timezone.now()
    lapsed = list(
        model._default_manager.select_for_update(of=("self",))
        .select_related(*related)
        .filter(status=PENDING, expires_at__lte=now, **where)
    )
    for request in lapsed:
        request.status = TwoPersonStatus.EXPIRED
        request.decided_by_name = "expired"
        request.decided_at = now
        request.save(update_fields=["status", "decided_by_name", "decided_at"])
        record(request)
    return lapsed


def two_person_reject(
    model: type[R],
    pk: object,
    *,
    actor: User,
    comment: str = "",
    related: tuple[str, ...] = (),
) -> R:
    """Someone other than the requester turns a pending request down (also once expired)."""
    request = two_person_locked(model, pk, related=related)
    if request.requested_by_id == actor.pk:
        raise TwoPersonError("you asked for this: withdraw it instead of rejecting it")
    two_person_decide(request, actor=actor, status=TwoPersonStatus.REJECTED, comment=comment)
    return request


def two_person_withdraw(
    model: type[R], pk: object, *, actor: User, related: tuple[str, ...] = ()
) -> R:
    """The requester takes a pending request back (also once expired)."""
    request = two_person_locked(model, pk, related=related)
    if request.requested_by_id != actor.pk:
        raise TwoPersonError(
            f"only {request.requested_by_name}, who asked for it, can withdraw this request; "
            "reject it instead"
        )
    two_person_decide(request, actor=actor, status=TwoPersonStatus.WITHDRAWN)
    return request


# --- the registry: one inbox, one confirmation page ------------------------------------


@dataclass(frozen=True)
class Confirmation:
    """What a confirmation page shows: exactly what changes, and who is affected."""

    title: str
    changes: list[tuple[str, str]]
    affected: list[tuple[str, str]] = field(default_factory=list)
    warning: str = ""


@dataclass(frozen=True)
class Decision:
    message: str
    once: dict[str, str] | None = None  # a secret shown in this one response (a token)
    redirect: str | None = None


@dataclass(frozen=True)
class TwoPersonKind:
    """One kind of two-person request, as the inbox and the confirmation page handle it.

    ``slug`` names it in URLs; ``permission`` is what deciding needs (the services check
    the rest); ``visible`` the permission to see the requests at all. ``approve`` returns
    the message shown after approval (it may carry a one-time secret in ``once``).
    """

    slug: str
    label: str
    model: type[TwoPersonRequest]
    permission: str
    visible: str
    summary: Callable[[Any], str]  # one line for the inbox
    confirmation: Callable[[Any], Confirmation]
    approve: Callable[..., Decision]
    reject: Callable[..., Any]
    withdraw: Callable[..., Any]
    related: tuple[str, ...] = ()
    why: Callable[[Any], str] = lambda request: request.reason

    def pending(self) -> list[Any]:
        """Pending requests, oldest first (expired ones included: they can be rejected)."""
        return list(
            # Every concrete model declares ``status`` (TwoPersonRequest's docstring); the
            # plugin looks the field up on the abstract base, which cannot declare it.
            self.model._default_manager.filter(status=PENDING)  # type: ignore[misc]
            .select_related(*self.related)
            .order_by("requested_at", "pk")
        )

    def get(self, pk: object) -> Any | None:
        return self.model._default_manager.select_related(*self.related).filter(pk=pk).first()


_kinds: dict[str, TwoPersonKind] = {}


def two_person_kind_register(kind: TwoPersonKind) -> None:
    """Make a kind known to the inbox and the confirmation pages (from an app's ready())."""
    _kinds[kind.slug] = kind


def two_person_kinds() -> list[TwoPersonKind]:
    return list(_kinds.values())


def two_person_kind(slug: str) -> TwoPersonKind | None:
    return _kinds.get(slug)


@dataclass(frozen=True)
class ApprovalSummary:
    """Pending two-person requests, as an approvals inbox lists them."""

    waiting: int  # every pending request: the inbox's rows
    expired: int  # of those, past their time (they can only be rejected or withdrawn now)
    approvable: int  # unexpired, asked by someone else, and the user may approve


def pending_summary(
    model: type[TwoPersonRequest], *, user: User, can_approve: bool, now: datetime
) -> ApprovalSummary:
    """Count ``model``'s pending requests for ``user``; one aggregate query."""
    # Every concrete model declares ``status``; the plugin looks the field up on the abstract
    # base, which cannot declare it (each subclass has its own choices).
    counts = model._default_manager.filter(status=PENDING).aggregate(  # type: ignore[misc]
        waiting=Count("pk"),
        expired=Count("pk", filter=Q(expires_at__lte=now)),
        # The requester may never approve their own request (the two-person rule).
        approvable=Count("pk", filter=Q(expires_at__gt=now) & ~Q(requested_by=user.pk)),
    )
    return ApprovalSummary(
        waiting=counts["waiting"],
        expired=counts["expired"],
        approvable=counts["approvable"] if can_approve else 0,
    )
