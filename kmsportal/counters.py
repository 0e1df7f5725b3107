"""Counters every worker and every node shares: the `counters` cache alias.

Sign-in and second-factor lockouts (accounts.throttle) and the client API's rate limit
(vault.exchange) count in ``caches["counters"]``. With ``CACHE_URL`` set that is the same
Redis as the default cache. Without it, it is Django's database cache in the table
``kms_counters`` (created by the migration ``accounts.0003_counters_table``, so there is no
``createcachetable`` step to forget): every gunicorn worker and every node on the same
database sees one count, where a per-process memory cache would give each worker its own.

Django's ``DatabaseCache.incr`` is a read followed by a write, and ``add``/``incr``/``touch``
are three transactions of several statements each. :meth:`DatabaseCounterCache.count_up`
does the whole increment in one transaction of two statements, holding the counter's row
lock (PostgreSQL ``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` takes the
database's write lock) across the read and the write, so two workers counting at once
never both write the same number.
"""

from __future__ import annotations

import base64
import pickle
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.db import DatabaseCache
from django.db import IntegrityError, connections, models, router, transaction
from django.utils import timezone

COUNTERS_ALIAS = "counters"
# One increment in this many also deletes the expired counters (a rate-limit window leaves
# one row per client and minute behind; nothing else would ever read it again).
PRUNE_ONE_IN = 200


def counters() -> Any:
    """The shared counters cache (settings.CACHES["counters"])."""
    return caches[COUNTERS_ALIAS]


def _encode(value: int) -> str:
    return base64.b64encode(pickle.dumps(value, DatabaseCache.pickle_protocol)).decode("latin1")


class DatabaseCounterCache(DatabaseCache):
    """Django's database cache with an atomic, two-statement counter (module docstring)."""

    _table: str  # set by BaseDatabaseCache.__init__ (not in django-stubs)

    def _expires(self, connection: Any, value: Any) -> datetime:
        expression = models.Expression(output_field=models.DateTimeField())
        converters = connection.ops.get_db_converters(expression)
        for converter in converters + expression.get_db_converters(connection):
            value = converter(value, expression, connection)
        expires: datetime = value
        return expires

    def count_up(self, key: str, *, timeout: int) -> int:
        """Add one to the counter ``key`` and return the new count; an expired or missing
        counter starts again at 1. ``timeout`` seconds from now it lapses."""
        stored_key = self.make_and_validate_key(key)
        database = router.db_for_write(self.cache_model_class)
        connection = connections[database]
        quote = connection.ops.quote_name
        table = quote(self._table)
        lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
        now = timezone.now()
        expires = connection.ops.adapt_datetimefield_value(
            (now + timedelta(seconds=timeout)).replace(microsecond=0)
        )
        for _attempt in range(3):
            try:
                with transaction.atomic(using=database), connection.cursor() as cursor:
                    cursor.execute(
                        f"SELECT value, expires FROM {table} WHERE cache_key = %s{lock}",  # noqa: S608 (quoted table name from settings)
                        [stored_key],
                    )
                    row = cursor.fetchone()
                    count = 1
                    if row is not None and self._expires(connection, row[1]) >= now:
                        stored = connection.ops.process_clob(row[0])
                        count = int(pickle.loads(base64.b64decode(stored.encode()))) + 1  # noqa: S301 (written by this class)
                    if row is None:
                        cursor.execute(
                            f"INSERT INTO {table} (cache_key, value, expires) VALUES (%s, %s, %s)",  # noqa: S608
                            [stored_key, _encode(count), expires],
                        )
                    else:
                        cursor.execute(
                            f"UPDATE {table} SET value = %s, expires = %s WHERE cache_key = %s",  # noqa: S608
                            [_encode(count), expires, stored_key],
                        )
            except IntegrityError:
                continue  # another worker inserted the same counter first: count again
            if secrets.randbelow(PRUNE_ONE_IN) == 0:
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"DELETE FROM {table} WHERE expires < %s",  # noqa: S608
                        [connection.ops.adapt_datetimefield_value(now.replace(microsecond=0))],
                    )
            return count
        raise IntegrityError(f"counter {key} could not be incremented")

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        """Atomic too (Django's is a read and a separate write): under the row lock."""
        database = router.db_for_write(self.cache_model_class)
        connection = connections[database]
        with transaction.atomic(using=database):
            if connection.features.has_select_for_update:
                table = connection.ops.quote_name(self._table)
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"SELECT cache_key FROM {table} WHERE cache_key = %s FOR UPDATE",  # noqa: S608
                        [self.make_and_validate_key(key, version=version)],
                    )
            return super().incr(key, delta, version)


def counter_add(cache: Any, key: str, *, timeout: int) -> int:
    """Add one to the counter ``key`` (a missing one starts at 1) and return the new count;
    ``timeout`` seconds from now it lapses (each increment restarts the window)."""
    if isinstance(cache, DatabaseCounterCache):
        return cache.count_up(key, timeout=timeout)
    cache.add(key, 0, timeout=timeout)
    try:
        count: int = cache.incr(key)  # Redis INCR: atomic
    except ValueError:  # expired or evicted between add and incr
        cache.set(key, 1, timeout=timeout)
        count = 1
    cache.touch(key, timeout)
    return count
