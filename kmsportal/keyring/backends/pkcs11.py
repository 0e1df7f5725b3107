"""The PKCS#11 backend: master keys, CA keys and per-version wrapping keys in a token.

Options (from settings, see `kmsportal.settings`): MODULE (path of the PKCS#11 library),
TOKEN_LABEL, PIN_SECRET (the user PIN; read from KMS_PKCS11_PIN_FILE or KMS_PKCS11_PIN, never
stored in the database) and MASTER_KEY_IDS (token master keys, the first seals).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kmsportal.crypto.kek import MasterKeyProvider
from kmsportal.crypto.pkcs11_token import (
    PRIVATE_KEY_LABEL,
    WRAP_KEY_LABEL,
    Pkcs11KeyProvider,
    Pkcs11Token,
    TokenError,
    TokenKeyMissing,
)
from kmsportal.crypto.signer import PrivateKey, Signer
from kmsportal.crypto.token_signer import TokenSigner
from kmsportal.crypto.x509 import KeyType

from .base import (
    KEY_REFERENCE_PREFIX,
    OBJECT_ID_SIZE,
    WRAPPED_MATERIAL_PREFIX,
    BackendProblem,
    KeyBackend,
    KeyBackendError,
    KeyMaterialDestroyed,
    NewPrivateKey,
    is_key_reference,
    is_wrapped_material,
)

_NONCE = 12


class Pkcs11KeyBackend(KeyBackend):
    name = "pkcs11"
    destruction_reaches_backups = True
    destruction_guarantee = (
        "PKCS#11 key backend: every version is sealed by its own wrapping key inside the "
        "token; destruction destroys that token object, so no database backup, replica or "
        "WAL segment can bring the material back (only a backup of the token itself could)."
    )

    def __init__(
        self,
        *,
        MODULE: str,
        TOKEN_LABEL: str,
        PIN_SECRET: str = "",
        PIN_FILE: str = "",
        MASTER_KEY_IDS: tuple[str, ...] | list[str] = ("hsm1",),
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._pin_problem = ""
        pin = PIN_SECRET
        if PIN_FILE:
            try:
                pin = Path(PIN_FILE).read_text().strip()
            except OSError as exc:
                self._pin_problem = f"the PIN file {PIN_FILE} cannot be read ({exc.strerror})"
        if not pin and not self._pin_problem:
            self._pin_problem = f"no PIN for PKCS#11 token {TOKEN_LABEL!r}"
        self.token = Pkcs11Token(module=MODULE, token_label=TOKEN_LABEL, pin=pin)
        self.master_key_ids = tuple(MASTER_KEY_IDS)

    def __repr__(self) -> str:
        return f"<Pkcs11KeyBackend {self.token!r}>"

    # --- master keys -------------------------------------------------------------------------

    def master_key_provider(self, legacy: MasterKeyProvider | None) -> MasterKeyProvider:
        return Pkcs11KeyProvider(self.token, self.master_key_ids, legacy=legacy)

    def problems(self) -> list[BackendProblem]:
        if self._pin_problem:
            return [
                BackendProblem(
                    "E004",
                    self._pin_problem,
                    "Set KMS_PKCS11_PIN_FILE (a file readable only by the portal) or "
                    "KMS_PKCS11_PIN.",
                )
            ]
        try:
            self.token.connect()
        except TokenError as exc:
            return [
                BackendProblem(
                    "E004",
                    str(exc),
                    "Check KMS_PKCS11_MODULE, KMS_PKCS11_TOKEN_LABEL and the PIN "
                    "(KMS_PKCS11_PIN_FILE / KMS_PKCS11_PIN); `softhsm2-util --show-slots` "
                    "lists SoftHSM2 tokens.",
                )
            ]
        problems = []
        for key_id in self.master_key_ids:
            label = Pkcs11KeyProvider.label(key_id)
            if not self.token.has_object(label=label):
                problems.append(
                    BackendProblem(
                        "E005",
                        f"master key object {label!r} is not in PKCS#11 token "
                        f"{self.token.token_label!r}",
                        "On a fresh deployment `manage.py bootstrap` creates it; otherwise "
                        "this is the wrong token (or the key was deleted from it).",
                    )
                )
        return problems

    def prepare(self) -> list[str]:
        done = []
        for key_id in self.master_key_ids[:1]:
            label = Pkcs11KeyProvider.label(key_id)
            if not self.token.has_object(label=label):
                self.token.aes_key_create(label=label)
                done.append(
                    f"created master key {label!r} (AES-256, non-extractable) in PKCS#11 "
                    f"token {self.token.token_label!r}"
                )
        return done

    # --- key material --------------------------------------------------------------------------

    def material_wrap(self, material: bytes, *, aad: bytes) -> bytes:
        if not material:
            raise KeyBackendError("there is no material to wrap")
        object_id = self.token.aes_key_create(label=WRAP_KEY_LABEL)
        nonce = os.urandom(_NONCE)
        sealed = self.token.aes_gcm_encrypt(
            label=WRAP_KEY_LABEL, object_id=object_id, nonce=nonce, plaintext=material, aad=aad
        )
        return WRAPPED_MATERIAL_PREFIX + object_id + nonce + sealed

    def material_unwrap(self, payload: bytes, *, aad: bytes) -> bytes:
        if not is_wrapped_material(payload):
            return payload  # sealed before this deployment moved to pkcs11 (keyring_migrate)
        object_id = payload[3 : 3 + OBJECT_ID_SIZE]
        nonce = payload[3 + OBJECT_ID_SIZE : 3 + OBJECT_ID_SIZE + _NONCE]
        try:
            return self.token.aes_gcm_decrypt(
                label=WRAP_KEY_LABEL,
                object_id=object_id,
                nonce=nonce,
                ciphertext=payload[3 + OBJECT_ID_SIZE + _NONCE :],
                aad=aad,
            )
        except TokenKeyMissing:
            raise KeyMaterialDestroyed(
                f"the wrapping key {object_id.hex()} of this material is not in PKCS#11 token "
                f"{self.token.token_label!r}: the material was destroyed"
            ) from None

    def material_destroy(self, payload: bytes) -> bool:
        if not is_wrapped_material(payload):
            return False
        return self.token.destroy(label=WRAP_KEY_LABEL, object_id=payload[3 : 3 + OBJECT_ID_SIZE])

    # --- private keys ----------------------------------------------------------------------------

    def _token_signer(self, object_id: bytes, what: str) -> Signer:
        try:
            public_key = self.token.public_key(object_id)
        except TokenKeyMissing:
            raise KeyBackendError(
                f"the private key of {what} ({object_id.hex()}) is not in PKCS#11 token "
                f"{self.token.token_label!r}"
            ) from None
        return TokenSigner(
            public_key,
            lambda data, algorithm: self.token.sign(object_id, data, algorithm=algorithm),
            name=what,
        )

    def private_key_generate(self, key_type: KeyType | str) -> NewPrivateKey:
        object_id = self.token.private_key_generate(key_type)
        return NewPrivateKey(
            KEY_REFERENCE_PREFIX + object_id, self._token_signer(object_id, "new key")
        )

    def private_key_store(self, private_key: PrivateKey) -> NewPrivateKey:
        object_id = self.token.private_key_import(private_key)
        return NewPrivateKey(
            KEY_REFERENCE_PREFIX + object_id, self._token_signer(object_id, "imported key")
        )

    def private_key_signer(self, payload: bytes, *, what: str) -> Signer:
        if is_key_reference(payload):
            return self._token_signer(payload[3:], what)
        return super().private_key_signer(payload, what=what)

    def private_key_destroy(self, payload: bytes) -> bool:
        if not is_key_reference(payload):
            return False
        return self.token.destroy(label=PRIVATE_KEY_LABEL, object_id=payload[3:])
