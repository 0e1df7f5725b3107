"""WSGI entry point. Runs the start-up checks before serving anything.

gunicorn loads this module (in the master, with `preload_app`), so a malformed or wrong
master key stops the server with the check's message instead of failing at the first unseal.
"""

import os

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kmsportal.settings")

application = get_wsgi_application()


def _run_startup_checks() -> None:
    from django.core import checks
    from django.db import connections

    from kmsportal.checks import KEYRING_TAG
    from kmsportal.crypto.kek import KeyringConfigError
    from kmsportal.keyring.services import keyring_get

    problems = [m for m in checks.run_checks(tags=[KEYRING_TAG]) if m.is_serious()]
    # Do not hand a connection opened here to forked workers.
    connections.close_all()
    if not problems:
        try:
            keyring_get()  # serving needs a keyring, not just a well-formed variable
        except KeyringConfigError as exc:
            raise ImproperlyConfigured(f"kmsportal refuses to start: {exc}") from exc
    if problems:
        raise ImproperlyConfigured(
            "kmsportal refuses to start:\n"
            + "\n".join(f"  {m.id}: {m.msg}\n    hint: {m.hint}" for m in problems)
        )


_run_startup_checks()


def _warn_about_public_url() -> None:
    """Log CA and server certificates that name another address than KMS_PUBLIC_URL."""
    from django.db import connections

    from portal.public_url import log_startup_warnings

    log_startup_warnings()
    connections.close_all()


_warn_about_public_url()
