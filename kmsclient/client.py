"""The key-distribution client: enroll a service, then fetch the keys it was granted.

Depends on ``cryptography``, ``requests`` and ``kmsportal.crypto`` only (never Django), so it
runs on machines without the portal::

    from kmsclient.client import KMSClient

    kms = KMSClient.from_identity("/etc/billing/kms")      # what `enroll` wrote
    key = kms.fetch_key("orders-db")                        # 32 bytes, AES-256

Trust: the client trusts the root CA certificate it pinned at enrollment and the server
identity it learned there (docs/server-identity.md), nothing else. Before it derives anything
from a response it checks, in this order, and refuses at the first failure:

1. the server certificate chain in the response builds a path to the pinned root, every
   signature verifies, every certificate is valid now;
2. the leaf is this deployment's server identity: issued directly by the server-identity CA
   whose public key (SPKI SHA-256) was pinned at enrollment, naming the pinned deployment URI
   (``urn:kmsportal:deployment:<uuid>``), with the ``kms-server`` profile (serverAuth,
   digitalSignature, not a CA). Any other certificate, even one the same portal issued, is
   refused with ``untrusted_server_identity``;
3. the stapled OCSP response in the (signed) response: signed by that pinned CA, for this
   certificate, ``good``, and no older than ``max_status_age`` (default 10 minutes). No CRL
   is downloaded: a revoked server certificate is refused within that bound;
4. the server's signature over the whole transcript, with the leaf's key (this binds our
   request, our ephemeral key and every member of the response, the staple included); only
   then DH, HKDF and AES-GCM (``kmsportal.crypto.protocol.open_fetch_response``).

Every refusal, from the server (an RFC 9457 problem document) or from a local check, is a
:class:`KMSClientError` with a stable ``code`` and a one-line message naming the reason.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kmsclient.identity import (
    CONFIG_FILE,
    Identity,
    IdentityError,
    load_identity,
    resolve_identity_dir,
    write_config,
    write_file,
    write_secret_file,
)
from kmsclient.operations import OperationsMixin
from kmsportal.crypto import protocol
from kmsportal.crypto.dh import X25519
from kmsportal.crypto.protocol import FetchedKey
from kmsportal.crypto.server_identity import (
    DEFAULT_MAX_STATUS_AGE,
    ServerStatusError,
    check_server_status,
    deployment_uri_problem,
    server_identity_problem,
    spki_pin_problem,
)
from kmsportal.crypto.validation import validate_certificate
from kmsportal.crypto.x509 import (
    X509Error,
    build_csr,
    format_name,
    generate_private_key,
    load_certificate,
    parse_subject,
)

__all__ = [
    "ENROLL_PATH",
    "FETCH_PATH",
    "KEY_TYPES",
    "FetchedKey",
    "IdentityError",
    "KMSClient",
    "KMSClientError",
    "enroll",
    "pin_server",
    "problem_error",
]

ENROLL_PATH = "/api/v1/enroll"
FETCH_PATH = "/api/v1/keys/fetch"
KEY_TYPES = ("ecp256", "rsa2048", "rsa3072")
DEFAULT_TIMEOUT = 10.0
#: Default for ``max_status_age`` (seconds): the oldest stapled server status accepted.
DEFAULT_MAX_STATUS_AGE_SECONDS = int(DEFAULT_MAX_STATUS_AGE.total_seconds())
_MAX_MESSAGE_CHARS = 500


class KMSClientError(Exception):
    """A refusal: by the server (``origin == "server"``) or by a check of this client.

    ``str()`` is one line naming the reason, e.g. ``refused by server: no_grant: client
    billing has no grant for key 'x'``. ``status`` is the HTTP status of a server refusal,
    ``retry_after`` the seconds a rate-limited client should wait.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        origin: str = "client",
        status: int | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.code = code
        self.message = _one_line(message)
        self.origin = origin
        self.status = status
        self.retry_after = retry_after
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.origin == "server":
            return f"refused by server: {self.code}: {self.message}"
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:  # keep it picklable despite keyword-only args
        return (
            _rebuild_error,
            (self.code, self.message, self.origin, self.status, self.retry_after),
        )


