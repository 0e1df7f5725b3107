"""The key-distribution client: enroll a service, then fetch the keys it was granted.

Depends on ``cryptography``, ``requests`` and ``kmsportal.crypto`` only (never Django), so it
runs on machines without the portal::

    from kmsclient.client import KMSClient

    kms = KMSClient.from_identity("/etc/billing/kms")      # what `enroll` wrote
    key = kms.fetch_key("orders-db")                        # 32 bytes, AES-256

Trust: the only thing the client trusts is the root CA certificate it pinned at enrollment.
Before it derives anything from a response it checks, in this order, and refuses at the
first failure:

1. the server certificate chain in the response builds a path to the pinned root, every
   signature verifies, every certificate is valid now;
2. the leaf is a ``kms-server`` certificate: extendedKeyUsage serverAuth, digitalSignature,
   not a CA;
3. no certificate of that path (below the root) is revoked, according to the CRL at its CRL
   distribution point: downloaded, signature checked with the issuing CA's certificate from
   the (validated) chain, current (thisUpdate <= now < nextUpdate). A CRL that cannot be had
   is a refusal, not a shrug ("cannot check revocation of the server certificate: ...").
   CRLs are cached per process until their nextUpdate;
4. the server's signature over the whole transcript, with the leaf's key (this binds our
   request, our ephemeral key and every member of the response); only then DH, HKDF and
   AES-GCM (``kmsportal.crypto.protocol.open_fetch_response``).

Every refusal, from the server (an RFC 9457 problem document) or from a local check, is a
:class:`KMSClientError` with a stable ``code`` and a one-line message naming the reason.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from kmsclient.crl import CRLInputError, CRLInvalid, delta_revocation, format_serial
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
from kmsportal.crypto import protocol
from kmsportal.crypto.crl import (
    CRLError,
    crl_is_fresh,
    crl_summary,
    load_crl,
    revoked_serials,
    verify_crl_signature,
)
from kmsportal.crypto.dh import X25519
from kmsportal.crypto.protocol import FetchedKey
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
    "clear_crl_cache",
    "enroll",
    "problem_error",
]

ENROLL_PATH = "/api/v1/enroll"
FETCH_PATH = "/api/v1/keys/fetch"
KEY_TYPES = ("ecp256", "rsa2048", "rsa3072")
DEFAULT_TIMEOUT = 10.0
#: Largest CRL the client downloads (a CRL of 100k entries is about 4 MiB).
MAX_CRL_BYTES = 16 * 1024 * 1024
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
    return format_name(certificate.subject) or f"serial {format_serial(certificate.serial_number)}"


def _failed_checks(report: Any) -> str:
    return "; ".join(f"{c.name}: {c.detail}" for c in report.failed) or "no path to the root"


# --- CRLs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _CachedCRL:
    next_update: datetime
    this_update: datetime
    revoked: dict[int, Any]


_crl_lock = threading.Lock()
_crl_cache: dict[tuple[str, str], _CachedCRL] = {}


def clear_crl_cache() -> None:
    """Forget every cached CRL (they are otherwise kept until their nextUpdate)."""
    with _crl_lock:
        _crl_cache.clear()


def _crl_urls(certificate: x509.Certificate) -> list[str]:
    try:
        points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        name.value
        for point in points
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
        and urlsplit(name.value).scheme in ("http", "https")
    ]


# --- the client --------------------------------------------------------------------------


class KMSClient:
    """Fetch granted keys from a kmsportal KMS over the signed ephemeral-DH protocol.

    ``cert``, ``key`` and ``ca_cert`` are file paths, PEM/DER bytes, or loaded
    ``cryptography`` objects; ``ca_cert`` is the pinned root. ``check_revocation=False``
    skips step 3 above (only for a KMS whose CRLs cannot be reached; the server's signature
    is still checked). ``session`` lets the caller supply a configured ``requests.Session``
    (proxies, TLS settings).
    """

    def __init__(
        self,
        url: str,
        cert: x509.Certificate | PathOrData,
        key: Any,
        ca_cert: x509.Certificate | PathOrData,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        check_revocation: bool = True,
        session: requests.Session | None = None,
    ) -> None:
        self.url = _base_url(url)
        self.certificate = _load_cert(cert, "the client certificate")
        self._key = _load_key(key)
        self.root = _load_cert(ca_cert, "the pinned root CA certificate")
        if self.certificate.public_key() != self._key.public_key():
            raise IdentityError("the client key does not belong to the client certificate")
        self._cert_pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode()
        self.timeout = timeout
        self.check_revocation = check_revocation
        self.session = session if session is not None else requests.Session()

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
        return cls(identity.url, identity.cert, identity.key, identity.ca_cert, **kwargs)

    # -- public API

    def fetch_key(self, name: str, version: int | None = None, group: str = X25519) -> bytes:
        """The material of key ``name`` (its primary version unless ``version`` is given)."""
        return self.fetch(name, version, group=group).material

    def fetch(self, name: str, version: int | None = None, group: str = X25519) -> FetchedKey:
        """Like :meth:`fetch_key`, also telling which version was delivered."""
        try:
            body, state = protocol.build_fetch_request(
                key_name=name,
                version=version,
                group=group,
                client_certificate_pem=self._cert_pem,
                client_private_key=self._key,
            )
        except protocol.ProtocolError as exc:
            raise KMSClientError(exc.code, f"cannot ask for that: {exc.message}") from None
        response = _post_json(self.session, self.url + FETCH_PATH, body, self.timeout)
        if response.status_code != 200:
            raise problem_error(response)
        answer = _json_answer(response)
        leaf = self._verify_server_chain(answer)
        try:
            return protocol.open_fetch_response(
                state=state, response=answer, trusted_server_public_key=leaf.public_key()
            )
        except protocol.ProtocolError as exc:
            raise KMSClientError(
                exc.code, f"rejected the KMS's response: {exc.code}: {exc.message}"
            ) from None

    # -- checks

    def _verify_server_chain(self, answer: Any) -> x509.Certificate:
        """Steps 1-3: the leaf of the response's chain, validated; KMSClientError if not."""
        try:
            leaf = protocol.server_leaf_certificate(answer)
        except protocol.ProtocolError as exc:
            raise KMSClientError(
                exc.code, f"rejected the KMS's response: {exc.code}: {exc.message}"
            ) from None
        intermediates = []
        for position, pem in enumerate(answer["server_certificate_chain"][1:], start=2):
            try:
                intermediates.append(load_certificate(pem.encode("ascii")))
            except X509Error as exc:
                raise KMSClientError(
                    "bad_certificate",
                    f"rejected the KMS's response: certificate {position} of its chain: {exc}",
                ) from None
        now = datetime.now(UTC)
        report = validate_certificate(
            leaf=leaf,
            intermediates=intermediates,
            trust_roots=[self.root],
            purpose="server",
            hostname=None,
            now=now,
        )
        if not report.ok:
            raise KMSClientError(
                "untrusted_server_certificate",
                f"the server certificate {_name(leaf)!r} is not trusted: {_failed_checks(report)}",
            )
        problem = _kms_server_problem(leaf)
        if problem:
            raise KMSClientError(
                "untrusted_server_certificate",
                f"the server certificate {_name(leaf)!r} is not a kms-server certificate: "
                f"{problem}",
            )
        if self.check_revocation:
            self._check_revocation(report.path, now)
        return leaf

    def _check_revocation(self, path: list[x509.Certificate], now: datetime) -> None:
        """Every certificate below the pinned root must be absent from its issuer's CRL."""
        for index, certificate in enumerate(path[:-1]):
            issuer = path[index + 1]
            what = (
                "the server certificate"
                if index == 0
                else f"the server's CA certificate {_name(certificate)!r}"
            )
            urls = _crl_urls(certificate)
            if not urls:
                raise KMSClientError(
                    "revocation_unavailable",
                    f"cannot check revocation of {what}: it names no CRL distribution point",
                )
            revoked = self._revoked_serials(urls[0], issuer, what, now)
            info = revoked.get(certificate.serial_number)
            if info is None:  # revoked since the complete CRL: the delta CRL (issue 18)
                try:
                    info = delta_revocation(
                        certificate, issuer, now, timeout=self.timeout, session=self.session
                    )
                except (CRLInvalid, CRLInputError) as exc:
                    raise KMSClientError(
                        "revocation_unavailable", f"cannot check revocation of {what}: {exc}"
                    ) from None
            if info is not None:
                raise KMSClientError(
                    "server_certificate_revoked",
                    f"{what} (serial {format_serial(certificate.serial_number)}) was revoked on "
                    f"{info.revocation_date:%Y-%m-%d %H:%M} UTC (reason: {info.reason.value}); "
                    "refusing to trust the KMS's response",
                )

    def _revoked_serials(
        self, url: str, issuer: x509.Certificate, what: str, now: datetime
    ) -> dict[int, Any]:
        cache_key = (url, _fingerprint(issuer))
        with _crl_lock:
            cached = _crl_cache.get(cache_key)
        if cached is not None and cached.this_update <= now < cached.next_update:
            return cached.revoked
        cannot = f"cannot check revocation of {what}"
        data = self._download_crl(url, cannot)
        try:
            crl = load_crl(data)
            summary = crl_summary(crl)
        except CRLError as exc:
            raise KMSClientError("revocation_unavailable", f"{cannot}: {url}: {exc}") from None
        if not verify_crl_signature(crl, issuer):
            raise KMSClientError(
                "revocation_unavailable",
                f"{cannot}: the CRL at {url} is not signed by {_name(issuer)!r}",
            )
        if summary.is_delta:
            raise KMSClientError(
                "revocation_unavailable", f"{cannot}: {url} serves a delta CRL, not a full one"
            )
        if not crl_is_fresh(crl, now):
            next_update = summary.next_update
            raise KMSClientError(
                "revocation_unavailable",
                f"{cannot}: the CRL at {url} is not current (this update "
                f"{summary.this_update:%Y-%m-%d %H:%M} UTC, next update "
                f"{next_update:%Y-%m-%d %H:%M} UTC)"
                if next_update
                else f"{cannot}: the CRL at {url} has no next update",
            )
        try:
            revoked = revoked_serials(crl)
        except CRLError as exc:
            raise KMSClientError("revocation_unavailable", f"{cannot}: {url}: {exc}") from None
        assert summary.next_update is not None  # crl_is_fresh checked it
        with _crl_lock:
            _crl_cache[cache_key] = _CachedCRL(
                next_update=summary.next_update, this_update=summary.this_update, revoked=revoked
            )
        return revoked

    def _download_crl(self, url: str, cannot: str) -> bytes:
        try:
            with self.session.get(url, timeout=self.timeout, stream=True) as response:
                if response.status_code != 200:
                    raise KMSClientError(
                        "revocation_unavailable",
                        f"{cannot}: GET {url} answered HTTP {response.status_code} "
                        f"{response.reason or ''}",
                    )
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_content(65536):
                    size += len(chunk)
                    if size > MAX_CRL_BYTES:
                        raise KMSClientError(
                            "revocation_unavailable",
                            f"{cannot}: the CRL at {url} is larger than {MAX_CRL_BYTES} bytes",
                        )
                    chunks.append(chunk)
                return b"".join(chunks)
        except requests.RequestException as exc:
            raise KMSClientError(
                "revocation_unavailable",
                f"{cannot}: cannot download {url}: {type(exc).__name__}: {exc}",
            ) from None


