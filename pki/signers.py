"""The only code that touches CA private-key bytes (and the keys of the CAs' delegated OCSP
responders): generate and seal, unseal and load once.

Loading a private key is slow (cryptography checks it: ~55 ms for RSA-2048, ~175 ms for
RSA-3072) while signing with a loaded key takes ~1.3 ms, so every process keeps one
`LoadedKeySigner` per CA (PERF_FACTS). The cache is keyed by the CA's primary key and a
version marker, the SHA-256 of the sealed blob as stored: any change to the stored key
(rewrap, a restore, tampering) makes the next use unseal and load again, so a signer never
outlives the stored key it came from, and a blob moved onto another CA row fails its AAD
check instead of signing from the cache.

Key bytes: the plaintext DER exists only between `unseal` and `private_key_from_der` (or
between generation and `seal`), and the reference is dropped right after. Python cannot
wipe immutable bytes; keeping the window short and the references local is what it can do.

Where the key lives is the configured key backend's business (`kmsportal.keyring.backends`):
the software backend stores PKCS#8 DER and loads it here; the pkcs11 backend stores a
reference to a non-extractable token object and signs in the token. Either way the stored
value is sealed under the master keyring with the row's AAD.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from functools import cache

from cryptography import x509
from cryptography.x509 import ocsp

from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.crypto.pkcs11_token import TokenError
from kmsportal.crypto.signer import LoadedKeySigner, PrivateKey, PublicKey, Signer
from kmsportal.crypto.x509 import KeyType, generate_private_key
from kmsportal.keyring.backends import KeyBackendError, key_backend
from kmsportal.keyring.services import private_key_signer, seal

from .errors import PkiError
from .models import CertificateAuthority, OCSPResponder

__all__ = [
    "CAKeyUnavailable",
    "GeneratedCAKey",
    "PreviewSigner",
    "ca_signer",
    "ca_signer_cache_clear",
    "ca_signer_cache_size",
    "ca_signer_remember",
    "ocsp_responder_signer",
    "ocsp_responder_signer_remember",
    "preview_public_key",
]


class CAKeyUnavailable(PkiError):
    """A CA's sealed private key cannot be opened (wrong row, tampered, unknown master key)."""


_lock = threading.Lock()
# CA pk -> (SHA-256 of the sealed blob, signer over the loaded key)
_signers: dict[uuid.UUID, tuple[bytes, Signer]] = {}
# One lock per CA so that concurrent first uses load the key once, not once per thread.
_load_locks: dict[uuid.UUID, threading.Lock] = {}


