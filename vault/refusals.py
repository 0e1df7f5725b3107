"""The client API's refusals, and the accounting of refusals nobody can be held to.

`FetchRefused` carries a stable code, an HTTP status and a clear message; the fetch
(`vault.exchange`), enrollment (`vault.clients`) and sessions (`vault.sessions`) raise it.
A refusal that no verified client can be held to (malformed body, unknown certificate, bad
signature, unknown token...) is counted per source address and minute, never audited one
by one; one ``api.requests_refused`` event per (source, minute) reports the count.
"""

from __future__ import annotations

import contextlib
from datetime import datetime

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, models, transaction
from django.utils import timezone

from audit.context import request_meta
from audit.models import Outcome
from audit.services import audit_event_record
from kmsportal.counters import counter_add, counters
from kmsportal.crypto.errors import KMSError

from .events import VaultAction
from .models import RefusalTally


class DistributionError(KMSError):
    """A management action on clients or grants that cannot be done as asked."""

    code = "distribution_refused"
    status = 400


class FetchRefused(KMSError):
    """The client API refuses a request: stable `code`, HTTP `status`, clear message."""

    def __init__(self, code: str, message: str, status: int = 403, retry_after: int | None = None):
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after
        self.outcome = Outcome.DENIED


# --- refusals nobody can be held to ---------------------------------------------------------


def _source_address() -> str:
    meta = request_meta()
    return (meta.source_ip if meta else "") or "unknown"


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def address_refusals_exceeded() -> int | None:
    """Seconds to wait if the current source address has had more than
    KMS_API_ADDRESS_REFUSAL_LIMIT unattributable refusals this minute (its requests are then
    answered 429 unread), else None. One read of the shared counters."""
    limit = settings.KMS_API_ADDRESS_REFUSAL_LIMIT
    if not limit:
        return None
    now = timezone.now()
    # In the shared counters (database, or Redis when set): every worker and node sees the
    # same count, so a flood is limited per address, not per address and worker.
    name = f"kms:refusals:{_source_address()[:45]}:{int(now.timestamp() // 60)}"
    count = counters().get(name) or 0
    if count < limit:
        return None
    return 60 - now.second


#: How many distinct codes, and targets, one tally row keeps (a flood cannot grow it).
TALLY_KEYS = 20


def _counted(counts: dict[str, int], key: str) -> dict[str, int]:
    counts = dict(counts)
    key = key[:80]
    if key in counts or len(counts) < TALLY_KEYS:
        counts[key] = counts.get(key, 0) + 1
    return counts


def refusal_tally(*, code: str, target: str = "") -> None:
    """Count one client API refusal that no verified client can be held to (malformed body,
    unknown certificate, bad signature, stale or replayed request, enrollment requests...),
    per source address and minute. ``target`` names what the request aimed at, when that
    is no secret and helps an administrator (a pending enrollment's client and token id).

    One shared counter (for the per-address limit) and one row update, never
    an audit event each: a flood must not take the audit chain's lock per request. One
    ``api.requests_refused`` event per (source, minute) reports the count when the minute is
    over (`refusal_tallies_report`, run from here once a minute and by ``manage.py
    report_refusals``)."""
    source = _source_address()[:45]
    now = timezone.now()
    counter_add(counters(), f"kms:refusals:{source}:{int(now.timestamp() // 60)}", timeout=120)
    minute = _minute(now)
    with contextlib.suppress(DatabaseError), transaction.atomic():
        tally, _created = RefusalTally.objects.select_for_update().get_or_create(
            source=source, minute=minute
        )
        changes: dict[str, object] = {"codes": _counted(tally.codes, code[:40])}
        if target:
            changes["targets"] = _counted(tally.targets, target)
        RefusalTally.objects.filter(pk=tally.pk).update(count=models.F("count") + 1, **changes)
    if cache.add(f"kms:refusals-report:{int(now.timestamp() // 60)}", 1, timeout=120):
        with contextlib.suppress(DatabaseError):
            refusal_tallies_report()


def refusal_tallies_report(*, now: datetime | None = None) -> int:
    """One ``api.requests_refused`` audit event per (source, minute) tally of a minute that is
    over and not yet reported; returns how many. Safe to run from several places at once:
    each tally is claimed under a row lock and marked reported with its event."""
    cutoff = _minute(now or timezone.now())
    reported = 0
    pending = list(
        RefusalTally.objects.filter(reported=False, minute__lt=cutoff).values_list("pk", flat=True)
    )
    for pk in pending:
        with transaction.atomic():
            tally = RefusalTally.objects.select_for_update().filter(pk=pk, reported=False).first()
            if tally is None:
                continue
            tally.reported = True
            tally.save(update_fields=["reported"])
            audit_event_record(
                action=VaultAction.API_REQUESTS_REFUSED,
                outcome=Outcome.DENIED,
                anonymous=True,
                actor_name=f"unverified requests from {tally.source}",
                target_type="vault.RefusalTally",
                target_id=str(tally.pk),
                target_label=f"{tally.source} {tally.minute:%Y-%m-%d %H:%M} UTC",
                details={
                    "source": tally.source,
                    "minute": tally.minute.isoformat(),
                    "count": tally.count,
                    "codes": tally.codes,
                    **({"targets": tally.targets} if tally.targets else {}),
                },
            )
            reported += 1
    return reported