def _signing_key(certificate: x509.Certificate) -> protocol.PublicKey:
    """The key of the server certificate that signs the exchange: RSA or EC, nothing else
    (protocol.open_fetch_response would refuse any other kind too)."""
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise KMSClientError("malformed_response", "the server certificate's key is not RSA or EC")
    return key


def _rebuild_error(*args: Any) -> KMSClientError:
    code, message, origin, status, retry_after = args
    return KMSClientError(code, message, origin=origin, status=status, retry_after=retry_after)


def _one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


# --- HTTP --------------------------------------------------------------------------------


def _base_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise IdentityError(f"the KMS URL must look like http(s)://host[:port], not {url!r}")
    return url.rstrip("/")


def _retry_after(response: requests.Response) -> int | None:
    value = response.headers.get("Retry-After", "").strip()
    return int(value) if value.isdigit() else None


def problem_error(response: requests.Response) -> KMSClientError:
    """The KMSClientError for a non-success answer: an RFC 9457 problem document gives its
    ``code`` and ``detail``; anything else (a proxy's HTML page) is ``unexpected_response``."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("code"), str) and body["code"]:
        detail = body.get("detail") or body.get("title") or f"HTTP {status}"
        return KMSClientError(
            body["code"],
            str(detail),
            origin="server",
            status=status,
            retry_after=_retry_after(response),
        )
    return KMSClientError(
        "unexpected_response",
        f"the KMS at {response.url} answered HTTP {status} {response.reason or ''} without a "
        "problem document (is the URL right, or is a proxy in the way?)",
        status=status,
        retry_after=_retry_after(response),
    )


def _post_json(
    session: requests.Session, url: str, body: dict[str, Any], timeout: float
) -> requests.Response:
    try:
        return session.post(
            url,
            data=json.dumps(body).encode("utf-8"),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise KMSClientError(
            "connection_failed", f"cannot reach the KMS at {url}: {type(exc).__name__}: {exc}"
        ) from None


def _json_answer(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise KMSClientError(
            "malformed_response", f"the KMS answer from {response.url} is not JSON"
        ) from None


# --- loading credentials -----------------------------------------------------------------

PathOrData = str | os.PathLike[str] | bytes


def _read(path: str | os.PathLike[str], what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise IdentityError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def _load_cert(value: x509.Certificate | PathOrData, what: str) -> x509.Certificate:
    if isinstance(value, x509.Certificate):
        return value
    data = value if isinstance(value, bytes) else _read(value, what)
    try:
        return load_certificate(data)
    except X509Error as exc:
        where = "" if isinstance(value, bytes) else f" {value}"
        raise IdentityError(f"{what}{where}: {exc}") from None


def _load_key(
    value: Any, what: str = "the client key"
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if isinstance(value, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return value
    data = value if isinstance(value, bytes) else _read(value, what)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"{what} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise IdentityError(f"{what} must be an RSA or EC key")
    return key


def _fingerprint(certificate: x509.Certificate) -> str:
    der = certificate.public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def _name(certificate: x509.Certificate) -> str:
    return format_name(certificate.subject) or f"serial {certificate.serial_number:X}"


def _failed_checks(report: Any) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in report.failed) or "no path to the root"


# --- the client --------------------------------------------------------------------------


def _status_age(value: float | timedelta) -> timedelta:
    age = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if age <= timedelta(0):
        raise IdentityError("the maximum age of the server's status must be positive")
    return age


def _not_pinned_message(directory: object = None) -> str:
    where = f" --dir {directory}" if directory else ""
    return (
        "untrusted_server_identity: no server identity is pinned for this client (it was enrolled before kmsclient "
        "pinned the KMS's server identity), so no server can be trusted yet: enroll again "
        "with a new token, or pin it with `python -m kmsclient pin-server"
        f"{where} --server-ca-spki <SHA-256> --deployment <urn>` using the values "
        "`manage.py bootstrap` printed on the KMS (docs/server-identity.md)"
    )


class KMSClient(OperationsMixin):
    """Fetch granted keys from a kmsportal KMS over the signed ephemeral-DH protocol.

    ``cert``, ``key`` and ``ca_cert`` are file paths, PEM/DER bytes, or loaded
    ``cryptography`` objects; ``ca_cert`` is the pinned root. ``server_ca_spki_sha256`` and
    ``deployment`` are the server identity pinned at enrollment (``from_identity`` reads
    them from ``kmsclient.json``); without them every fetch is refused. ``max_status_age``
    (seconds or a timedelta, default 600) is the oldest stapled status of the server's
    certificate accepted. ``clock`` returns the current time (aware UTC; for tests).
    ``session`` lets the caller supply a configured ``requests.Session`` (proxies, TLS).
    """

    def __init__(
        self,
        url: str,
        cert: x509.Certificate | PathOrData,
        key: Any,
        ca_cert: x509.Certificate | PathOrData,
        *,
        server_ca_spki_sha256: str | None = None,
        deployment: str | None = None,
        max_status_age: float | timedelta = DEFAULT_MAX_STATUS_AGE,
        timeout: float = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.url = _base_url(url)
        self.certificate = _load_cert(cert, "the client certificate")
        self._key = _load_key(key)
        self.root = _load_cert(ca_cert, "the pinned root CA certificate")
        if self.certificate.public_key() != self._key.public_key():
            raise IdentityError("the client key does not belong to the client certificate")
        if server_ca_spki_sha256:
            problem = spki_pin_problem(server_ca_spki_sha256)
            if problem:
                raise IdentityError(f"the pinned server-identity CA: {problem}")
        if deployment:
            problem = deployment_uri_problem(deployment)
            if problem:
                raise IdentityError(f"the pinned deployment: {problem}")
        self.server_ca_spki_sha256 = server_ca_spki_sha256 or ""
        self.deployment = deployment or ""
        self.max_status_age = _status_age(max_status_age)
        self._cert_pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode()
        self.timeout = timeout
        self.session = session if session is not None else requests.Session()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._directory: object = None

    def __repr__(self) -> str:
        return f"<KMSClient {self.url} as {_name(self.certificate)}>"

    def close(self) -> None:
        """Close the HTTP connections kept open for the next request."""
        self.session.close()

    def __enter__(self) -> KMSClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def from_identity(
        cls, directory: str | os.PathLike[str] | None = None, **kwargs: Any
    ) -> KMSClient:
        """A client for the identity `enroll` stored in ``directory`` (default: ``--dir``
        rules: ``$KMSCLIENT_DIR``, else the current directory)."""
        identity = load_identity(resolve_identity_dir(directory))
        kwargs.setdefault("server_ca_spki_sha256", identity.server_ca_spki_sha256)
        kwargs.setdefault("deployment", identity.deployment)
        client = cls(identity.url, identity.cert, identity.key, identity.ca_cert, **kwargs)
        client._directory = identity.directory
        return client

    # -- public API

    def fetch_key(self, name: str, version: int | None = None, group: str = X25519) -> bytes:
        """The material of key ``name`` (its primary version unless ``version`` is given)."""
        return self.fetch(name, version, group=group).material

    def fetch(self, name: str, version: int | None = None, group: str = X25519) -> FetchedKey:
        """Like :meth:`fetch_key`, also telling which version was delivered."""
        if not self.server_ca_spki_sha256 or not self.deployment:
            raise KMSClientError("untrusted_server_identity", _not_pinned_message(self._directory))
        try:
            body, state = protocol.build_fetch_request(
                key_name=name,
                version=version,
                group=group,
                client_certificate_pem=self._cert_pem,
                client_private_key=self._key,
                now=self._clock(),
            )
        except protocol.ProtocolError as exc:
            raise KMSClientError(exc.code, f"cannot ask for that: {exc.message}") from None
        response = _post_json(self.session, self.url + FETCH_PATH, body, self.timeout)
        if response.status_code != 200:
            raise problem_error(response)
        answer = _json_answer(response)
        leaf = self._verify_server(answer)
        try:
            return protocol.open_fetch_response(
                state=state, response=answer, trusted_server_public_key=_signing_key(leaf)
            )
        except protocol.ProtocolError as exc:
            raise KMSClientError(
                exc.code, f"rejected the KMS's response: {exc.code}: {exc.message}"
            ) from None

    # -- checks

    def _verify_server(self, answer: Any) -> x509.Certificate:
        """Steps 1-3: the leaf of the response's chain, validated; KMSClientError if not."""
        now = self._clock()
        leaf, issuer = verify_server_identity(
            answer.get("server_certificate_chain") if isinstance(answer, dict) else None,
            root=self.root,
            ca_spki_sha256=self.server_ca_spki_sha256,
            deployment=self.deployment,
            now=now,
        )
        status = answer.get("server_status")
        try:
            der = base64.b64decode(status, validate=True) if isinstance(status, str) else b""
        except ValueError:
            der = b""
        try:
            check_server_status(der, leaf=leaf, issuer=issuer, now=now, max_age=self.max_status_age)
        except ServerStatusError as exc:
            raise KMSClientError(exc.code, f"rejected the KMS's response: {exc.message}") from None
        return leaf


