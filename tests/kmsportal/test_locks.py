"""kmsportal.locks: one run at a time of each scheduled job, across processes and nodes.

On PostgreSQL the holder elsewhere is another session (another process, or another thread
with its own connection); on SQLite it is another open file description of the lock file.
The work itself stays correct without the lock (row locks); these tests are about the lock.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from audit.models import AuditEvent
from kmsportal.locks import exclusive_job, job_lock_key, skipped_message
from pki import services as pki_services
from pki.models import CertificateAuthority, RevocationList
from tests.scaleout.processes import PROJECT_ROOT, process_environment

JOBS = ["publish_crls", "rotate_due_keys", "destroy_due_keys", "audit_checkpoint"]

transactional = pytest.mark.django_db(transaction=True, serialized_rollback=True)
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="PostgreSQL sessions and row locks"
)

# Holds the named jobs' locks in a separate process (another node, or another cron run on
# this machine) until a line arrives on stdin.
_HOLDER = """
import sys
from contextlib import ExitStack

import django

django.setup()
from kmsportal.locks import exclusive_job

with ExitStack() as stack:
    held = [stack.enter_context(exclusive_job(name)) for name in sys.argv[1:]]
    print(" ".join(str(h) for h in held), flush=True)
    sys.stdin.readline()
"""


@contextmanager
def held_by_another_process(*names: str) -> Iterator[None]:
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, *names],
        cwd=PROJECT_ROOT,
        env=process_environment(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        line = holder.stdout.readline()
        assert line.split() == ["True"] * len(names), line or holder.stderr.read()
        yield
    finally:
        if holder.poll() is None:
            holder.stdin.write("\n")
            holder.stdin.flush()
        holder.wait(timeout=60)


def acquired_elsewhere(name: str) -> bool:
    """Whether another thread (its own database session, its own file descriptor) gets the
    lock right now; it lets go at once."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            with exclusive_job(name) as acquired:
                result.append(acquired)
        finally:
            connections.close_all()

    thread = threading.Thread(target=attempt)
    thread.start()
    thread.join(timeout=60)
    return result[0]


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def make_ca() -> CertificateAuthority:
    return pki_services.certificate_authority_create(
        actor=None, name="lock-root", subject="CN=Lock Test Root", key_type="ecp256"
    )


# --- keys -------------------------------------------------------------------------------------


def test_lock_keys_are_stable_signed_64_bit_integers() -> None:
    keys = {name: job_lock_key(name) for name in JOBS}
    assert len(set(keys.values())) == len(JOBS)
    assert all(-(2**63) <= key < 2**63 for key in keys.values())
    # Fixed forever: nodes on old and new code (a rolling upgrade) must take the same lock.
    assert keys["publish_crls"] == job_lock_key("publish_crls") == 9095990599274193408
    with pytest.raises(ValueError, match="job names"), exclusive_job("publish crls; DROP TABLE"):
        pass


# --- skipped while held elsewhere -------------------------------------------------------------


@transactional
def test_every_job_is_skipped_with_exit_status_0_while_another_process_holds_it(caplog) -> None:
    ca = make_ca()
    crls = RevocationList.objects.filter(ca=ca, is_delta=False).count()
    caplog.set_level(logging.INFO, logger="kmsportal.locks")
    with held_by_another_process(*JOBS):
        events = AuditEvent.objects.count()
        for job in JOBS:
            extra = ["--force"] if job == "publish_crls" else []
            # call_command raises on a non-zero exit; returning is exit status 0.
            assert run(job, *extra) == skipped_message(job) + "\n"
            assert skipped_message(job) == f"another node is running {job}; nothing to do"
        assert RevocationList.objects.filter(ca=ca, is_delta=False).count() == crls, "no work was done"
        assert AuditEvent.objects.count() == events, "a skipped run is not audited"
    skipped = [r.getMessage() for r in caplog.records if r.name == "kmsportal.locks"]
    assert skipped == [f"job {job} skipped: another run holds its lock" for job in JOBS]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "kmsportal.locks")

    # The holder is gone: the next run does the work.
    assert "lock-root: published CRL #3 with 0 entries" in run("publish_crls", "--force")
    assert RevocationList.objects.filter(ca=ca, is_delta=False).count() == crls + 1


