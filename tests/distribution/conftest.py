"""A live KMS for the key-distribution tests: pytest-django's `live_server` (real HTTP, the real
views) with its identity CAs and server certificate made by `distribution_bootstrap`.

Every test module here marks its tests `django_db(transaction=True, serialized_rollback=True)`
(the shared autouse fixture in tests/conftest.py relies on it). CAs cannot outlive a flush, so
each test makes its own: EC P-256 keys keep that cheap.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from audit.models import AuditEvent
from kmsclient.client import KMSClient, KMSClientError, enroll
from vault import clients, server_identity, services
from vault.models import Client, GrantVersions, SymmetricKey

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class LiveKMS:
    """The live server and helpers that act as the operator (through the services)."""

    url: str
    root_pem: str
    tmp_path: Path
    clients: list[KMSClient] = field(default_factory=list)

    @property
    def root_file(self) -> Path:
        path = self.tmp_path / "kms-root.pem"
        if not path.exists():
            path.write_text(self.root_pem)
        return path

    def key(self, name: str = "orders-db", **kwargs: Any) -> SymmetricKey:
        return services.symmetric_key_create(actor=None, name=name, **kwargs)

    def new_client(self, name: str) -> tuple[Client, str]:
        return clients.client_create(actor=None, name=name)

    def grant(
        self, client: Client | str, key: SymmetricKey, versions: str = GrantVersions.PRIMARY
    ) -> None:
        if isinstance(client, str):
            client = Client.objects.get(name=client)
        clients.grant_create(actor=None, client=client, key=key, versions=versions)

    def enrolled(self, name: str, **kwargs: Any) -> KMSClient:
        """A client registered, enrolled in-process through the library, ready to fetch."""
        _client, token = self.new_client(name)
        enroll(self.url, token, self.root_file, self.tmp_path / name)
        return self.client_for(name, **kwargs)

    def client_for(self, name: str, **kwargs: Any) -> KMSClient:
        """A library client for the enrolled `name` (e.g. with a tampering `session`)."""
        directory = self.tmp_path / name
        client = KMSClient.from_identity(directory, **kwargs)
        self.clients.append(client)  # closed after the test: no keep-alive outlives it
        return client

    def credentials(self, name: str) -> tuple[str, Any]:
        """(certificate PEM, private key) of an enrolled client, for hand-made requests."""
        directory = self.tmp_path / name
        key = serialization.load_pem_private_key((directory / "client.key").read_bytes(), None)
        return (directory / "client.crt").read_text(), key

    def cli(
        self, *args: str | Path, env: dict[str, str] | None = None, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`python -m kmsclient ...` as a separate process."""
        return subprocess.run(
            [sys.executable, "-m", "kmsclient", *map(str, args)],
            cwd=PROJECT_ROOT,
            env={**subprocess_env(), **(env or {})},
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def subprocess_env() -> dict[str, str]:
    """The environment of a client machine: no Django settings, loopback not proxied."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "kmsclient_dir")
        and k != "DJANGO_SETTINGS_MODULE"
    }
    env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1"
    return env


@pytest.fixture
def kms(live_server, settings, tmp_path: Path) -> Iterator[LiveKMS]:
    """A bootstrapped KMS behind the live server. Certificates name the live server's URL in
    their CRL distribution points, so clients download CRLs from it."""
    settings.KMS_IDENTITY_CA_KEY_TYPE = "ecp256"
    settings.KMS_PUBLIC_URL = live_server.url
    server_identity.distribution_bootstrap()
    root = server_identity.root_ca()
    assert root is not None
    live = LiveKMS(url=live_server.url, root_pem=root.certificate_pem, tmp_path=tmp_path)
    yield live
    for client in live.clients:
        client.close()


def refused(code: str, call: Any, *args: Any, **kwargs: Any) -> KMSClientError:
    """Call; it must raise KMSClientError with `code`."""
    with pytest.raises(KMSClientError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, str(caught.value)
    return caught.value


def last_refusal() -> AuditEvent:
    event = AuditEvent.objects.filter(action="key.fetch_refused").order_by("-sequence").first()
    assert event is not None, "the refusal was not audited"
    return event


def assert_refusal_audited(code: str, *, client: str | None = None, key: str | None = None) -> None:
    event = last_refusal()
    assert event.outcome == "denied"
    assert event.details["code"] == code
    if client is not None:
        # Refusals decided before the client is known (certificate checks) name the
        # certificate's subject instead.
        assert event.actor_name in (client, f"CN={client},O=kmsportal clients")
    if key is not None:
        assert event.details["key"] == key