def verify_server_identity(
    chain: Any, *, root: x509.Certificate, ca_spki_sha256: str, deployment: str, now: datetime
) -> tuple[x509.Certificate, x509.Certificate]:
    """(leaf, its issuer) of a server certificate chain (PEMs, leaf first) that is this
    deployment's server identity under ``root``; else KMSClientError
    ``untrusted_server_identity`` naming the reason (``malformed_response`` for a chain
    that is not a list of certificates)."""
    try:
        leaf = protocol.server_leaf_certificate({"server_certificate_chain": chain})
    except protocol.ProtocolError as exc:
        raise KMSClientError(
            exc.code, f"rejected the KMS's response: {exc.code}: {exc.message}"
        ) from None
    intermediates = []
    for position, pem in enumerate(chain[1:], start=2):
        try:
            intermediates.append(load_certificate(pem.encode("ascii")))
        except X509Error as exc:
            raise KMSClientError(
                "bad_certificate",
                f"rejected the KMS's response: certificate {position} of its chain: {exc}",
            ) from None
    report = validate_certificate(
        leaf=leaf,
        intermediates=intermediates,
        trust_roots=[root],
        purpose="server",
        hostname=None,
        now=now,
    )
    if not report.ok or len(report.path) < 2:
        raise KMSClientError(
            "untrusted_server_identity",
            f"untrusted_server_identity: the server certificate {_name(leaf)!r} is not "
            f"trusted: {_failed_checks(report)}",
        )
    issuer = report.path[1]
    problem = server_identity_problem(
        leaf, issuer, ca_spki_sha256=ca_spki_sha256, deployment=deployment
    )
    if problem:
        raise KMSClientError(
            "untrusted_server_identity",
            f"untrusted_server_identity: the server certificate {_name(leaf)!r} is not this "
            f"KMS's server identity: {problem}",
        )
    return leaf, issuer