@transactional
def test_a_lock_is_released_when_the_job_fails() -> None:
    with pytest.raises(CommandError, match="no-such-ca"):
        call_command("publish_crls", "--ca", "no-such-ca", stdout=io.StringIO())
    assert acquired_elsewhere("publish_crls")

    with (
        pytest.raises(RuntimeError, match="the job broke"),
        exclusive_job("audit_checkpoint") as acquired,
    ):
        assert acquired
        assert not acquired_elsewhere("audit_checkpoint")
        raise RuntimeError("the job broke")
    assert acquired_elsewhere("audit_checkpoint")


@transactional
def test_a_lock_is_held_only_for_its_own_job() -> None:
    with exclusive_job("rotate_due_keys") as acquired:
        assert acquired
        assert not acquired_elsewhere("rotate_due_keys")
        assert acquired_elsewhere("destroy_due_keys")
    assert acquired_elsewhere("rotate_due_keys")


@pytest.mark.skipif(connection.vendor == "postgresql", reason="the SQLite file lock")
@transactional
def test_on_sqlite_the_lock_is_a_private_file_in_the_data_directory() -> None:
    with exclusive_job("publish_crls") as acquired:
        assert acquired
        lock_file = Path(settings.KMS_DATA_DIR) / "locks" / "publish_crls.lock"
        assert lock_file.exists()
        assert lock_file.stat().st_mode & 0o777 == 0o600
        assert (lock_file.parent.stat().st_mode & 0o777) == 0o700
        # Not re-entrant on SQLite: a second descriptor in this very process is refused too.
        with exclusive_job("publish_crls") as again:
            assert not again


# --- two runs at the same time (PostgreSQL) -----------------------------------------------------


def _advisory_lock_state(name: str) -> set[bool]:
    """`granted` of every advisory lock entry on job ``name`` in this database."""
    key = job_lock_key(name) & 0xFFFFFFFFFFFFFFFF
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
            "AND classid::bigint = %s AND objid::bigint = %s "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            [key >> 32, key & 0xFFFFFFFF],
        )
        return {row[0] for row in cursor.fetchall()}


def _until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.05)


@postgres_only
@transactional
def test_two_concurrent_publish_crls_one_publishes_and_the_other_skips() -> None:
    ca = make_ca()
    before = RevocationList.objects.filter(ca=ca, is_delta=False).count()
    release_row = threading.Event()
    row_locked = threading.Event()
    outputs: dict[str, str] = {}
    errors: list[BaseException] = []

    def hold_the_ca_row() -> None:
        # Keeps the first run busy inside its job (crl_publish waits for this row lock) so
        # that the second run starts while the first one holds the job's lock.
        from django.db import transaction

        try:
            with transaction.atomic():
                CertificateAuthority.objects.select_for_update().get(pk=ca.pk)
                row_locked.set()
                release_row.wait(timeout=120)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def first_run() -> None:
        try:
            outputs["first"] = run("publish_crls", "--force")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    blocker = threading.Thread(target=hold_the_ca_row)
    blocker.start()
    assert row_locked.wait(timeout=60)
    first = threading.Thread(target=first_run)
    first.start()
    try:
        _until(lambda: _advisory_lock_state("publish_crls") == {True}, "the first run holds it")
        outputs["second"] = run("publish_crls", "--force")
    finally:
        release_row.set()
        blocker.join(timeout=120)
        first.join(timeout=120)
    assert errors == []
    assert outputs["second"] == "another node is running publish_crls; nothing to do\n"
    assert outputs["first"].startswith("lock-root: published CRL #3 ")
    assert RevocationList.objects.filter(ca=ca, is_delta=False).count() == before + 1
    assert _advisory_lock_state("publish_crls") == set(), "released after the run"


@postgres_only
@transactional
def test_with_wait_a_run_waits_for_the_other_and_then_works() -> None:
    make_ca()
    release = threading.Event()
    holding = threading.Event()

    def holder() -> None:
        try:
            with exclusive_job("audit_checkpoint") as acquired:
                assert acquired
                holding.set()
                release.wait(timeout=120)
        finally:
            connections.close_all()

    def release_once_the_other_waits() -> None:
        try:
            _until(lambda: False in _advisory_lock_state("audit_checkpoint"), "a run waits")
        finally:
            release.set()
            connections.close_all()

    threads = [
        threading.Thread(target=holder),
        threading.Thread(target=release_once_the_other_waits),
    ]
    threads[0].start()
    assert holding.wait(timeout=60)
    threads[1].start()
    try:
        output = run("audit_checkpoint", "--wait")
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=120)
    assert output.startswith("Signed checkpoint at event ")
