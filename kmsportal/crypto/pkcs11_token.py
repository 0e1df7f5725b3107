"""A PKCS#11 token (an HSM, SoftHSM2 in tests) holding the keys that must never leave it.

Plain Python over python-pkcs11: no Django, no settings. The key backends in
`kmsportal.keyring.backends` build one :class:`Pkcs11Token` per process from settings.

What lives in the token, all as token objects that are sensitive and non-extractable
(CKA_SENSITIVE true, CKA_EXTRACTABLE false), so their value never reaches this process:

* **master keys** (AES-256, label ``kmsportal-master-<id>``): seal and unseal with AES-GCM run
  in the token (:class:`Pkcs11KeyProvider`, a :class:`~kmsportal.crypto.kek.MasterKeyProvider`);
* **wrapping keys** (AES-256, label ``kmsportal-wrap``, a random 16-byte CKA_ID each): one per
  key version; destroying the object is what makes every copy of that version's sealed
  material (database backups, replicas, WAL) unreadable;
* **private keys** (RSA or EC, label ``kmsportal-private``, random CKA_ID): CA and OCSP
  responder keys. They sign in the token (through
  :class:`~kmsportal.crypto.token_signer.TokenSigner`).

Sessions: a PKCS#11 session must not be used by two threads at once, so the token keeps a
pool of sessions (per process: after a fork the library is initialised again). The user logs
in once, on the first session; PKCS#11 login state is shared by every session of the
application, so the others are opened without a PIN.

Error messages name the module, token label or object, never the PIN.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from kmsportal.crypto.kek import (
    NONCE_SIZE,
    MasterKeyProvider,
    UnknownMasterKeyError,
    is_valid_key_id,
)
from kmsportal.crypto.x509 import KeyType

from .errors import KMSError

__all__ = [
    "MASTER_KEY_LABEL_PREFIX",
    "PRIVATE_KEY_LABEL",
    "WRAP_KEY_LABEL",
    "Pkcs11KeyProvider",
    "Pkcs11Token",
    "TokenError",
    "TokenKeyMissing",
    "TokenUnavailable",
    "pkcs11_available",
]

MASTER_KEY_LABEL_PREFIX = "kmsportal-master-"
WRAP_KEY_LABEL = "kmsportal-wrap"
PRIVATE_KEY_LABEL = "kmsportal-private"
OBJECT_ID_SIZE = 16
_GCM_TAG_BITS = 128
_T = TypeVar("_T")


class TokenError(KMSError):
    """The token cannot do what was asked. The message says what is wrong and where."""

    code = "token_failed"
    status = 503


class TokenUnavailable(TokenError):
    """The module cannot be loaded, the token is not there, or the PIN is refused."""


class TokenKeyMissing(TokenError):
    """A key object the data needs is not in the token (destroyed, or another token)."""


def pkcs11_available() -> bool:
    """Whether python-pkcs11 can be imported here."""
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return False
    return True


def _p11() -> Any:
    import pkcs11

    return pkcs11


# Raised by the library when the device or the session went away: drop the pool, reconnect.
def _gone_errors() -> tuple[type[BaseException], ...]:
    exc = _p11().exceptions
    return (
        exc.TokenNotPresent,
        exc.DeviceRemoved,
        exc.SessionHandleInvalid,
        exc.SessionClosed,
        exc.DeviceError,
        exc.UserNotLoggedIn,
    )


class _Session:
    """One PKCS#11 session and the key objects it has looked up (handles are per session).

    ``generation`` is the token's destruction count when the cache was last valid: after any
    object is destroyed every session forgets its handles, so a handle the module hands out
    again for a new object is never taken for the destroyed one.
    """

    def __init__(self, session: Any, generation: int) -> None:
        self.session = session
        self.objects: dict[tuple[str, bytes | str], Any] = {}
        self.generation = generation


class Pkcs11Token:
    """One token of one PKCS#11 module, with a per-process pool of logged-in sessions.

    Args:
        module: path of the PKCS#11 library (``/usr/lib/softhsm/libsofthsm2.so``).
        token_label: CKA_LABEL of the token (``softhsm2-util --init-token --label``).
        pin: the user PIN. Kept in memory only; never in a message.
    """

    def __init__(self, *, module: str, token_label: str, pin: str) -> None:
        self.module = module
        self.token_label = token_label
        self._pin = pin
        self._lock = threading.Lock()
        self._pid = -1
        self._lib: Any = None
        self._token: Any = None
        self._login: Any = None  # the session that logged in; kept open for the login state
        self._pool: queue.LifoQueue[_Session] = queue.LifoQueue()
        self._generation = 0  # objects destroyed through this token object

    def __repr__(self) -> str:
        return f"<Pkcs11Token {self.token_label!r} module={self.module!r}>"

    # --- connection ----------------------------------------------------------------------

    def _connect(self) -> None:
        """Load the module, find the token and log in (under `_lock`)."""
        if not pkcs11_available():
            raise TokenUnavailable(
                "python-pkcs11 is not installed (pip install -r requirements.txt)"
            )
        pkcs11 = _p11()
        exc = pkcs11.exceptions
        if not os.path.exists(self.module):
            raise TokenUnavailable(f"PKCS#11 module {self.module} does not exist")
        try:
            lib = pkcs11.lib(self.module)
            if self._pid != -1 and self._pid != os.getpid():
                lib.reinitialize()  # a forked child: the parent's sessions are not ours
        except (exc.PKCS11Error, RuntimeError, OSError) as error:
            raise TokenUnavailable(
                f"PKCS#11 module {self.module} cannot be loaded ({type(error).__name__})"
            ) from None
        try:
            token = lib.get_token(token_label=self.token_label)
        except exc.NoSuchToken:
            raise TokenUnavailable(
                f"PKCS#11 token {self.token_label!r} is not present in module {self.module}"
            ) from None
        except exc.MultipleTokensReturned:
            raise TokenUnavailable(
                f"more than one PKCS#11 token is labelled {self.token_label!r}"
            ) from None
        try:
            login = token.open(rw=True, user_pin=self._pin)
        except exc.UserAlreadyLoggedIn:
            login = token.open(rw=True)  # another object of this process logged in already
        except (exc.PinIncorrect, exc.PinInvalid, exc.PinLenRange):
            raise TokenUnavailable(
                f"the PIN for PKCS#11 token {self.token_label!r} is wrong"
            ) from None
        except exc.PinLocked:
            raise TokenUnavailable(
                f"the user PIN of token {self.token_label!r} is locked"
            ) from None
        except exc.PKCS11Error as error:
            raise TokenUnavailable(
                f"cannot log in to PKCS#11 token {self.token_label!r} ({type(error).__name__})"
            ) from None
        self._lib, self._token, self._login = lib, token, login
        self._pool = queue.LifoQueue()
        self._pid = os.getpid()

    def _reset(self) -> None:
        with self._lock:
            self._token = None
            self._login = None
            self._pool = queue.LifoQueue()

    def connect(self) -> None:
        """Connect now (start-up checks); raises :class:`TokenUnavailable`."""
        with self._lock:
            if self._token is None or self._pid != os.getpid():
                self._connect()

    @contextlib.contextmanager
    def session(self) -> Iterator[_Session]:
        """A session of the pool for the duration of the block (one thread at a time)."""
        self.connect()
        try:
            pooled = self._pool.get_nowait()
        except queue.Empty:
            try:
                pooled = _Session(self._token.open(rw=True), self._generation)
            except _gone_errors():
                self._reset()
                raise TokenUnavailable(
                    f"PKCS#11 token {self.token_label!r} is no longer available"
                ) from None
        if pooled.generation != self._generation:
            pooled.objects.clear()
            pooled.generation = self._generation
        try:
            yield pooled
        except _gone_errors():
            self._reset()  # this session is dead: do not return it to the pool
            raise TokenUnavailable(
                f"PKCS#11 token {self.token_label!r} is no longer available"
            ) from None
        else:
            self._pool.put(pooled)

    # --- finding objects -----------------------------------------------------------------

    def _find(self, pooled: _Session, *, label: str, object_id: bytes | None, kind: str) -> Any:
        pkcs11 = _p11()
        key = (kind, object_id if object_id is not None else label)
        found = pooled.objects.get(key)
        if found is not None:
            return found
        object_class = {
            "secret": pkcs11.ObjectClass.SECRET_KEY,
            "private": pkcs11.ObjectClass.PRIVATE_KEY,
            "public": pkcs11.ObjectClass.PUBLIC_KEY,
        }[kind]
        attrs: dict[Any, Any] = {
            pkcs11.Attribute.CLASS: object_class,
            pkcs11.Attribute.LABEL: label,
        }
        if object_id is not None:
            attrs[pkcs11.Attribute.ID] = object_id
        objects = list(pooled.session.get_objects(attrs))
        if not objects:
            what = label if object_id is None else f"{label} id {object_id.hex()}"
            raise TokenKeyMissing(
                f"key object {what!r} is not in PKCS#11 token {self.token_label!r}"
            )
        if len(objects) > 1:
            raise TokenError(f"PKCS#11 token {self.token_label!r} holds several objects {label!r}")
        pooled.objects[key] = objects[0]
        return objects[0]

    def _with_object(
        self, *, label: str, object_id: bytes | None, kind: str, use: Callable[[Any], _T]
    ) -> _T:
        """Run ``use(object)``; a handle made stale by another session is looked up again."""
        exc = _p11().exceptions
        with self.session() as pooled:
            obj = self._find(pooled, label=label, object_id=object_id, kind=kind)
            try:
                return use(obj)
            except (exc.ObjectHandleInvalid, exc.KeyHandleInvalid):
                pooled.objects.clear()
                obj = self._find(pooled, label=label, object_id=object_id, kind=kind)
                return use(obj)

    def has_object(
        self, *, label: str, object_id: bytes | None = None, kind: str = "secret"
    ) -> bool:
        try:
            with self.session() as pooled:
                self._find(pooled, label=label, object_id=object_id, kind=kind)
        except TokenKeyMissing:
            return False
        return True

    # --- AES keys ------------------------------------------------------------------------

    def aes_key_create(self, *, label: str, object_id: bytes | None = None) -> bytes:
        """Generate a non-extractable AES-256 token object; returns its CKA_ID."""
        pkcs11 = _p11()
        object_id = object_id or os.urandom(OBJECT_ID_SIZE)
        attribute = pkcs11.Attribute
        with self.session() as pooled:
            pooled.session.generate_key(
                pkcs11.KeyType.AES,
                256,
                label=label,
                id=object_id,
                store=True,
                template={
                    attribute.SENSITIVE: True,
                    attribute.EXTRACTABLE: False,
                    attribute.ENCRYPT: True,
                    attribute.DECRYPT: True,
                    attribute.WRAP: False,
                    attribute.UNWRAP: False,
                    attribute.SIGN: False,
                    attribute.VERIFY: False,
                    attribute.DERIVE: False,
                },
            )
        return object_id

    def aes_gcm_encrypt(
        self, *, label: str, object_id: bytes | None, nonce: bytes, plaintext: bytes, aad: bytes
    ) -> bytes:
        """AES-256-GCM in the token: ciphertext followed by the 16-byte tag."""
        pkcs11 = _p11()
        params = pkcs11.mechanisms.GCMParams(nonce, aad, _GCM_TAG_BITS)
        return bytes(
            self._with_object(
                label=label,
                object_id=object_id,
                kind="secret",
                use=lambda key: key.encrypt(
                    plaintext, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params
                ),
            )
        )

    def aes_gcm_decrypt(
        self, *, label: str, object_id: bytes | None, nonce: bytes, ciphertext: bytes, aad: bytes
    ) -> bytes:
        """AES-256-GCM decryption in the token; raises ``InvalidTag`` when it fails."""
        pkcs11 = _p11()
        exc = pkcs11.exceptions
        params = pkcs11.mechanisms.GCMParams(nonce, aad, _GCM_TAG_BITS)
        try:
            return bytes(
                self._with_object(
                    label=label,
                    object_id=object_id,
                    kind="secret",
                    use=lambda key: key.decrypt(
                        ciphertext, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=params
                    ),
                )
            )
        except (exc.EncryptedDataInvalid, exc.EncryptedDataLenRange, exc.DataLenRange):
            raise InvalidTag() from None
        except (exc.FunctionFailed, exc.GeneralError):
            # SoftHSM2 reports a failed GCM tag check as CKR_GENERAL_ERROR (others as
            # CKR_FUNCTION_FAILED); a token that is really broken fails the next call too.
            raise InvalidTag() from None

    def aes_key_check_value(self, *, label: str) -> str:
        """AES-ECB of one zero block in the token, first 8 bytes in hex (the classic KCV,
        longer): tells keys apart without revealing them."""
        pkcs11 = _p11()
        block = self._with_object(
            label=label,
            object_id=None,
            kind="secret",
            use=lambda key: key.encrypt(bytes(16), mechanism=pkcs11.Mechanism.AES_ECB),
        )
        return bytes(block)[:8].hex()

    # --- asymmetric keys -----------------------------------------------------------------

    def private_key_generate(self, key_type: KeyType | str) -> bytes:
        """Generate a non-extractable RSA or EC signing key pair in the token (CA and OCSP
        responder keys); returns its CKA_ID. The key can sign and do nothing else."""
        pkcs11 = _p11()
        attribute = pkcs11.Attribute
        key_type = KeyType(key_type)
        object_id = os.urandom(OBJECT_ID_SIZE)
        private_template = {
            attribute.SENSITIVE: True,
            attribute.EXTRACTABLE: False,
            attribute.SIGN: True,
            attribute.DECRYPT: False,
            attribute.UNWRAP: False,
            attribute.DERIVE: False,
        }
        public_template: dict[Any, Any] = {
            attribute.VERIFY: True,
            attribute.ENCRYPT: False,
            attribute.WRAP: False,
        }
        with self.session() as pooled:
            if key_type.value.startswith("rsa"):
                pooled.session.generate_keypair(
                    pkcs11.KeyType.RSA,
                    int(key_type.value[3:]),
                    label=PRIVATE_KEY_LABEL,
                    id=object_id,
                    store=True,
                    public_template=public_template,
                    private_template=private_template,
                )
            else:
                curve = {"ecp256": "secp256r1", "ecp384": "secp384r1"}[key_type.value]
                params = pkcs11.util.ec.encode_named_curve_parameters(curve)
                domain = pooled.session.create_domain_parameters(
                    pkcs11.KeyType.EC, {attribute.EC_PARAMS: params}, local=True
                )
                domain.generate_keypair(
                    label=PRIVATE_KEY_LABEL,
                    id=object_id,
                    store=True,
                    public_template=public_template,
                    private_template=private_template,
                )
        return object_id

    def private_key_import(
        self, private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    ) -> bytes:
        """Create a token object from a private key (CA import, keyring migration); the
        object is sensitive and non-extractable from then on. Returns its CKA_ID."""
        pkcs11 = _p11()
        attribute = pkcs11.Attribute
        object_id = os.urandom(OBJECT_ID_SIZE)
        if isinstance(private_key, rsa.RSAPrivateKey):
            der = private_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            attrs = pkcs11.util.rsa.decode_rsa_private_key(der)
            public_attrs = {
                attribute.CLASS: pkcs11.ObjectClass.PUBLIC_KEY,
                attribute.KEY_TYPE: pkcs11.KeyType.RSA,
                attribute.MODULUS: attrs[attribute.MODULUS],
                attribute.PUBLIC_EXPONENT: attrs[attribute.PUBLIC_EXPONENT],
            }
        else:
            der = private_key.private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            attrs = pkcs11.util.ec.decode_ec_private_key(der)
            point = private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
            # CKA_EC_POINT is the DER OCTET STRING of the point (PKCS#11 v2.40 2.3.3).
            public_attrs = {
                attribute.CLASS: pkcs11.ObjectClass.PUBLIC_KEY,
                attribute.KEY_TYPE: pkcs11.KeyType.EC,
                attribute.EC_PARAMS: attrs[attribute.EC_PARAMS],
                attribute.EC_POINT: _der_octet_string(point),
            }
        del der
        attrs.update(
            {
                attribute.TOKEN: True,
                attribute.PRIVATE: True,
                attribute.LABEL: PRIVATE_KEY_LABEL,
                attribute.ID: object_id,
                attribute.SENSITIVE: True,
                attribute.EXTRACTABLE: False,
                attribute.SIGN: True,
                attribute.DECRYPT: False,
            }
        )
        public_attrs.update(
            {
                attribute.TOKEN: True,
                attribute.LABEL: PRIVATE_KEY_LABEL,
                attribute.ID: object_id,
                attribute.VERIFY: True,
            }
        )
        with self.session() as pooled:
            pooled.session.create_object(attrs)
            pooled.session.create_object(public_attrs)
        return object_id

    def public_key(self, object_id: bytes) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The public half of a token key pair, as a cryptography object."""
        pkcs11 = _p11()
        attribute = pkcs11.Attribute

        def read(public: Any) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
            if public.key_type == pkcs11.KeyType.RSA:
                return rsa.RSAPublicNumbers(
                    int.from_bytes(public[attribute.PUBLIC_EXPONENT], "big"),
                    int.from_bytes(public[attribute.MODULUS], "big"),
                ).public_key()
            der = pkcs11.util.ec.encode_ec_public_key(public)
            key = serialization.load_der_public_key(der)
            assert isinstance(key, ec.EllipticCurvePublicKey)
            return key

        return self._with_object(
            label=PRIVATE_KEY_LABEL, object_id=object_id, kind="public", use=read
        )

    def sign(self, object_id: bytes, data: bytes, *, algorithm: str) -> bytes:
        """Sign ``data`` in the token. ``algorithm``: "rsa-sha256", "ecdsa-sha256" or
        "ecdsa-sha384"; ECDSA signatures come back DER-encoded (as X.509 carries them)."""
        pkcs11 = _p11()
        if algorithm == "rsa-sha256":
            mechanism, payload = pkcs11.Mechanism.SHA256_RSA_PKCS, data
        elif algorithm in ("ecdsa-sha256", "ecdsa-sha384"):
            # Plain CKM_ECDSA over the digest: SoftHSM2 (and many HSMs) lack CKM_ECDSA_SHA*.
            # The digest of public data is computed here; only the signing needs the key.
            digest = hashlib.sha256 if algorithm == "ecdsa-sha256" else hashlib.sha384
            mechanism, payload = pkcs11.Mechanism.ECDSA, digest(data).digest()
        else:
            raise ValueError(f"unknown signature algorithm {algorithm!r}")
        raw = bytes(
            self._with_object(
                label=PRIVATE_KEY_LABEL,
                object_id=object_id,
                kind="private",
                use=lambda key: key.sign(payload, mechanism=mechanism),
            )
        )
        if algorithm.startswith("ecdsa"):
            half = len(raw) // 2
            return encode_dss_signature(
                int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
            )
        return raw

    # --- destruction ---------------------------------------------------------------------

    def destroy(self, *, label: str, object_id: bytes) -> bool:
        """Destroy every object (private, public or secret) with this label and CKA_ID.

        Returns whether anything was destroyed; destroying what is already gone is not an
        error (destruction may be retried after a rollback).
        """
        pkcs11 = _p11()
        attrs = {pkcs11.Attribute.LABEL: label, pkcs11.Attribute.ID: object_id}
        destroyed = False
        with self.session() as pooled:
            for obj in list(pooled.session.get_objects(attrs)):
                obj.destroy()
                destroyed = True
            with self._lock:
                self._generation += 1  # every session forgets its handles before next use
            pooled.objects.clear()
        return destroyed

    def object_ids(self, *, label: str) -> set[bytes]:
        """CKA_IDs of the objects with ``label`` (orphan sweeps, tests)."""
        pkcs11 = _p11()
        with self.session() as pooled:
            return {
                bytes(obj[pkcs11.Attribute.ID])
                for obj in pooled.session.get_objects({pkcs11.Attribute.LABEL: label})
            }


