"""The two-person rule's shared shape: one person asks, a different one decides.

Key destruction (vault.DestructionRequest) and CA revocation (pki.CARevocationRequest) both
keep a request row with who asked and when, until when it may be approved, and who decided.
Each app keeps its own status choices (all with ``pending``), subject and services; what is
common, the columns, the expiry rule and the counts the inbox and the dashboard show, lives
here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from django.db.models import Count, Q
from django.utils import timezone

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

    class Meta:
        abstract = True

    @property
    def is_expired(self) -> bool:
        """Still pending, but past its time: it can only be rejected or withdrawn now."""
        return self.status == PENDING and self.expires_at <= timezone.now()


@dataclass(frozen=True)
class ApprovalSummary:
    """Pending two-person requests, as an approvals inbox lists them."""

    waiting: int  # every pending request: the inbox's rows
    expired: int  # of those, past their time (they can only be rejected or withdrawn now)
    approvable: int  # unexpired, asked by someone else, and the user may approve


def pending_summary(
    model: type[TwoPersonRequest], *, user: AbstractBaseUser, can_approve: bool, now: datetime
) -> ApprovalSummary:
    """Count ``model``'s pending requests for ``user``; one aggregate query."""
    counts = model.objects.filter(status=PENDING).aggregate(
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