def _kms_server_problem(leaf: x509.Certificate) -> str | None:
    """Why ``leaf`` does not have the ``kms-server`` profile, or None."""
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "it has no extendedKeyUsage (serverAuth is required)"
    if ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        return "its extendedKeyUsage lacks serverAuth"
    try:
        usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "it has no keyUsage (digitalSignature is required)"
    if not usage.digital_signature:
        return "its keyUsage lacks digitalSignature"
    try:
        constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        return "it is a CA certificate"
    return None


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
    body = {"token": token, "csr": csr.decode("ascii")}
    if session is None:
        with requests.Session() as own_session:
            response = _post_json(own_session, base + ENROLL_PATH, body, timeout)
    else:
        response = _post_json(session, base + ENROLL_PATH, body, timeout)
    if response.status_code != 201:
        raise problem_error(response)
    answer = _json_answer(response)
    if not isinstance(answer, dict) or not all(
        k in answer for k in ("client", "certificate", "chain", "root_ca_certificate")
    ):
        raise KMSClientError("malformed_response", "the enrollment answer lacks members")
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

    identity = Identity(
        directory=directory,
        url=base,
        client=str(answer["client"]),
        not_after=str(answer.get("not_after", "")),
        **{k: directory / v for k, v in names.items()},
    )
    write_file(identity.cert, _pem(leaf))
    write_file(identity.chain, b"".join(_pem(c) for c in chain))
    write_file(identity.ca_cert, _pem(pinned))
    return identity


def encode_key(material: bytes) -> str:
    """Base64 of key material, as ``fetch --stdout`` prints it."""
    return base64.b64encode(material).decode("ascii")