def _der_octet_string(value: bytes) -> bytes:
    """DER OCTET STRING of ``value`` (for CKA_EC_POINT)."""
    from asn1crypto.core import OctetString  # type: ignore[import-untyped]  # ships no types

    der: bytes = OctetString(value).dump()
    return der


class Pkcs11KeyProvider(MasterKeyProvider):
    """Master keys that are AES-256 objects in a token; AES-GCM runs in the token.

    Optionally chained to a software provider whose keys can still *unseal* (never seal):
    that is how `keyring_migrate --to pkcs11` reads what the software keyring sealed while
    re-sealing it under the token's key.
    """

    def __init__(
        self,
        token: Pkcs11Token,
        key_ids: tuple[str, ...],
        *,
        legacy: MasterKeyProvider | None = None,
    ) -> None:
        if not key_ids:
            raise ValueError("at least one token master key id is needed")
        for key_id in key_ids:
            if not is_valid_key_id(key_id):
                raise ValueError(f"invalid master key id {key_id!r}")
        self.token = token
        self._token_ids = tuple(key_ids)
        self._legacy = legacy
        legacy_ids = tuple(k for k in (legacy.key_ids if legacy else ()) if k not in key_ids)
        self._key_ids = self._token_ids + legacy_ids

    def __repr__(self) -> str:
        return f"<Pkcs11KeyProvider token={self.token.token_label!r} key_ids={self._key_ids!r}>"

    @staticmethod
    def label(key_id: str) -> str:
        return MASTER_KEY_LABEL_PREFIX + key_id

    @property
    def primary_key_id(self) -> str:
        return self._token_ids[0]

    @property
    def key_ids(self) -> tuple[str, ...]:
        return self._key_ids

    @property
    def token_key_ids(self) -> tuple[str, ...]:
        return self._token_ids

    def _route(self, key_id: str) -> MasterKeyProvider | None:
        if key_id in self._token_ids:
            return None
        if self._legacy is not None and key_id in self._legacy.key_ids:
            return self._legacy
        raise UnknownMasterKeyError(key_id, f"PKCS#11 token {self.token.token_label!r}")

    def encrypt(self, key_id: str, nonce: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
        if key_id != self.primary_key_id:
            # Only the token's primary key seals; the legacy keys are for reading old data.
            self._route(key_id)
            raise UnknownMasterKeyError(key_id, f"PKCS#11 token {self.token.token_label!r}")
        _check_nonce(nonce)
        return self.token.aes_gcm_encrypt(
            label=self.label(key_id),
            object_id=None,
            nonce=nonce,
            plaintext=plaintext,
            aad=associated_data,
        )

    def decrypt(
        self, key_id: str, nonce: bytes, ciphertext: bytes, associated_data: bytes
    ) -> bytes:
        legacy = self._route(key_id)
        if legacy is not None:
            return legacy.decrypt(key_id, nonce, ciphertext, associated_data)
        _check_nonce(nonce)
        return self.token.aes_gcm_decrypt(
            label=self.label(key_id),
            object_id=None,
            nonce=nonce,
            ciphertext=ciphertext,
            aad=associated_data,
        )

    def key_check_value(self, key_id: str) -> str:
        legacy = self._route(key_id)
        if legacy is not None:
            return legacy.key_check_value(key_id)
        return self.token.aes_key_check_value(label=self.label(key_id))


def _check_nonce(nonce: bytes) -> None:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_SIZE:
        raise ValueError(f"AES-GCM nonce must be {NONCE_SIZE} bytes")
