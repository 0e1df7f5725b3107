"""The KMS's own identity: the identity CAs, the deployment, the server certificate.

`distribution_bootstrap` creates what is missing (root CA, client-identity CA,
server-identity CA, deployment id, the KMS's `kms-server` certificate); the server
credential (private key and chain) signs every exchange answer; the stapled status of its
certificate goes with every answer.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from audit.services import audit_event_record
from kmsportal.crypto.server_identity import spki_sha256
from kmsportal.crypto.x509 import (
    build_csr,
    generate_private_key,
    load_certificate,
    parse_subject,
    private_key_from_der,
    private_key_to_der,
)
from kmsportal.keyring.services import seal, unseal
from pki.errors import PkiError
from pki.ocsp import certificate_status_staple
from pki.selectors import (
    ca_by_name,
    ca_server_identity,
    certificate_by_id,
    certificate_chain_pems,
)
from pki.services import certificate_authority_create, server_identity_certificate_issue

from .events import VaultAction
from .models import Deployment, ServerIdentity
from .refusals import DistributionError, FetchRefused

if TYPE_CHECKING:  # annotations only: vault reads pki through pki.selectors
    from pki.models import CertificateAuthority

SERVER_PROFILE = "kms-server"


def identity_ca() -> CertificateAuthority | None:
    return ca_by_name(name=settings.KMS_IDENTITY_CA_NAME)


def root_ca() -> CertificateAuthority | None:
    return ca_by_name(name=settings.KMS_ROOT_CA_NAME)


def server_identity_ca() -> CertificateAuthority | None:
    """The deployment's server-identity CA (at most one is marked, a database constraint)."""
    return ca_server_identity()


def deployment() -> Deployment | None:
    return Deployment.objects.order_by("created_at").first()


@dataclass(frozen=True)
class ServerIdentityPin:
    """What a client pins next to the root: the server-identity CA's key and the deployment."""

    ca_spki_sha256: str
    deployment: str

    def as_json(self) -> dict[str, str]:
        return {"ca_spki_sha256": self.ca_spki_sha256, "deployment": self.deployment}


def server_identity_pin() -> ServerIdentityPin | None:
    ca = server_identity_ca()
    current = deployment()
    if ca is None or current is None:
        return None
    return ServerIdentityPin(
        ca_spki_sha256=spki_sha256(load_certificate(bytes(ca.certificate_der))),
        deployment=current.uri,
    )


def _server_identity_prerequisites() -> tuple[list[str], CertificateAuthority, Deployment]:
    """Create, when missing, the server-identity CA (under the root) and the deployment id.

    Existing deployments (from before issue 13) get both the first time `bootstrap` or
    `server_cert_renew` runs; the KMS's certificate is then re-issued from the new CA."""
    done = []
    root = root_ca()
    if root is None:
        raise DistributionError("no root CA; run `manage.py bootstrap` first")
    ca = server_identity_ca()
    if ca is None:
        name = settings.KMS_SERVER_IDENTITY_CA_NAME
        if ca_by_name(name=name) is not None:
            raise DistributionError(
                f"a CA named {name!r} exists but is not the server-identity CA; set "
                "KMS_SERVER_IDENTITY_CA_NAME to a free name"
            )
        ca = certificate_authority_create(
            actor=None,
            name=name,
            # Subjects are unique per portal (relying parties find issuers by name); a
            # random suffix keeps a re-created server-identity CA apart from a former one.
            subject=f"CN=kmsportal server identity CA {secrets.token_hex(4)},O=kmsportal",
            parent=root,
            key_type=settings.KMS_IDENTITY_CA_KEY_TYPE,
            server_identity=True,
        )
        done.append(f"created the server-identity CA {ca.name}")
    current = deployment()
    if current is None:
        with transaction.atomic():
            current = Deployment.objects.create()
            audit_event_record(
                action=VaultAction.DEPLOYMENT_CREATED,
                target=current,
                target_label=current.uri,
                details={"deployment": current.uri},
            )
        done.append(f"created the deployment identity {current.uri}")
    return done, ca, current


def distribution_bootstrap() -> list[str]:
    """Create, when missing, the root CA, the client-identity CA under it, the server-identity
    CA, the deployment identity and the KMS's own `kms-server` certificate (re-issued when the
    current one is not from the server-identity CA or does not name the deployment).
    Idempotent; returns what it did, for `bootstrap` to print."""
    done = []
    root = root_ca()
    key_type = settings.KMS_IDENTITY_CA_KEY_TYPE
    if root is None:
        root = certificate_authority_create(
            actor=None,
            name=settings.KMS_ROOT_CA_NAME,
            subject="CN=kmsportal root CA,O=kmsportal",
            key_type=key_type,
        )
        done.append(f"created root CA {root.name}")
    if identity_ca() is None:
        ca = certificate_authority_create(
            actor=None,
            name=settings.KMS_IDENTITY_CA_NAME,
            subject="CN=kmsportal client identity CA,O=kmsportal",
            parent=root,
            key_type=key_type,
        )
        done.append(f"created client identity CA {ca.name}")
    created, server_ca, current = _server_identity_prerequisites()
    done.extend(created)
    newest = ServerIdentity.objects.first()
    newest_certificate = None if newest is None else certificate_by_id(pk=newest.certificate_id)
    if (
        newest_certificate is None
        or newest_certificate.ca_id != server_ca.pk
        or f"uri:{current.uri}" not in newest_certificate.san_list
    ):
        identity = server_identity_renew()
        done.append(f"issued the KMS server certificate (serial {identity.certificate.serial_hex})")
    return done


