"""The PKI's domain error: the message is written for the person who caused it."""

from kmsportal.crypto.errors import KMSError


class PkiError(KMSError):
    """A PKI action that cannot be done as asked; the message says why and what to do."""

    code = "pki_refused"
    status = 400
