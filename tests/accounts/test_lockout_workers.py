"""The lockout against `make run`'s shape: gunicorn with 2 workers, SQLite, no Redis.

The counters live in the database (kmsportal.counters), so both workers count the same
attempts; and the counter is keyed on the username as authentication reads it, so spelling
it with spaces, another case or full-width letters is the same account (issue 15: 13 variants
gave 65 guesses, and 2 workers with per-process counters let 8 through).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.scaleout.processes import (
    PROJECT_ROOT,
    GunicornNode,
    collect_static,
    free_port,
    process_environment,
    start_gunicorn_node,
)
from tests.scaleout.test_two_servers import hidden_fields, http_session

PASSWORD = "correct horse battery staple 15"
# The variants a sign-in form turns into "caop1" (strip, NFKC), or that name the same account
# in another case (usernames are unique regardless of case).
VARIANTS = ["caop1", "  caop1   ", "\uff43aop1", "CAOP1", "\tCaop1 "]


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> Iterator[GunicornNode]:
    work = tmp_path_factory.mktemp("lockout")
    database = work / "db.sqlite3"
    static_root = work / "static"
    collect_static(static_root)
    environment = process_environment(
        DATABASE_URL=f"sqlite:///{database}",
        CACHE_URL="",  # no Redis: the counters are in the database
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        STATIC_ROOT=str(static_root),
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        SECURE_SSL_REDIRECT="false",
        GUNICORN_WORKERS="2",
        LOG_LEVEL="WARNING",
        # The worker's pid in each access-log line: which worker answered. Each worker
        # serves one request and is replaced (--max-requests 1), so every attempt runs in a
        # process that has never seen the others: a counter kept in process memory would
        # never reach five. (Two idle workers need not share the load: one may take every
        # connection, which made "both workers answered" a coin toss.)
        GUNICORN_CMD_ARGS=(
            "--no-control-socket --max-requests 1 --access-logformat '%(p)s %(m)s %(U)s %(s)s'"
        ),
    )
    for command in (
        ["migrate", "--noinput", "-v", "0"],
        [
            "shell",
            "-c",
            "from django.contrib.auth.models import User; "
            f"User.objects.create_user('caop1', password='{PASSWORD}')",
        ],
    ):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=PROJECT_ROOT,
            env=environment,
            check=True,
            capture_output=True,
            timeout=300,
        )
    started = start_gunicorn_node(
        "lockout", port=free_port(), environment=environment, log_dir=work
    )
    try:
        yield started
    finally:
        started.stop()


def _sign_in_pids(log: Path) -> list[str]:
    """The pid of the worker that answered each sign-in POST, in order."""
    text = log.read_text(errors="replace")
    return re.findall(r"^<(\d+)> POST /accounts/login/ ", text, re.MULTILINE)


def attempt(node: GunicornNode, username: str, password: str) -> requests.Response:
    """A fresh browser each time: GET the sign-in page, POST it back (no shared session)."""
    session = http_session()
    url = node.url + "/accounts/login/"
    form = hidden_fields(session.get(url, timeout=30))
    data = {**form, "username": username, "password": password}
    return session.post(url, data=data, allow_redirects=False, timeout=60)


def test_two_workers_on_sqlite_refuse_the_sixth_attempt_however_it_is_spelled(
    node: GunicornNode,
) -> None:
    for variant in VARIANTS:  # five wrong passwords, five spellings of one account
        answer = attempt(node, variant, "wrong password 1")
        assert answer.status_code == 200, variant
        assert "did not match" in answer.text or "correct username" in answer.text
    # The sixth attempt is refused, even with the right password and the plain spelling,
    # before the password is looked at; so is every other spelling.
    for variant in ["caop1", *VARIANTS[1:]]:
        refused = attempt(node, variant, PASSWORD)
        assert refused.status_code == 429, variant
        assert "Too many failed sign-in attempts" in refused.text
        assert "sessionid" not in refused.cookies
    # Every attempt was answered by a process of its own: what refused the sixth is the
    # count in the database, not a worker's memory.
    pids = _sign_in_pids(node.log)
    assert len(pids) == 2 * len(VARIANTS), node.log_tail()
    assert len(set(pids)) == len(pids), pids


def test_an_invitation_token_stays_out_of_the_access_log(node: GunicornNode) -> None:
    """Invitation links carry their token in the query string, which gunicorn's access log
    (like Django's request warnings) leaves out: an unused link never lands in a log."""
    probe = "invitation-token-probe-0123456789abcdef"
    answer = http_session().get(f"{node.url}/accounts/invitation/?token={probe}", timeout=30)
    assert answer.status_code == 404
    log = node.log.read_text(errors="replace")
    assert "/accounts/invitation/" in log
    assert probe not in log