# --- enrollment --------------------------------------------------------------------------


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _parse_certificates(values: Iterable[Any], what: str) -> list[x509.Certificate]:
    certificates = []
    for value in values:
        if not isinstance(value, str):
            raise KMSClientError("malformed_response", f"{what} must be PEM strings")
        try:
            certificates.append(load_certificate(value.encode("ascii")))
        except (X509Error, UnicodeEncodeError) as exc:
            raise KMSClientError("malformed_response", f"{what}: {exc}") from None
    return certificates


def enroll(
    url: str,
    token: str,
    ca_cert_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    key_type: str = "ecp256",
    timeout: float = DEFAULT_TIMEOUT,
    force: bool = False,
    session: requests.Session | None = None,
) -> Identity:
    """Enroll with a one-time token: make a key here, send only a CSR, store the result.

    The answer's root must be the root in ``ca_cert_path`` (pinned: obtained independently)
    and the returned chain must lead from our new certificate to it, else KMSClientError and
    nothing but the (already written, 0600) private key is kept; that key is removed again.
    Raises IdentityError for local problems (unreadable root, an identity already in
    ``out_dir`` without ``force``).
    """
    base = _base_url(url)
    if key_type not in KEY_TYPES:
        raise IdentityError(f"key type must be one of {', '.join(KEY_TYPES)}")
    if not token:
        raise IdentityError("the enrollment token is empty")
    try:
        protocol.enrollment_token_keys(token)  # its form, before a key is made
    except protocol.ProtocolError as exc:
        raise IdentityError(exc.message) from None
    pinned = _load_cert(ca_cert_path, "the root CA certificate")
    try:
        is_ca = pinned.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise IdentityError(f"{ca_cert_path} is not a CA certificate; pass the KMS's root CA")

    directory = Path(out_dir)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise IdentityError(f"cannot create {directory}: {exc.strerror or exc}") from None
    names = {"cert": "client.crt", "key": "client.key", "chain": "chain.pem", "ca_cert": "ca.pem"}
    if not force:
        existing = [n for n in (CONFIG_FILE, *names.values()) if (directory / n).exists()]
        if existing:
            raise IdentityError(
                f"{directory} already holds an identity ({', '.join(existing)}); use another "
                "directory or --force to replace it"
            )

    private_key = generate_private_key(key_type)
    # The key is written (0600) before the token is spent, under a temporary name that
    # becomes client.key only once the whole identity is stored: a failed enrollment leaves
    # any previous identity in the directory intact.
    pending = directory / (names["key"] + ".new")
    try:
        pending.unlink(missing_ok=True)
        write_secret_file(
            pending,
            private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    except OSError as exc:
        raise IdentityError(f"cannot write {pending}: {exc.strerror or exc}") from None
    try:
        identity = _enroll_with_key(
            base, token, pinned, private_key, directory, names, timeout, session
        )
        os.replace(pending, identity.key)
        write_config(identity)  # last: a directory with a config is a complete identity
    except OSError as exc:
        pending.unlink(missing_ok=True)
        raise IdentityError(
            f"cannot store the identity in {directory}: {exc.strerror or exc}"
        ) from None
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    return identity


def _enroll_with_key(
    base: str,
    token: str,
    pinned: x509.Certificate,
    private_key: Any,
    directory: Path,
    names: dict[str, str],
    timeout: float,
    session: requests.Session | None,
) -> Identity:
    csr = build_csr(private_key=private_key, subject=parse_subject("CN=kmsclient enrollment"))
    try:
        # The token never travels: the request proves it with a MAC over the CSR.
        body, state = protocol.build_enroll_request(token=token, csr_pem=csr.decode("ascii"))
    except protocol.ProtocolError as exc:
        raise IdentityError(exc.message) from None
    if session is None:
        with requests.Session() as own_session:
            response = _post_json(own_session, base + ENROLL_PATH, body, timeout)
    else:
        response = _post_json(session, base + ENROLL_PATH, body, timeout)
    if response.status_code != 201:
        raise problem_error(response)
    try:
        opened = protocol.open_enroll_response(state=state, response=_json_answer(response))
    except protocol.ProtocolError as exc:
        raise KMSClientError(
            exc.code, f"rejected the enrollment answer: {exc.code}: {exc.message}"
        ) from None
    answer = opened.members
    if not isinstance(answer["chain"], list) or not answer["chain"]:
        raise KMSClientError("malformed_response", "the enrollment answer has no chain")
    (leaf,) = _parse_certificates([answer["certificate"]], "the certificate")
    chain = _parse_certificates(answer["chain"], "the chain")
    (root,) = _parse_certificates([answer["root_ca_certificate"]], "the root CA certificate")

    if _fingerprint(root) != _fingerprint(pinned):
        raise KMSClientError(
            "root_mismatch",
            f"the KMS's root CA {_name(root)!r} (SHA-256 {_fingerprint(root)[:16]}…) is not the "
            f"root you pinned with --ca-cert, {_name(pinned)!r} (SHA-256 "
            f"{_fingerprint(pinned)[:16]}…): refusing to enroll",
        )
    if _fingerprint(chain[0]) != _fingerprint(leaf):
        raise KMSClientError("malformed_response", "the chain does not start with the certificate")
    if leaf.public_key() != private_key.public_key():
        raise KMSClientError(
            "certificate_mismatch", "the KMS returned a certificate for another key"
        )
    report = validate_certificate(
        leaf=leaf, intermediates=chain[1:], trust_roots=[pinned], purpose="client", hostname=None
    )
    if not report.ok:
        raise KMSClientError(
            "untrusted_certificate",
            f"the certificate the KMS issued does not lead to the pinned root: "
            f"{_failed_checks(report)}",
        )

    # The server identity to pin: the answer is authenticated by our token (MAC checked
    # above), and the server identity it names must also hold up on its own: its chain
    # leads to the root we pinned, its certificate is issued by the named CA key and names
    # the deployment, and its key signed this very answer.
    pin = answer["server_identity"]
    for problem in (
        spki_pin_problem(pin["ca_spki_sha256"]),
        deployment_uri_problem(pin["deployment"]),
    ):
        if problem:
            raise KMSClientError("malformed_response", f"the enrollment answer: {problem}")
    server_leaf, _issuer = verify_server_identity(
        answer["server_certificate_chain"],
        root=pinned,
        ca_spki_sha256=pin["ca_spki_sha256"],
        deployment=pin["deployment"],
        now=datetime.now(UTC),
    )
    if not opened.signature_verifies(_signing_key(server_leaf)):
        raise KMSClientError(
            "bad_server_signature",
            "the enrollment answer is not signed by the KMS's server identity",
        )

    identity = Identity(
        directory=directory,
        url=base,
        client=str(answer["client"]),
        not_after=str(answer.get("not_after", "")),
        server_ca_spki_sha256=pin["ca_spki_sha256"],
        deployment=pin["deployment"],
        **{k: directory / v for k, v in names.items()},
    )
    write_file(identity.cert, _pem(leaf))
    write_file(identity.chain, b"".join(_pem(c) for c in chain))
    write_file(identity.ca_cert, _pem(pinned))
    return identity


def pin_server(
    directory: str | os.PathLike[str], *, server_ca_spki_sha256: str, deployment: str
) -> Identity:
    """Pin the KMS's server identity in an identity directory enrolled before pinning
    existed (or replace the pin after the KMS's server-identity CA was re-created). The two
    values must come from the KMS's operator over a channel you trust (``manage.py
    bootstrap`` prints them): whatever is pinned here is what the client will trust."""
    spki = server_ca_spki_sha256.strip().lower().replace(":", "")
    for problem in (spki_pin_problem(spki), deployment_uri_problem(deployment)):
        if problem:
            raise IdentityError(problem)
    identity = load_identity(directory)
    pinned = dataclasses.replace(identity, server_ca_spki_sha256=spki, deployment=deployment)
    try:
        write_config(pinned)
    except OSError as exc:
        raise IdentityError(f"cannot write {identity.directory}: {exc.strerror or exc}") from None
    return pinned


def encode_key(material: bytes) -> str:
    """Base64 of key material, as ``fetch --stdout`` prints it."""
    return base64.b64encode(material).decode("ascii")