def _server_host() -> str:
    return settings.KMS_PUBLIC_URL.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]


@transaction.atomic
def server_identity_renew() -> ServerIdentity:
    """Issue a fresh `kms-server` certificate (new sealed key) from the server-identity CA,
    naming this deployment; creates that CA and the deployment id first if missing."""
    _done, ca, current = _server_identity_prerequisites()
    host = _server_host()
    private_key = generate_private_key("ecp256")
    csr = build_csr(private_key=private_key, subject=parse_subject("CN=kmsportal key server"))
    host_san = f"ip:{host}" if host.replace(".", "").isdigit() else f"dns:{host}"
    record = server_identity_certificate_issue(
        ca=ca,
        csr_pem_or_der=csr,
        subject="CN=kmsportal key server,O=kmsportal",
        sans=[host_san, f"uri:{current.uri}"],
    )
    identity = ServerIdentity(certificate=record, sealed_private_key=b"")
    identity.sealed_private_key = seal(private_key_to_der(private_key), aad=identity.aad)
    del private_key
    identity.save(force_insert=True)
    audit_event_record(
        action=VaultAction.SERVER_CERTIFICATE_ISSUED,
        target=record,
        target_label=record.subject,
        details={
            "serial": record.serial_hex,
            "not_after": record.not_after.isoformat(),
            "ca": ca.name,
            "deployment": current.uri,
        },
    )
    _server_cache.clear()
    return identity


# The server's credential (its unsealed private key and chain), per process and never in
# Django's cache: with CACHE_URL that is a Redis every node and anyone with its password can
# read, and an unsealed private key must never leave this process's memory. It needs no
# invalidation message either: a renewal adds a newer ServerIdentity row, which the next
# fetch reads (`server_credential_of`), on every server.
_server_lock = threading.Lock()
_server_cache: dict[str, Any] = {}


def server_credential() -> tuple[Any, list[str]]:
    """(private key, chain PEMs leaf first) of the newest server identity, loaded once."""
    credential = server_credential_of(ServerIdentity.objects.values_list("pk", flat=True).first())
    return credential.key, credential.chain


@dataclass(frozen=True)
class ServerCredential:
    """The KMS's signing credential: its unsealed private key (process memory only) and its
    chain, leaf first."""

    identity_id: uuid.UUID
    certificate_id: int
    key: Any
    chain: list[str]


def server_credential_of(identity_id: uuid.UUID | None) -> ServerCredential:
    """The credential of server identity `identity_id`, which the caller read as the newest
    (the key fetch does, in its one query). Loaded once per process: a renewal adds a newer
    row (rows never change in place), so the next fetch on every server loads that one."""
    if identity_id is None:
        raise FetchRefused("server_not_ready", "the key server has no certificate yet", 503)
    with _server_lock:
        cached = _server_cache.get("credential")
        if cached is None or cached.identity_id != identity_id:
            identity = ServerIdentity.objects.get(pk=identity_id)
            key = private_key_from_der(unseal(bytes(identity.sealed_private_key), aad=identity.aad))
            chain = certificate_chain_pems(
                certificate=certificate_by_id(pk=identity.certificate_id)
            )
            cached = ServerCredential(identity.pk, identity.certificate_id, key, chain)
            _server_cache["credential"] = cached
        return cached


def server_status_staple(certificate_id: int) -> bytes:
    """The stapled status of the KMS's own certificate: a signed OCSP response, kept in
    Django's cache (Redis when several servers run, so every worker and node shares one) and
    renewed every KMS_SERVER_STATUS_REFRESH_SECONDS, well inside the 10 minutes clients
    accept by default. A revocation of the server certificate reaches every client within
    refresh + their maximum age; no fetch ever costs a CRL download or a signature beyond
    the one renewal per period."""
    name = f"kms:server-status:{certificate_id}"
    der: bytes | None = cache.get(name)
    if der is None:
        try:
            der = certificate_status_staple(certificate=certificate_by_id(pk=certificate_id))
        except PkiError as exc:
            raise FetchRefused(
                "server_not_ready", "the key server cannot state its certificate's status", 503
            ) from exc
        cache.set(name, der, timeout=settings.KMS_SERVER_STATUS_REFRESH_SECONDS)
    return der
