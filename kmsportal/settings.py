"""kmsportal settings: one module, every deployment difference is an environment variable.

Every variable is documented in `.env.example`. Defaults are safe for production
(`DEBUG=False`, secure cookies, HSTS). `make run` writes a local trial's settings to
`.kms/trial.env` (kmsportal/trial.py), read here below the environment; DEBUG stays off.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# A local `.env` file is read if present; real environment variables win over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

# Where the embedded database and the development keyring live (git-ignored).
KMS_DATA_DIR = Path(env.str("KMS_DATA_DIR", default="") or BASE_DIR / ".kms").resolve()
# `make run` writes the trial's settings there (kmsportal/trial.py); read below the
# environment, so `manage.py` in any shell sees the same database, keyring and URL.
_trial_file = KMS_DATA_DIR / "trial.env"
KMS_TRIAL_SETTINGS_FILE: Path | None = _trial_file if _trial_file.exists() else None
if KMS_TRIAL_SETTINGS_FILE is not None:
    environ.Env.read_env(KMS_TRIAL_SETTINGS_FILE, overwrite=False)

DEBUG: bool = env.bool("DEBUG", default=False)

# Placeholder values that must never protect a real deployment.
INSECURE_SECRET_KEYS = frozenset({"", "change-me", "changeme", "insecure", "secret"})
_DEV_SECRET_KEY_FILE = KMS_DATA_DIR / "secret.key"


def _secret_key() -> str:
    """The SECRET_KEY from the environment; a per-checkout random one only under DEBUG."""
    value: str = env.str("SECRET_KEY", default="")
    if value and value not in INSECURE_SECRET_KEYS and not value.startswith("django-insecure"):
        return value
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set (or is a placeholder). For a local trial run `make run` "
            "once in the checkout (it writes .kms/trial.env, which manage.py then reads in any "
            "shell); a real deployment sets SECRET_KEY to a long random string "
            '(python -c "import secrets; print(secrets.token_urlsafe(50))").'
        )
    # Development only: a random key kept in the data directory so sessions survive restarts.
    if _DEV_SECRET_KEY_FILE.exists():
        return _DEV_SECRET_KEY_FILE.read_text().strip()
    KMS_DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    generated = secrets.token_urlsafe(50)
    _DEV_SECRET_KEY_FILE.touch(mode=0o600)
    _DEV_SECRET_KEY_FILE.write_text(generated)
    return generated


SECRET_KEY = _secret_key()
ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "kmsportal.keyring",
    "accounts",
    "audit",
    "vault",
    "pki",
    "notifications",
    # The admin REST API (issue 17); "ninja" serves its Swagger UI from bundled static files.
    "ninja",
    "adminapi",
    "portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "kmsportal.middleware.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Request id and source IP for audit events; records every 403 as access.denied.
    "audit.middleware.AuditRequestMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # A session that passed the password but not yet the second factor reaches only the
    # MFA pages, sign-out and the public endpoints (accounts.middleware).
    "accounts.middleware.MfaRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # A key backend (PKCS#11 token) that fails mid-request answers 503, not a traceback.
    "kmsportal.keyring.middleware.KeyBackendUnavailableMiddleware",
    # Logs requests addressed to another host than KMS_PUBLIC_URL (once per host).
    "portal.public_url.PublicUrlHostMiddleware",
    # Bidi controls in user text are shown as visible [U+202E] markers (text spoofing).
    "kmsportal.bidi.BidiNeutralizeMiddleware",
]

ROOT_URLCONF = "kmsportal.urls"
WSGI_APPLICATION = "kmsportal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.navigation",
            ],
            # |utc (ISO 8601 UTC) and the human labels, on every page without {% load %}.
            "builtins": ["portal.template_filters"],
        },
    },
]

# An empty value (as in .env.example) means the default, like an unset one.
DATABASES = {
    "default": env.db_url_config(
        env.str("DATABASE_URL", default="") or f"sqlite:///{KMS_DATA_DIR / 'db.sqlite3'}"
    ),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("DB_CONN_MAX_AGE", default=60))
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite: wait for the write lock instead of failing at once, and start write
    # transactions with BEGIN IMMEDIATE so concurrent writers queue up (no deadlocks).
    # Connections persist like PostgreSQL's (CONN_MAX_AGE above): opening one costs ~0.5 ms
    # (Django registers its SQL functions, SQLite reads the schema), more than a CRL download.
    # synchronous stays FULL, SQLite's default: in WAL mode NORMAL would save the fsync of
    # every commit (0.2 ms on an idle disk, 2 ms on a busy one; a key fetch commits once),
    # but a power cut could then take back deliveries and their audit events after the key
    # material has left.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA secure_delete=ON;",
        }
    )

# CACHE_URL: with several nodes they must all use the same Redis (`redis://host:6379/0`,
# `rediss://` for TLS).
REDIS_SCHEMES = frozenset({"redis", "rediss", "rediscache"})


def cache_config(url: str) -> dict[str, object]:
    """The cache for a CACHE_URL. Redis URLs always select Django's own backend over the
    pinned `redis` package, even if django-redis is installed (django-environ prefers it)."""
    scheme = url.partition("://")[0]
    backend = "django.core.cache.backends.redis.RedisCache" if scheme in REDIS_SCHEMES else None
    config: dict[str, object] = env.cache_url_config(url, backend=backend)
    return config


CACHE_URL: str = env.str("CACHE_URL", default="")
CACHES = {
    "default": cache_config(CACHE_URL or "locmemcache://kmsportal"),
    # Lockout and rate-limit counters (kmsportal.counters): the database, which every worker
    # and node shares, unless CACHE_URL names a Redis.
    "counters": (
        cache_config(CACHE_URL)
        if CACHE_URL
        else {
            "BACKEND": "kmsportal.counters.DatabaseCounterCache",
            "LOCATION": "kms_counters",  # created by accounts' migration 0003
            # Never cull: a spray over many usernames must not push a lockout out.
            "OPTIONS": {"MAX_ENTRIES": 10_000_000},
        }
    ),
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "auth.User"

PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# One date-time format everywhere: ISO 8601 in UTC (kmsportal/formats/en/formats.py).
FORMAT_MODULE_PATH = ["kmsportal.formats"]

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# --- Sessions and cookies ---------------------------------------------------------------
# Idle timeout: every request pushes expiry forward; an idle session ends after this long.
SESSION_IDLE_TIMEOUT_SECONDS: int = env.int("SESSION_IDLE_TIMEOUT_SECONDS", default=30 * 60)
SESSION_COOKIE_AGE = SESSION_IDLE_TIMEOUT_SECONDS
SESSION_SAVE_EVERY_REQUEST = True
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Strict"
CSRF_COOKIE_HTTPONLY = True
CSRF_COOKIE_SAMESITE = "Strict"
# Secure cookies and HSTS are on outside DEBUG; `make run` (DEBUG=true) serves plain HTTP.
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
# Relying parties fetch CRLs, CA certificates and OCSP answers over plain HTTP (RFC 5280
# 4.2.1.13: they must not need TLS to check revocation); load balancers probe /healthz, /readyz.
SECURE_REDIRECT_EXEMPT = [
    r"^pki/crl/",
    r"^pki/ca/[^/]+\.(crt|pem)$",
    r"^pki/ocsp/",
    r"^healthz$",
    r"^readyz$",
]
if env.bool("SECURE_PROXY_SSL_HEADER", default=False):
    # Only behind a proxy that strips and sets X-Forwarded-Proto itself.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# CSRF refusals are recorded in the audit log like every other 403.
CSRF_FAILURE_VIEW = "audit.views.csrf_failure"

# --- kmsportal ---------------------------------------------------------------------------
# Base URL written into certificates (CRL distribution points, AIA). Plain HTTP is right
# for CRLs and OCSP (RFC 5280 section 4.2.1.13): relying parties must not need TLS to check
# revocation.
KMS_PUBLIC_URL: str = env.str("KMS_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")
# Longest validity of tls-server certificates, days (CA/B Forum BRs: 200 since March 2026).
KMS_TLS_SERVER_MAX_DAYS: int = env.int("KMS_TLS_SERVER_MAX_DAYS", default=200)
# A CA's complete CRL is republished by publish_crls once its delta lists revocations and it
# is older than this many seconds (relying parties without delta support catch up).
KMS_CRL_REBASE_AFTER: int = env.int("KMS_CRL_REBASE_AFTER", default=3600)

# Expiry notifications (manage.py notify_expiring). Email through Django's backend: SMTP from
# EMAIL_URL (e.g. smtp+tls://user:password@mail.example.org:587), the console otherwise.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="kmsportal@localhost")
KMS_NOTIFY_WINDOWS_DAYS: list[int] = env.list(
    "KMS_NOTIFY_WINDOWS_DAYS", cast=int, default=[30, 7, 1]
)
KMS_NOTIFY_MIN_LIFETIME_DAYS: int = env.int("KMS_NOTIFY_MIN_LIFETIME_DAYS", default=7)
KMS_NOTIFY_WEBHOOK_URL: str = env.str("KMS_NOTIFY_WEBHOOK_URL", default="")
KMS_NOTIFY_WEBHOOK_SECRET: str = env.str("KMS_NOTIFY_WEBHOOK_SECRET", default="")

# Master keyring: "id2:base64key,id1:base64key" (32-byte keys; the first seals, all unseal).
# Parsed and checked by kmsportal.keyring (system check), never logged.
KMS_MASTER_KEYS: str = env.str("KMS_MASTER_KEYS", default="")
# Development only: without KMS_MASTER_KEYS and with DEBUG on, the keyring is read from
# this file, which `manage.py bootstrap` creates (mode 0600).
KMS_MASTER_KEYS_FILE = KMS_DATA_DIR / "master.keys"

# Key backends (kmsportal.keyring.backends), chosen like STORAGES: KMS_KEY_BACKEND=software
# (master keys from KMS_MASTER_KEYS) or pkcs11 (master keys, CA keys and per-version wrapping
# keys in a PKCS#11 token; docs/key-custody.md). The PIN comes from a file or the
# environment and never reaches the database; its option name makes Django's error pages
# mask it.
KMS_KEY_BACKEND: str = env.str("KMS_KEY_BACKEND", default="software") or "software"
KMS_PKCS11_MODULE: str = env.str("KMS_PKCS11_MODULE", default="/usr/lib/softhsm/libsofthsm2.so")
KMS_PKCS11_TOKEN_LABEL: str = env.str("KMS_PKCS11_TOKEN_LABEL", default="kmsportal")
KMS_KEY_BACKENDS: dict[str, dict[str, Any]] = {
    "software": {"BACKEND": "kmsportal.keyring.backends.software.SoftwareKeyBackend"},
    "pkcs11": {
        "BACKEND": "kmsportal.keyring.backends.pkcs11.Pkcs11KeyBackend",
        "OPTIONS": {
            "MODULE": KMS_PKCS11_MODULE,
            "TOKEN_LABEL": KMS_PKCS11_TOKEN_LABEL,
            "PIN_FILE": env.str("KMS_PKCS11_PIN_FILE", default=""),
            "PIN_SECRET": env.str("KMS_PKCS11_PIN", default=""),
            "MASTER_KEY_IDS": env.list("KMS_PKCS11_MASTER_KEY_IDS", default=["hsm1"]),
        },
    },
}
if KMS_KEY_BACKEND not in KMS_KEY_BACKENDS:
    raise ImproperlyConfigured(
        f"KMS_KEY_BACKEND must be software or pkcs11, not {KMS_KEY_BACKEND!r}"
    )
KMS_KEY_BACKENDS["default"] = KMS_KEY_BACKENDS[KMS_KEY_BACKEND]

# Key distribution: the CAs `bootstrap` creates for client identities (the root is what
# clients pin), and the per-client request limit of the client API.
KMS_ROOT_CA_NAME: str = env.str("KMS_ROOT_CA_NAME", default="kms-root")
KMS_IDENTITY_CA_NAME: str = env.str("KMS_IDENTITY_CA_NAME", default="kms-clients")
KMS_IDENTITY_CA_KEY_TYPE: str = env.str("KMS_IDENTITY_CA_KEY_TYPE", default="rsa3072")
KMS_CLIENT_RATE_LIMIT: int = env.int("KMS_CLIENT_RATE_LIMIT", default=120)  # requests/minute
KMS_CLIENT_RATE_WINDOW_SECONDS = 60
# Server identity (issue 13, docs/server-identity.md): the CA that signs only the KMS's own
# certificate (clients pin its key), how often the stapled OCSP status of that certificate
# is renewed in the shared cache (clients refuse one older than 10 minutes by default), and
# how many unattributable client API refusals one source address gets per minute before
# its requests are refused unread (429).
KMS_SERVER_IDENTITY_CA_NAME: str = env.str(
    "KMS_SERVER_IDENTITY_CA_NAME", default="kms-server-identity"
)
KMS_SERVER_STATUS_REFRESH_SECONDS: int = env.int("KMS_SERVER_STATUS_REFRESH_SECONDS", default=120)
KMS_API_ADDRESS_REFUSAL_LIMIT: int = env.int("KMS_API_ADDRESS_REFUSAL_LIMIT", default=60)

# Sign-in lockout (accounts.throttle): failures per username and per source address before
# further attempts are refused for SIGN_IN_LOCKOUT_SECONDS.
SIGN_IN_MAX_FAILURES_PER_USERNAME: int = env.int("SIGN_IN_MAX_FAILURES_PER_USERNAME", default=5)
SIGN_IN_MAX_FAILURES_PER_ADDRESS: int = env.int("SIGN_IN_MAX_FAILURES_PER_ADDRESS", default=20)
SIGN_IN_LOCKOUT_SECONDS: int = env.int("SIGN_IN_LOCKOUT_SECONDS", default=15 * 60)

# Multi-factor sign-in (accounts.mfa): roles that must use an authenticator app (TOTP).
# Anyone else who enrolled one must use it too. Wrong codes share the limits above (per user).
KMS_MFA_REQUIRED_ROLES: list[str] = env.list(
    "KMS_MFA_REQUIRED_ROLES", default=["administrator", "key_custodian", "ca_operator"]
)

# Separation of duties (docs/separation-of-duties.md): an account, password, authenticator or
# role younger than this many seconds cannot approve two-person requests; invitation links
# (new users, password resets) work once, for this many seconds.
KMS_APPROVER_COOLING_OFF: int = env.int("KMS_APPROVER_COOLING_OFF", default=24 * 60 * 60)
KMS_INVITATION_SECONDS: int = env.int("KMS_INVITATION_SECONDS", default=72 * 60 * 60)

# Audit log (docs/audit-log.md). The sequencer thread of each web process integrates
# committed events and signs a tree head every this many seconds (0 turns the thread off;
# `manage.py audit_head` integrates on demand). Pinned audit public keys (PEM or base64,
# comma-separated): verification refuses a database key that is not among them.
KMS_AUDIT_SEQUENCER_INTERVAL: float = env.float("KMS_AUDIT_SEQUENCER_INTERVAL", default=2.0)
KMS_AUDIT_PUBLIC_KEYS: list[str] = [
    key
    for key in env.str("KMS_AUDIT_PUBLIC_KEYS", default="").replace(";", ",").split(",")
    if key.strip()
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        # Never log request bodies: they may carry passwords or key material.
        "django.request": {"level": "WARNING"},
        "django.db.backends": {"level": "INFO"},
    },
}
