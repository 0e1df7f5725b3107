"""Start-up checks: the master keyring must be well formed and match what sealed the data.

Registered under the tag "keyring" and run by `migrate`, `runserver`, `check` and by
`kmsportal.wsgi` when gunicorn loads the application, so a wrong or malformed master key
stops the process with a message that names the key id, before any request is served.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Error, register
from django.core.checks import Warning as CheckWarning
from django.db import DatabaseError

KEYRING_TAG = "keyring"


@register(KEYRING_TAG)
def check_master_keyring(app_configs: object = None, **kwargs: object) -> list[CheckMessage]:
    """Keyring well formed; each configured id matches its stored check value; no id
    that still seals data has been removed."""
    from kmsportal.crypto.kek import KeyringConfigError
    from kmsportal.keyring.backends import key_backend
    from kmsportal.keyring.models import MasterKeyRecord
    from kmsportal.keyring.services import keyring_from_settings, sealed_blob_counts

    backend = key_backend()
    if backend.name != "software":
        backend_errors = _key_backend_problems(backend)
        if backend_errors:
            return backend_errors
    elif (
        settings.DEBUG
        and not settings.KMS_MASTER_KEYS
        and not settings.KMS_MASTER_KEYS_FILE.exists()
    ):
        # A fresh development checkout: `migrate` runs before `bootstrap` creates the file.
        return [
            CheckWarning(
                f"no master keyring yet: {settings.KMS_MASTER_KEYS_FILE} does not exist.",
                hint="`manage.py bootstrap` creates a development keyring there.",
                id="keyring.W001",
            )
        ]
    try:
        keyring = keyring_from_settings()
    except KeyringConfigError as exc:
        return [
            Error(
                str(exc),
                hint="Fix KMS_MASTER_KEYS; see .env.example for the format.",
                id="keyring.E001",
            )
        ]

    try:
        stored = dict(MasterKeyRecord.objects.values_list("key_id", "check_value"))
    except DatabaseError:
        # Tables not migrated yet (first `migrate`): nothing sealed, nothing to compare.
        return []

    errors: list[CheckMessage] = []
    configured = keyring.key_check_values()
    for key_id, check_value in configured.items():
        if key_id in stored and stored[key_id] != check_value:
            errors.append(
                Error(
                    f"master key '{key_id}' does not match the key check value stored in the "
                    "database: this is not the key that sealed this deployment's data.",
                    hint=f"Restore the original key for id '{key_id}' in KMS_MASTER_KEYS.",
                    id="keyring.E002",
                )
            )
    removed = set(stored) - set(configured)
    if removed:
        # Reads every sealed blob header; only happens when an id was removed.
        counts = sealed_blob_counts()
        for key_id in sorted(removed):
            if counts.get(key_id):
                errors.append(
                    Error(
                        f"master key '{key_id}' was removed from KMS_MASTER_KEYS but still "
                        f"seals {counts[key_id]} stored blob(s).",
                        hint=(
                            f"Put '{key_id}' back (after the new primary key), run "
                            "`manage.py rewrap`, then remove it."
                        ),
                        id="keyring.E003",
                    )
                )
    return errors


def _key_backend_problems(backend: object) -> list[CheckMessage]:
    """The key backend's own start-up problems (token missing, wrong PIN, key object
    missing). A missing master key object is only a warning on a deployment that has never
    recorded it (a fresh database: `bootstrap` creates it)."""
    from kmsportal.keyring.backends import KeyBackend
    from kmsportal.keyring.models import MasterKeyRecord

    assert isinstance(backend, KeyBackend)
    messages: list[CheckMessage] = []
    for problem in backend.problems():
        if problem.id == "E005":
            try:
                recorded = MasterKeyRecord.objects.exists()
            except DatabaseError:
                recorded = False
            if not recorded:
                messages.append(CheckWarning(problem.message, hint=problem.hint, id="keyring.W002"))
                continue
        messages.append(Error(problem.message, hint=problem.hint, id=f"keyring.{problem.id}"))
    return messages
