"""Test configuration: safe, throw-away values for the environment before Django loads.

Real environment variables win (CI sets DATABASE_URL to PostgreSQL); everything else gets a
test value: a fixed test SECRET_KEY, a random test master keyring and a temporary data dir.
"""

import base64
import os
import secrets
import tempfile

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsportal.settings")
os.environ.setdefault("SECRET_KEY", "test-" + secrets.token_urlsafe(40))
os.environ.setdefault(
    "KMS_MASTER_KEYS", "test1:" + base64.b64encode(secrets.token_bytes(32)).decode()
)
os.environ.setdefault("KMS_DATA_DIR", tempfile.mkdtemp(prefix="kmsportal-test-"))
# An existing (empty) static root keeps WhiteNoise quiet; tests serve no collected files.
os.environ.setdefault("STATIC_ROOT", tempfile.mkdtemp(prefix="kmsportal-static-"))
os.environ.setdefault("KMS_PUBLIC_URL", "http://testserver")
# Identity CAs made by `bootstrap` in tests use EC keys: RSA-3072 generation is slow.
os.environ.setdefault("KMS_IDENTITY_CA_KEY_TYPE", "ecp256")
# The audit sequencer thread stays off: tests integrate with audit_integrate() (deterministic).
os.environ.setdefault("KMS_AUDIT_SEQUENCER_INTERVAL", "0")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,127.0.0.1,localhost")

django.setup()

# SoftHSM2 token and the key backend switch (tests/key_backends.py).
pytest_plugins = ["tests.key_backends"]
