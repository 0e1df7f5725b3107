"""A secret shown once, after a redirect (Post/Redirect/Get).

The POST that makes a one-time secret (an enrollment token, a password) keeps it in the
session, sealed under the master keyring with AAD naming the purpose and the session, and
redirects; the GET that follows takes it out (the session forgets it in that same request)
and shows it. A reload finds nothing and the page says how to get a new secret instead of
submitting the form again. The session row holds the sealed secret only between the two
requests.
"""

from __future__ import annotations

import base64

from django.http import HttpRequest

from kmsportal.crypto.envelope import EnvelopeError
from kmsportal.keyring.services import seal, unseal

_SESSION_KEY = "one_time_secrets"


def _aad(request: HttpRequest, purpose: str) -> bytes:
    return f"one-time:{purpose}:user:{request.user.pk}".encode()


def one_time_secret_keep(request: HttpRequest, *, purpose: str, secret: str) -> None:
    """Keep ``secret`` for the next GET that asks for ``purpose`` (replacing an older one)."""
    blob = seal(secret.encode("utf-8"), aad=_aad(request, purpose))
    kept = dict(request.session.get(_SESSION_KEY, {}))
    kept[purpose] = base64.b64encode(blob).decode("ascii")
    request.session[_SESSION_KEY] = kept


def one_time_secret_take(request: HttpRequest, *, purpose: str) -> str | None:
    """The kept secret, removed from the session; None if it was already shown."""
    kept = dict(request.session.get(_SESSION_KEY, {}))
    encoded = kept.pop(purpose, None)
    if encoded is None:
        return None
    if kept:
        request.session[_SESSION_KEY] = kept
    else:
        request.session.pop(_SESSION_KEY, None)
    try:
        return unseal(base64.b64decode(encoded), aad=_aad(request, purpose)).decode("utf-8")
    except (EnvelopeError, ValueError):
        return None
