"""A new user's first run, from a fresh copy of the repository: `make run` on another
`GUNICORN_BIND` writes that address into every certificate, `manage.py` works in a new
shell, and a service enrolls and fetches a key with kmsclient's command line."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509

from tests.firstrun.test_trial_settings import new_shell_environment

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 240  # migrate a fresh SQLite database, bootstrap (two RSA-3072 CA keys), serve

pytestmark = pytest.mark.slow


def fresh_copy(destination: Path) -> Path:
    """The repository as `git clone` would give it (tracked and new, not ignored, files), with
    the test run's virtualenv linked in so `make run` installs nothing."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            target = destination / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    (destination / ".venv").symlink_to(Path(sys.prefix))
    assert not (destination / ".kms").exists()
    return destination


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_serving(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"make run stopped ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            # A worker that is still booting (Django's import takes seconds on a loaded
            # machine) answers late: wait for it rather than count a read timeout as failure.
            if requests.get(f"{url}/healthz", timeout=15).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass
        time.sleep(0.5)
    pytest.fail(f"make run did not serve {url} in {START_TIMEOUT}s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def make_run(checkout: Path, log: Path) -> Iterator[str]:
    """`make run` in ``checkout`` with GUNICORN_BIND on a free port (no KMS_PUBLIC_URL), until
    the block ends; yields the address it serves."""
    port = free_port()
    env = new_shell_environment(GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="1")
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["make", "-o", ".venv/.runtime-installed", "run"],
            cwd=checkout,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: make, gunicorn and workers
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, log)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


@pytest.fixture
def trial(tmp_path: Path) -> Iterator[tuple[Path, str, Path]]:
    """`make run` in a fresh copy of the repository on another port."""
    checkout = fresh_copy(tmp_path / "kmsportal")
    log = tmp_path / "make-run.log"
    with make_run(checkout, log) as url:
        yield checkout, url, log


def run(args: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


KMSCLIENT = [sys.executable, "-m", "kmsclient"]  # its public command line


def key_client_and_grant(checkout: Path) -> str:
    """The operator, with manage.py in a new shell: a key and a client from the commands, the
    grant through the service (the grant command asks a second custodian, who a trial does
    not have yet); returns the enrollment token."""
    shell = new_shell_environment()
    manage = [str(checkout / ".venv/bin/python"), "manage.py"]
    run([*manage, "key_create", "shared-db"], cwd=checkout, env=shell)
    created = run([*manage, "client_create", "billing"], cwd=checkout, env=shell)
    grant = (
        "from vault import clients; from vault.models import Client, SymmetricKey; "
        "clients.grant_create(actor=None, client=Client.objects.get(name='billing'), "
        "key=SymmetricKey.objects.get(name='shared-db'))"
    )
    run([*manage, "shell", "--no-imports", "-c", grant], cwd=checkout, env=shell)
    return re.search(r"\): ([0-9a-f]{32,})", created).group(1)


def enroll(url: str, token: str, service: Path, checkout: Path) -> tuple[str, dict[str, str]]:
    """Pin the root and enroll, as the token page says, from the service's own directory."""
    service.mkdir()
    root = requests.get(f"{url}/pki/ca/kms-root.pem", timeout=10).content
    (service / "root.pem").write_bytes(root)
    client_env = {**new_shell_environment(), "PYTHONPATH": str(checkout)}
    arguments = ["enroll", "--url", url, f"--token={token}", "--ca-cert", "root.pem", "--out", "id"]
    return run([*KMSCLIENT, *arguments], cwd=service, env=client_env), client_env


def fetch(service: Path, client_env: dict[str, str]) -> str:
    arguments = ["fetch", "shared-db", "--dir", "id", "--out", "shared-db.key", "--force"]
    return run([*KMSCLIENT, *arguments], cwd=service, env=client_env)


def test_first_run_on_another_bind_address(trial, tmp_path: Path) -> None:
    checkout, url, log = trial
    printed = log.read_text()
    assert f"Sign in at {url}/ as: admin" in printed
    assert "127.0.0.1:8000" not in printed
    assert "serving with the trial settings of" in printed  # said loudly, never silently

    # Every CA and the key server's certificate name this address.
    clients_ca = x509.load_der_x509_certificate(
        requests.get(f"{url}/pki/ca/kms-clients.crt", timeout=10).content
    )
    points = clients_ca.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [p.full_name[0].value for p in points] == [f"{url}/pki/crl/kms-root.crl"]

    # manage.py in a new shell: no variables at all, the trial settings come from .kms/.
    shell = new_shell_environment()
    manage = [str(checkout / ".venv/bin/python"), "manage.py"]
    assert "already" in run([*manage, "reissue_public_urls", "--dry-run"], cwd=checkout, env=shell)
    token = key_client_and_grant(checkout)

    # The service machine: kmsclient's command line, from another directory.
    service = tmp_path / "service"
    enrolled, client_env = enroll(url, token, service, checkout)
    assert "enrolled as billing" in enrolled
    identity = x509.load_pem_x509_certificate((service / "id" / "client.crt").read_bytes())
    aia = identity.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert {d.access_location.value for d in aia} == {
        f"{url}/pki/ca/kms-clients.crt",
        f"{url}/pki/ocsp/kms-clients",
    }
    assert "fetched shared-db version 1" in fetch(service, client_env)
    assert len((service / "shared-db.key").read_bytes()) == 32

    # The portal's own error page, never Django's debug page with the URL configuration.
    missing = requests.get(f"{url}/no/such/page", timeout=10)
    assert missing.status_code == 404
    assert "There is nothing at this address" in missing.text
    assert "URLconf" not in missing.text and "DEBUG = True" not in missing.text


def test_a_trial_moved_to_another_port_is_fixed_by_reissue_public_urls(tmp_path: Path) -> None:
    checkout = fresh_copy(tmp_path / "kmsportal")
    with make_run(checkout, tmp_path / "first.log") as first_url:
        pass
    with make_run(checkout, tmp_path / "second.log") as url:
        printed = (tmp_path / "second.log").read_text()
        # Start-up names what still points at the first address, and the fix.
        assert f"The CA kms-clients names {first_url}/pki/crl/kms-root.crl" in printed
        assert "run `manage.py reissue_public_urls`" in printed

        shell = new_shell_environment()
        manage = [str(checkout / ".venv/bin/python"), "manage.py"]
        reissued = run([*manage, "reissue_public_urls"], cwd=checkout, env=shell)
        assert "Re-issued CA kms-clients" in reissued
        assert "Renewed the key server certificate" in reissued
        clients_ca = x509.load_der_x509_certificate(
            requests.get(f"{url}/pki/ca/kms-clients.crt", timeout=10).content
        )
        points = clients_ca.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert [p.full_name[0].value for p in points] == [f"{url}/pki/crl/kms-root.crl"]

        # A service enrolled now fetches through the new address (the server certificate's
        # revocation is checked there).
        token = key_client_and_grant(checkout)
        service = tmp_path / "service"
        enrolled, client_env = enroll(url, token, service, checkout)
        assert "enrolled as billing" in enrolled
        assert "fetched shared-db version 1" in fetch(service, client_env)
