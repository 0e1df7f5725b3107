"""The software backend: master keys from KMS_MASTER_KEYS, keys in the portal's memory.

Today's behaviour and the default. Key material and CA keys are sealed under the master
keyring; destruction erases the sealed blob and scrubs the table (see
`kmsportal.keyring.services.storage_scrub`), but a backup taken before destruction still
holds the blob and opens with the master key until that key is retired.
"""

from __future__ import annotations

from kmsportal.crypto.kek import KeyringConfigError, MasterKeyProvider

from .base import KeyBackend


class SoftwareKeyBackend(KeyBackend):
    name = "software"
    destruction_reaches_backups = False
    destruction_guarantee = (
        "Software key backend: destruction erases the sealed material and scrubs the table "
        "(VACUUM FULL on PostgreSQL, secure_delete on SQLite). A backup, replica or WAL segment "
        "taken earlier still holds it sealed under the master key; it is unreadable only "
        "once that master key is retired (new master key, rewrap, remove the old key)."
    )

    def master_key_provider(self, legacy: MasterKeyProvider | None) -> MasterKeyProvider:
        if legacy is None:
            raise KeyringConfigError("the software key backend needs KMS_MASTER_KEYS")
        return legacy