def _marker(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def _load(*, blob: bytes, aad: bytes, what: str) -> Signer:
    try:
        return private_key_signer(blob, aad=aad, what=what)
    except EnvelopeError as exc:
        raise CAKeyUnavailable(
            f"the private key of {what} cannot be unsealed ({exc}); it may have been "
            "tampered with, copied from another row, or sealed under a master key that is not "
            "configured"
        ) from None
    except (KeyBackendError, TokenError) as exc:
        raise CAKeyUnavailable(str(exc)) from None


def _cached_signer(*, owner: uuid.UUID, blob: bytes, aad: bytes, what: str) -> Signer:
    """The signer of the sealed key ``blob`` of row ``owner``, loaded at most once per
    process and again only when the stored blob changes."""
    marker = _marker(blob)
    with _lock:
        entry = _signers.get(owner)
        if entry is not None and entry[0] == marker:
            return entry[1]
        load_lock = _load_locks.setdefault(owner, threading.Lock())
    with load_lock:
        with _lock:
            entry = _signers.get(owner)
            if entry is not None and entry[0] == marker:
                return entry[1]  # another thread loaded it while this one waited
        signer = _load(blob=blob, aad=aad, what=what)
        with _lock:
            _signers[owner] = (marker, signer)
    return signer


def ca_signer(ca: CertificateAuthority) -> Signer:
    """The signer for ``ca``'s private key, unsealed and loaded at most once per process
    (and again only when the stored sealed key changes). Raises :class:`CAKeyUnavailable`."""
    return _cached_signer(
        owner=ca.pk, blob=bytes(ca.sealed_private_key), aad=ca.aad, what=f"CA {ca.name}"
    )


def ocsp_responder_signer(responder: OCSPResponder) -> Signer:
    """The signer for a delegated OCSP responder's key, cached like a CA's (the rows have
    UUID keys, so the two kinds never share a cache slot). Raises :class:`CAKeyUnavailable`."""
    return _cached_signer(
        owner=responder.pk,
        blob=bytes(responder.sealed_private_key),
        aad=responder.aad,
        what=f"OCSP responder {responder.pk}",
    )


def ocsp_responder_signer_remember(responder: OCSPResponder, signer: Signer) -> None:
    """Cache the signer of a responder just created (its key is already loaded)."""
    with _lock:
        _signers[responder.pk] = (_marker(bytes(responder.sealed_private_key)), signer)


def ca_signer_remember(ca: CertificateAuthority, signer: Signer) -> None:
    """Cache the signer of a CA just created (its key is already loaded: no reload)."""
    with _lock:
        _signers[ca.pk] = (_marker(bytes(ca.sealed_private_key)), signer)


def ca_signer_cache_clear() -> None:
    """Forget every loaded CA key (tests; a process that wants them out of memory)."""
    with _lock:
        _signers.clear()
        _load_locks.clear()


def ca_signer_cache_size() -> int:
    with _lock:
        return len(_signers)


class GeneratedCAKey:
    """A fresh CA key pair made by the configured key backend (in memory, or in the PKCS#11
    token): sign the CA's own certificate with it, seal what the backend hands back once,
    keep only the signer.

    Delegated OCSP responder keys are made the same way (EC P-256: generated in well under a
    millisecond, so a renewal costs nothing noticeable)."""

    def __init__(self, key_type: KeyType | str, *, private_key: PrivateKey | None = None) -> None:
        backend = key_backend()
        try:
            made = (
                backend.private_key_generate(key_type)
                if private_key is None
                else backend.private_key_store(private_key)
            )
        except (KeyBackendError, TokenError) as exc:
            raise CAKeyUnavailable(f"the key backend cannot make the key: {exc}") from None
        self._payload = made.payload
        self.signer: Signer = made.signer
        self.backend_name = backend.name

    @property
    def public_key(self) -> PublicKey:
        return self.signer.public_key

    def seal(self, *, aad: bytes) -> bytes:
        """What the backend stores for the key (PKCS#8 DER, or a reference to the token
        object) sealed under the master keyring, bound to ``aad``."""
        return seal(self._payload, aad=aad)


@cache
def _throwaway_key(key_type: str) -> LoadedKeySigner:
    # A key that signs nothing anyone will ever see: previews only. One per type and process.
    return LoadedKeySigner(generate_private_key(key_type))


def preview_public_key(key_type: KeyType | str) -> PublicKey:
    """A public key of ``key_type`` for previewing a certificate whose key does not exist yet
    (a CA, or a server-generated key pair): the profile's key usage depends on the type."""
    return _throwaway_key(KeyType(key_type).value).public_key


class PreviewSigner(Signer):
    """Produces the exact certificate that would be issued, but signed by a throwaway key.

    The confirmation pages build the certificate through the same function as issuance, so
    every profile, SAN, validity and CA check runs and the page shows exactly the fields
    that will be signed (only the serial number and the second of notBefore differ). The
    result is never stored or shown as a certificate: its signature verifies with no CA.
    ``public_key`` is the issuer's, so that the issuer checks pass.
    """

    def __init__(self, issuer_public_key: PublicKey) -> None:
        self._issuer_public_key = issuer_public_key
        self._scratch = _throwaway_key(KeyType.ecp256.value)

    @property
    def public_key(self) -> PublicKey:
        return self._issuer_public_key

    def sign_certificate(self, builder: x509.CertificateBuilder) -> x509.Certificate:
        return self._scratch.sign_certificate(builder)

    def sign_crl(
        self, builder: x509.CertificateRevocationListBuilder
    ) -> x509.CertificateRevocationList:
        raise NotImplementedError("previews sign certificates only")

    def sign_ocsp_response(
        self, builder: ocsp.OCSPResponseBuilder, responder_certificate: x509.Certificate
    ) -> ocsp.OCSPResponse:
        raise NotImplementedError("previews sign certificates only")
