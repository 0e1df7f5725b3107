"""`make run`'s trial settings: written to `<data dir>/trial.env`, read by the settings.

`python -m kmsportal.trial` (run by `make run` before anything else) writes the settings a
local trial needs into one file, mode 0600, in the git-ignored data directory:

    DEBUG=false                 the portal's own error pages, never Django's debug pages
    SECRET_KEY=...              random, kept across runs
    KMS_MASTER_KEYS=...         the development keyring (also kept in master.keys)
    KMS_PUBLIC_URL=...          from KMS_PUBLIC_URL if set, else derived from GUNICORN_BIND
    GUNICORN_BIND, ALLOWED_HOSTS
    SESSION_COOKIE_SECURE=false, CSRF_COOKIE_SECURE=false, SECURE_HSTS_SECONDS=0
                                plain HTTP on a laptop
    KMS_APPROVER_COOLING_OFF=60 a minute, not 24 hours (unless set): a new colleague can
                                approve a grant within the tour; `main` says so loudly

`kmsportal.settings` reads the file when it exists, after `.env` and below real environment
variables, so `manage.py` works in any shell after `make run`, with the same database, keyring
and public URL as the server. A real deployment sets its own environment and has no such file.

No Django here: this runs before the settings can load (they need what it writes).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
from pathlib import Path

from kmsportal.crypto.kek import generate_dev_keyring_spec, write_keyring_file

BASE_DIR = Path(__file__).resolve().parent.parent
TRIAL_FILE_NAME = "trial.env"
DEFAULT_BIND = "127.0.0.1:8000"
#: The approver cooling-off of a trial, in seconds (production: 24 hours). Long enough to
#: see it refuse a brand-new approver, short enough that the README's tour does not stall
#: for a day at "a second key custodian approves the grant".
TRIAL_COOLING_OFF = "60"
#: Written by earlier versions of `make run` (DEBUG=true); reused so a trial keeps its data.
LEGACY_SECRET_KEY_FILE = "secret.key"  # noqa: S105 (a file name)
MASTER_KEYS_FILE = "master.keys"


def data_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Where the trial's database, keyring and settings live (KMS_DATA_DIR, else .kms/)."""
    return Path(environ.get("KMS_DATA_DIR") or BASE_DIR / ".kms").resolve()


def trial_file(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    return data_dir(environ) / TRIAL_FILE_NAME


def public_url_from_bind(bind: str) -> str:
    """The base URL a browser on this machine uses to reach gunicorn bound to ``bind``.

    ``127.0.0.1:18100`` gives ``http://127.0.0.1:18100``; a wildcard address (``0.0.0.0``,
    ``[::]``) gives the loopback address with the same port, since no single name of this
    machine is known to work for everyone (set KMS_PUBLIC_URL for that). Raises ValueError
    for a bind that is not host:port (a unix socket has no URL).
    """
    bind = bind.strip().split(",")[0].strip()  # gunicorn accepts several; the first one
    if bind.startswith(("unix:", "fd://")):
        raise ValueError(f"GUNICORN_BIND={bind} is not a TCP address; set KMS_PUBLIC_URL")
    host, sep, port = bind.rpartition(":")
    if not sep:
        host, port = bind, "8000"  # gunicorn's own default port
    if not port.isdigit() or not host:
        raise ValueError(f"GUNICORN_BIND={bind} is not host:port; set KMS_PUBLIC_URL")
    bare = host.strip("[]")
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return f"http://{host}:{port}"
    if address.is_unspecified:
        return f"http://127.0.0.1:{port}" if address.version == 4 else f"http://[::1]:{port}"
    return f"http://[{bare}]:{port}" if address.version == 6 else f"http://{bare}:{port}"


def _url_host(url: str) -> str:
    netloc = url.split("://", 1)[-1].split("/", 1)[0]
    if netloc.startswith("["):
        return netloc[1 : netloc.index("]")]
    return netloc.rsplit(":", 1)[0] if ":" in netloc else netloc


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (no quoting: every value written here is one token)."""
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the start, replacing it atomically."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def trial_settings(environ: dict[str, str] | os._Environ[str] = os.environ) -> dict[str, str]:
    """The settings of a local trial, keeping the secrets of an earlier run.

    The checkout's `.env` counts like the environment (below it), as in the settings.
    """
    environ = {**read_env_file(BASE_DIR / ".env"), **environ}
    directory = data_dir(environ)
    previous = read_env_file(directory / TRIAL_FILE_NAME)
    bind = environ.get("GUNICORN_BIND") or DEFAULT_BIND
    public_url = (environ.get("KMS_PUBLIC_URL") or "").rstrip("/") or public_url_from_bind(bind)

    secret_key = previous.get("SECRET_KEY", "")
    legacy = directory / LEGACY_SECRET_KEY_FILE
    if not secret_key and legacy.exists():
        secret_key = legacy.read_text().strip()
    secret_key = secret_key or secrets.token_urlsafe(50)

    keyring_path = directory / MASTER_KEYS_FILE
    if not keyring_path.exists():
        write_keyring_file(keyring_path, generate_dev_keyring_spec())
    master_keys = keyring_path.read_text(encoding="ascii").strip()

    host = _url_host(public_url)
    host = f"[{host}]" if ":" in host else host
    hosts = dict.fromkeys(["127.0.0.1", "localhost", "[::1]", host])
    return {
        "DEBUG": "false",
        "SECRET_KEY": secret_key,
        "KMS_MASTER_KEYS": master_keys,
        "KMS_PUBLIC_URL": public_url,
        "GUNICORN_BIND": bind,
        "ALLOWED_HOSTS": ",".join(h for h in hosts if h),
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "KMS_APPROVER_COOLING_OFF": environ.get("KMS_APPROVER_COOLING_OFF") or TRIAL_COOLING_OFF,
    }


def trial_settings_write(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Write the trial settings file (mode 0600) and return its path."""
    directory = data_dir(environ)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    values = trial_settings(environ)
    lines = [
        "# kmsportal trial settings, written by `make run` (python -m kmsportal.trial).",
        "# Read by kmsportal/settings.py when present; environment variables win over it.",
        "# A development keyring and secret: never use this file for a real deployment.",
        *(f"{key}={value}" for key, value in values.items()),
    ]
    path = directory / TRIAL_FILE_NAME
    _write_private(path, "\n".join(lines) + "\n")
    return path


def main() -> int:
    try:
        path = trial_settings_write()
    except (ValueError, OSError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    values = read_env_file(path)
    print(f"Trial settings: {path} (mode 0600; manage.py reads it in any shell).")
    print(f"Public URL written into certificates: {values['KMS_PUBLIC_URL']}")
    print(
        "WARNING: a DEVELOPMENT master keyring and secret live in that directory; anyone who "
        "can read it can unseal every key. Production sets KMS_MASTER_KEYS and SECRET_KEY "
        "in the environment instead."
    )
    cooling_off = values["KMS_APPROVER_COOLING_OFF"]
    if cooling_off != str(24 * 60 * 60):
        print(
            f"WARNING: TRIAL approver cooling-off is {cooling_off} seconds (production default: "
            "86400, 24 hours): a new colleague may approve two-person requests that soon after "
            "setting up their account. Set KMS_APPROVER_COOLING_OFF to change it."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
