"""`manage.py key_import_params KEY --out DIR [--key-size 3072|4096]`: bring your own key,
step 1. Writes DIR/wrapping-public-key.pem and DIR/import-token (mode 0600), valid 24 hours."""

from __future__ import annotations

import os
from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from kmsportal.commands import KMSCommand
from vault.key_import import key_import_parameters_create


class Command(KMSCommand):
    help = (
        "Issue a one-time RSA wrapping key and import token for importing AES-256 material "
        "into KEY (an existing active key gets a new version; a new name becomes a new key)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("key")
        parser.add_argument("--out", required=True, help="directory for the two files")
        parser.add_argument("--key-size", type=int, default=3072, choices=[3072, 4096])

    def handle(self, *args: object, key: str, out: str, key_size: int, **options: object) -> None:
        directory = Path(out)
        public_path = directory / "wrapping-public-key.pem"
        token_path = directory / "import-token"
        for path in (public_path, token_path):
            if path.exists():
                raise CommandError(f"{path} exists; use an empty directory")
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        parameters = key_import_parameters_create(actor=None, key_name=key, key_size=key_size)
        public_path.write_text(parameters.public_key_pem)
        descriptor = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as token_file:
            token_file.write(parameters.token + "\n")
        self.stdout.write(
            f"Import parameters for key {key}: RSA-{key_size} wrapping key {public_path}, "
            f"import token {token_path} (valid until "
            f"{parameters.record.expires_at:%Y-%m-%d %H:%M} UTC, one use).\n"
            "Wrap the AES-256 material with RSA_AES_KEY_WRAP_SHA_256 (docs/key-custody.md), "
            f"then: manage.py key_import {key} --wrapped FILE --token-file {token_path}"
        )
