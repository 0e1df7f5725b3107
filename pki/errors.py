"""The PKI's domain error: the message is written for the person who caused it."""


class PkiError(Exception):
    """A PKI action that cannot be done as asked; the message says why and what to do."""
