"""Publishing CRLs, and reading the published one for downloads.

One CRL per CA, v2, signed by the CA's own key (RFC 5280 5.1): thisUpdate, nextUpdate
(``CertificateAuthority.crl_validity_days`` later), AKI, cRLNumber, and per entry the
reasonCode (left out for unspecified) and the invalidityDate. The complete CRL lists every
certificate of the CA that is revoked now, certificateHold included, and carries FreshestCRL
pointing at the CA's delta CRL (RFC 5280 5.2.4, 5.2.6: ``/pki/crl/<ca>-delta.crl``), which
lists the revocations since its base (the newest complete CRL). A released hold is absent
from the next complete CRL, which a release publishes (with a new delta for it), so
removeFromCRL is never needed.

When a CRL is published
    * when the CA is created (number 1, in the creating transaction): a relying party never
      gets a 404 for an existing CA;
    * a delta CRL inside every revocation's own transaction, after the change: revoking one
      certificate with 100,000 already revoked costs a delta of the few revocations since
      the base, not a rebuild of the complete CRL; a hold release publishes both, and so
      does a revocation when the complete CRL is older than ``KMS_CRL_REBASE_AFTER``;
    * by ``manage.py publish_crls`` (complete + delta) once the current one (or its delta)
      is past half its lifetime, or when the delta lists revocations and the complete CRL is
      older than ``KMS_CRL_REBASE_AFTER`` (default one hour), and on demand from the CRL
      page ("publish now").

Why inside the revocation's transaction and not in ``transaction.on_commit``: the CRL row
commits or rolls back together with the revocation, so a stored CRL can never list a
revocation that rolled back, and no committed revocation can miss the CRL because the process
died between the commit and an on-commit hook. The price is that a revocation holds its CA's
row lock while the CRL is built (about 2 s with 100,000 entries on a small machine).

Numbering: the CA row is locked (SELECT ... FOR UPDATE) before the number is drawn, so
publishers of one CA take turns. On PostgreSQL (READ COMMITTED) every statement after the lock
sees what the previous lock holder committed: its CRL row (hence ``max + 1`` is strictly
larger) and its revocations (hence the new CRL lists them). SQLite serialises writers anyway
(BEGIN IMMEDIATE). The unique constraint (ca, crl_number) is the backstop.

Performance (PERF_FACTS): only the four needed columns of the revoked rows are read
(``values_list``), serial numbers come from the stored hex, never from parsing certificates,
and the entries go to the builder in one list. A download reads the stored bytes and their
hash; it never parses, builds or signs, with one exception: a CA that has no CRL at all (one
created before CRLs were published at creation) gets its first one on the first download.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from audit.services import audit_event_record
from kmsportal.actors import Actor, actor_name
from kmsportal.crypto.crl import CRLError, EntryCache, build_crl, crl_to_der
from kmsportal.crypto.signer import Signer

from .distribution import ca_distribution_points
from .errors import PkiError
from .events import PkiAction
from .models import (
    CertificateAuthority,
    CRLTrigger,
    RevocationList,
)
from .queries import crl_der_store, crl_entry_rows, newest_crl_row
from .signers import ca_signer

__all__ = [
    "CRLDownload",
    "crl_delta_publish_locked",
    "crl_download_der",
    "crl_download_get",
    "crl_download_pem",
    "crl_entry_cache_clear",
    "crl_is_due",
    "crl_pem",
    "crl_publish",
    "crl_publish_locked",
]


def crl_entries(
    ca_id: object, *, since: datetime | None = None
) -> list[tuple[int, datetime, str | None, datetime | None]]:
    """Every revoked certificate of the CA as (serial, revocation date, reason, invalidity
    date): four columns per row straight from the database, the serial from its stored hex.

    The two dates are read as text and parsed with ``datetime.fromisoformat`` (C, ~0.15 us):
    Django's per-row datetime converters (a regex parse and ``make_aware`` on SQLite, a
    Python loader on PostgreSQL) cost more than building the CRL entries themselves. Both
    databases store UTC; SQLite's text has no offset (naive, which X.509 takes as UTC),
    PostgreSQL's (session time zone UTC) ends in ``+00``. One fetch, no server-side cursor.
    """
    fetched = crl_entry_rows(ca_id, since=since)
    parse = datetime.fromisoformat
    return [
        (
            int(serial_hex, 16),
            parse(revoked_at),
            reason or None,
            parse(invalid_since) if invalid_since else None,
        )
        for serial_hex, revoked_at, reason, invalid_since in fetched
    ]


def _store_der(row: RevocationList, der: bytes) -> None:
    """Write the CRL bytes into ``row``, already inserted without them.

    On PostgreSQL the bytes go as a binary parameter (see `pki.queries.crl_der_store`).
    """
    crl_der_store(pk=row.pk, der=der)
    row.crl_der = der


#: A delta CRL lists the revocations since its base CRL's thisUpdate minus this margin
#: (clock differences between nodes); listing a revocation the base also lists is harmless.
DELTA_MARGIN = timedelta(minutes=5)


def _next_number(ca: CertificateAuthority) -> int:
    previous = (
        RevocationList.objects.filter(ca=ca)
        .order_by("-crl_number")
        .values_list("crl_number", flat=True)
        .first()
    )
    return (previous or 0) + 1


def _store(
    *,
    ca: CertificateAuthority,
    number: int,
    der: bytes,
    entries: int,
    this_update: datetime,
    next_update: datetime,
    trigger: CRLTrigger,
    actor: Actor,
    base_number: int | None,
) -> RevocationList:
    row = RevocationList.objects.create(
        ca=ca,
        crl_number=number,
        this_update=this_update,
        next_update=next_update,
        entry_count=entries,
        crl_der=None,
        size=len(der),
        sha256=hashlib.sha256(der).hexdigest(),
        trigger=trigger,
        published_by_name=actor_name(actor),
        is_delta=base_number is not None,
        base_crl_number=base_number,
    )
    _store_der(row, der)
    # Only the newest CRL of each kind is ever served; older rows keep their metadata.
    RevocationList.objects.filter(
        ca=ca, is_delta=base_number is not None, crl_number__lt=number, crl_der__isnull=False
    ).update(crl_der=None)
    return row


#: Per process, the built entries of the last complete CRL of the few CAs published most
#: recently (see kmsportal.crypto.crl.EntryCache): a CA's row lock serialises its builds.
#: Process-local on purpose, not in Django's cache: the entries are `cryptography` objects
#: that cannot be pickled, and they only spare this process rebuilding entries it built
#: before; what is published and served (the stored CRL) never depends on them.
ENTRY_CACHE_CAS = 2
_entry_caches: OrderedDict[object, EntryCache] = OrderedDict()
_entry_caches_lock = threading.Lock()


def _entry_cache(ca_id: object) -> EntryCache:
    with _entry_caches_lock:
        cache = _entry_caches.pop(ca_id, None) or EntryCache()
        _entry_caches[ca_id] = cache
        while len(_entry_caches) > ENTRY_CACHE_CAS:
            _entry_caches.popitem(last=False)
        return cache


def crl_entry_cache_clear() -> None:
    """Forget every cached CRL entry (tests, and the benchmark's cold-process figure)."""
    with _entry_caches_lock:
        _entry_caches.clear()


def crl_publish_locked(
    *,
    ca: CertificateAuthority,
    trigger: CRLTrigger,
    actor: Actor = None,
    signer: Signer | None = None,
    now: datetime | None = None,
) -> RevocationList:
    """Build, sign and store the next complete CRL of ``ca``, then a delta CRL for it.

    The complete CRL carries FreshestCRL (where the delta CRL is); the delta published right
    after it names it as its base, so a relying party never combines the new complete CRL
    with a delta of an older one that would still list a released hold.

    The caller holds the lock on ``ca``'s row (or has just inserted it) inside its
    transaction, and loaded the row with its sealed key unless it passes ``signer``. Not
    audited here: the caller's event covers it. ``now`` exists for tests (a CRL from the
    past). Returns the complete CRL's row.
    """
    moment = (now or timezone.now()).replace(microsecond=0)
    number = _next_number(ca)
    entries = crl_entries(ca.pk)
    next_update = moment + timedelta(days=ca.crl_validity_days)
    signer = signer or ca_signer(ca)
    issuer = x509.load_der_x509_certificate(bytes(ca.certificate_der))
    points = ca_distribution_points(ca.name)
    cache = _entry_cache(ca.pk)
    try:
        crl = build_crl(
            issuer_certificate=issuer,
            signer=signer,
            entries=entries,
            crl_number=number,
            this_update=moment,
            next_update=next_update,
            freshest_crl_url=points.delta_crl,
            entry_cache=cache,
        )
    except CRLError as exc:
        cache.entries = {}
        raise PkiError(f"the CRL of CA {ca.name} cannot be built: {exc}") from None
    row = _store(
        ca=ca,
        number=number,
        der=crl_to_der(crl),
        entries=len(entries),
        this_update=moment,
        next_update=next_update,
        trigger=trigger,
        actor=actor,
        base_number=None,
    )
    _publish_delta(
        ca=ca, base=row, trigger=trigger, actor=actor, signer=signer, issuer=issuer, now=moment
    )
    return row


def _publish_delta(
    *,
    ca: CertificateAuthority,
    base: RevocationList,
    trigger: CRLTrigger,
    actor: Actor,
    signer: Signer,
    issuer: x509.Certificate,
    now: datetime,
) -> RevocationList:
    number = _next_number(ca)
    # Every revocation since the base (RFC 5280 5.2.4). A released hold is not listed: a
    # release publishes a new complete CRL (which omits it) and a delta for that one.
    entries = crl_entries(ca.pk, since=base.this_update - DELTA_MARGIN)
    # A delta CRL must not outlive its base.
    next_update = min(now + timedelta(days=ca.crl_validity_days), base.next_update)
    if next_update <= now:
        next_update = now + timedelta(days=ca.crl_validity_days)
    try:
        crl = build_crl(
            issuer_certificate=issuer,
            signer=signer,
            entries=entries,
            crl_number=number,
            this_update=now,
            next_update=next_update,
            delta_crl_indicator=base.crl_number,
        )
    except CRLError as exc:
        raise PkiError(f"the delta CRL of CA {ca.name} cannot be built: {exc}") from None
    return _store(
        ca=ca,
        number=number,
        der=crl_to_der(crl),
        entries=len(entries),
        this_update=now,
        next_update=next_update,
        trigger=trigger,
        actor=actor,
        base_number=base.crl_number,
    )


def crl_delta_publish_locked(
    *,
    ca: CertificateAuthority,
    trigger: CRLTrigger,
    actor: Actor = None,
    signer: Signer | None = None,
) -> RevocationList:
    """Publish the next delta CRL of ``ca`` against its newest complete CRL: what a
    revocation costs (the revocations since the base, read through the (ca, revoked_at)
    index), instead of rebuilding the complete CRL. A CA without a complete CRL gets one
    (and its delta), and so does one whose complete CRL is older than
    ``KMS_CRL_REBASE_AFTER``: relying parties that ignore delta CRLs then see the first
    revocation after a quiet spell at once, without waiting for ``publish_crls`` from cron
    (which a trial under ``make run`` does not have). At most one revocation per
    ``KMS_CRL_REBASE_AFTER`` pays for a complete rebuild. The caller holds ``ca``'s row
    lock; returns the delta's row."""
    base = _latest(ca)
    rebase_after = timedelta(seconds=settings.KMS_CRL_REBASE_AFTER)
    if base is None or timezone.now() - base.this_update >= rebase_after:
        crl_publish_locked(ca=ca, trigger=trigger, actor=actor, signer=signer)
        delta = _latest(ca, delta=True)
        assert delta is not None
        return delta
    moment = timezone.now().replace(microsecond=0)
    return _publish_delta(
        ca=ca,
        base=base,
        trigger=trigger,
        actor=actor,
        signer=signer or ca_signer(ca),
        issuer=x509.load_der_x509_certificate(bytes(ca.certificate_der)),
        now=moment,
    )


def crl_is_due(
    latest: RevocationList | None,
    *,
    now: datetime | None = None,
    delta: RevocationList | None = None,
) -> bool:
    """True if there is no complete CRL, the newest is past half its lifetime (time to
    replace it, long before relying parties and OpenSSL refuse it at nextUpdate), its delta
    is, or the delta lists revocations and the complete CRL is older than
    ``KMS_CRL_REBASE_AFTER`` (so relying parties that ignore delta CRLs see them soon)."""
    if latest is None:
        return True
    moment = now or timezone.now()
    if moment >= latest.republish_after:
        return True
    if delta is None:
        return False
    if moment >= delta.republish_after:
        return True
    rebase_after = timedelta(seconds=settings.KMS_CRL_REBASE_AFTER)
    return delta.entry_count > 0 and moment - latest.this_update >= rebase_after


def _latest(ca: CertificateAuthority, *, delta: bool = False) -> RevocationList | None:
    return (
        RevocationList.objects.filter(ca=ca, is_delta=delta)
        .defer("crl_der")
        .order_by("-crl_number")
        .first()
    )


@transaction.atomic
def crl_publish(
    *,
    actor: Actor,
    ca: CertificateAuthority,
    trigger: CRLTrigger = CRLTrigger.MANUAL,
    force: bool = True,
) -> RevocationList | None:
    """Publish a new CRL for ``ca`` now; with ``force=False`` only if it is due (see
    :func:`crl_is_due`), else return None and change nothing.

    Safe to run concurrently and as often as wanted: the CA row is locked and the due check
    is made again under the lock, so two schedulers publish once. Audited as
    ``crl.published`` (trigger ``manual``, ``scheduled`` or ``first-download``).
    """
    locked = CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
    latest = _latest(locked)
    delta = _latest(locked, delta=True)
    if not force and not crl_is_due(latest, delta=delta):
        return None
    if trigger == CRLTrigger.FIRST_DOWNLOAD and latest is not None and delta is not None:
        return None  # another request published it while this one waited for the lock
    row = crl_publish_locked(ca=locked, trigger=trigger, actor=actor)
    audit_event_record(
        action=PkiAction.CRL_PUBLISHED,
        actor=actor,
        anonymous=trigger == CRLTrigger.FIRST_DOWNLOAD,
        actor_name="anonymous (first CRL download)"
        if trigger == CRLTrigger.FIRST_DOWNLOAD
        else None,
        target=locked,
        target_label=locked.name,
        details={
            "ca": locked.name,
            "crl_number": row.crl_number,
            "entries": row.entry_count,
            "this_update": row.this_update.isoformat(),
            "next_update": row.next_update.isoformat(),
            "sha256": row.sha256,
            "trigger": str(trigger),
            "previous_crl_number": latest.crl_number if latest is not None else None,
            "delta_crl_number": row.crl_number + 1,
        },
    )
    return row


# --- downloads -----------------------------------------------------------------------------
#
# A download costs one indexed query: the newest CRL's validators (its row id, SHA-256 and
# dates). Its bytes come from Django's cache (Redis when CACHE_URL is set, so every worker
# and node shares them), addressed by that SHA-256 and filled from the database on a miss:
# every download serves the newest CRL stored when its query ran, on every server, and a
# new CRL needs no invalidation (a new hash is a new key). Bytes read from the cache are
# hashed again before they are served: a shared cache is not trusted to hold what its key
# names (an older, still validly signed CRL put under the new key would hide revocations).

#: The largest CRL kept in the cache; a larger one is read from the database every time.
CRL_CACHE_MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CRLDownload:
    """The newest stored CRL of a CA: its HTTP validators, and its row for the bytes.

    The bytes are read separately (:func:`crl_download_der`), only when the answer needs
    them: a conditional request answered 304 never reads a CRL of megabytes.
    """

    pk: int
    sha256: str
    this_update: datetime
    next_update: datetime


def _aware(value: datetime) -> datetime:
    """A datetime column read from the cursor: SQLite's is UTC without an offset."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def crl_download_get(*, ca_name: str, delta: bool = False) -> CRLDownload | None:
    """The newest complete CRL (or, with ``delta``, delta CRL) of the CA called
    ``ca_name``, or None if there is no such CA.

    One indexed query (CA by name, newest CRL number of that kind), without the bytes. A CA
    without any CRL gets its first one here, once (see the module docstring); after that
    nothing is ever built on download.
    """
    row = newest_crl_row(ca_name=ca_name, delta=delta)
    if row is None:
        ca = CertificateAuthority.objects.filter(name=ca_name).first()
        if ca is None:
            return None
        crl_publish(actor=None, ca=ca, trigger=CRLTrigger.FIRST_DOWNLOAD)
        row = newest_crl_row(ca_name=ca_name, delta=delta)
        if row is None:
            return None
    pk, sha256, this_update, next_update = row
    return CRLDownload(
        pk=pk, sha256=sha256, this_update=_aware(this_update), next_update=_aware(next_update)
    )


def _cache_key(sha256: str) -> str:
    return f"kms:crl:{sha256}"


def crl_download_der(*, download: CRLDownload) -> bytes | None:
    """The stored DER bytes of ``download``, exactly as signed; None if they are not in the
    cache and a newer CRL replaced them since ``download`` was read (ask again)."""
    key = _cache_key(download.sha256)
    cached = cache.get(key)  # only this function sets the key, always to bytes
    if isinstance(cached, bytes) and hashlib.sha256(cached).hexdigest() == download.sha256:
        return cached
    stored = RevocationList.objects.filter(pk=download.pk).values_list("crl_der", flat=True).first()
    if stored is None:
        return None
    der = bytes(stored)
    # Only bytes whose hash is their key are kept (a damaged row is served as stored, as
    # before, but not remembered, so repairing it takes effect at once). They stay until
    # the CRL's nextUpdate, when a newer one has long replaced it.
    if len(der) <= CRL_CACHE_MAX_BYTES and hashlib.sha256(der).hexdigest() == download.sha256:
        lifetime = (download.next_update - timezone.now()).total_seconds()
        cache.set(key, der, timeout=max(60, int(lifetime)))
    return der


def crl_download_pem(*, download: CRLDownload) -> bytes | None:
    """The PEM form of :func:`crl_download_der` (encoded from the DER on each download)."""
    der = crl_download_der(download=download)
    return None if der is None else crl_pem(der)


def crl_pem(der: bytes) -> bytes:
    """The PEM form of stored DER bytes: base64 in 64-column lines (RFC 7468), no parsing."""
    text = base64.b64encode(der).decode("ascii")
    body = "\n".join(text[i : i + 64] for i in range(0, len(text), 64))
    return f"-----BEGIN X509 CRL-----\n{body}\n-----END X509 CRL-----\n".encode("ascii")
