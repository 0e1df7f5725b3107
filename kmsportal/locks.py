"""One run at a time of a scheduled job, across every node that shares the database.

With several gunicorn nodes each node's crontab runs the same commands (`publish_crls`,
`rotate_due_keys`, `destroy_due_keys`, `audit_checkpoint`). The work itself is already
correct when two runs overlap (each service locks the rows it changes and re-checks under the
lock), so the lock here only saves duplicate work and noise: the second run sees the job
taken and stops at once.

- PostgreSQL: a session-level advisory lock (`pg_try_advisory_lock`) on a key derived from
  the job's name, in the database itself, so every node that can write sees it. It is
  released at exit, and by PostgreSQL if the session ends (a crashed or killed job never
  leaves it held). It needs a session of its own: behind PgBouncer use session pooling for
  these commands, not transaction pooling.
- SQLite (one node by definition): an exclusive `flock` on a file in `KMS_DATA_DIR`, so two
  cron runs on the machine do not overlap either. The kernel drops it if the process dies.

A skipped run is logged at INFO, never audited: a crontab on every node would otherwise add
an audit event per node every minute.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from django.core.management.base import CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.backends.base.base import BaseDatabaseWrapper

logger = logging.getLogger(__name__)

# Part of the key derivation: changing it would let nodes running the old and the new code
# (during a rolling upgrade) run the same job at the same time.
_KEY_NAMESPACE = b"kmsportal.job:"
_JOB_NAME = re.compile(r"^[a-z0-9_]{1,64}$")


def job_lock_key(name: str) -> int:
    """The advisory lock key of job ``name``: the first 8 bytes of SHA-256 over a fixed
    namespace and the name, as a signed 64-bit integer (PostgreSQL's bigint)."""
    digest = hashlib.sha256(_KEY_NAMESPACE + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def add_wait_argument(parser: CommandParser) -> None:
    """The `--wait` flag every locked cron command takes."""
    parser.add_argument(
        "--wait",
        action="store_true",
        help="if another node is running this job, wait for it and run after it "
        "(default: skip with exit status 0)",
    )


def skipped_message(name: str) -> str:
    """What a command prints when another run holds its job."""
    return f"another node is running {name}; nothing to do"


@contextmanager
def exclusive_job(
    name: str, *, wait: bool = False, using: str = DEFAULT_DB_ALIAS
) -> Iterator[bool]:
    """Hold job ``name``'s lock for the ``with`` block; yields whether it was acquired.

    When another run holds it, yields False at once (or, with ``wait=True``, blocks until
    that run ends and then yields True). The lock is released when the block exits, also by
    an exception; on PostgreSQL inside a caller's transaction, when that transaction ends.
    PostgreSQL counts repeated acquisitions by one session, so a nested ``exclusive_job`` of
    the same name in one thread is acquired again there, whereas on SQLite it is not.
    """
    if not _JOB_NAME.match(name):
        raise ValueError(f"job names are 1-64 of a-z, 0-9 and _, not {name!r}")
    connection = connections[using]
    if connection.vendor == "postgresql":
        lock = _advisory_lock(connection, name, wait=wait)
    else:
        lock = _file_lock(name, wait=wait)
    with lock as acquired:
        if not acquired:
            logger.info("job %s skipped: another run holds its lock", name)
        yield acquired


@contextmanager
def _advisory_lock(connection: BaseDatabaseWrapper, name: str, *, wait: bool) -> Iterator[bool]:
    key = job_lock_key(name)
    if connection.in_atomic_block:
        # Inside a transaction (a test, a caller's atomic block): a transaction-level lock,
        # which PostgreSQL releases when that transaction ends, committed or rolled back. A
        # session-level one could not be released after an error aborted the transaction.
        yield _take(connection, key, wait=wait, xact=True)
        return
    acquired = _take(connection, key, wait=wait, xact=False)
    try:
        yield acquired
    finally:
        if acquired:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
            except DatabaseError:
                # The session is gone (database restart, connection lost in the job), and
                # PostgreSQL released the lock with it: nothing left to release.
                logger.warning("job %s: the session holding its lock had already ended", name)


def _take(connection: BaseDatabaseWrapper, key: int, *, wait: bool, xact: bool) -> bool:
    """Take the advisory lock ``key``: wait for it, or try once and say whether it was had."""
    scope = "_xact" if xact else ""
    with connection.cursor() as cursor:
        if wait:
            cursor.execute(f"SELECT pg_advisory{scope}_lock(%s)", [key])
            return True
        cursor.execute(f"SELECT pg_try_advisory{scope}_lock(%s)", [key])
        return bool(cursor.fetchone()[0])


@contextmanager
def _file_lock(name: str, *, wait: bool) -> Iterator[bool]:
    directory = Path(settings.KMS_DATA_DIR) / "locks"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(directory / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            acquired = False
        else:
            acquired = True
        try:
            yield acquired
        finally:
            if acquired:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)  # closing would release it too; the explicit unlock says so
