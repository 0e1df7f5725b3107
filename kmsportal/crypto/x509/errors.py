"""The X509Error family: every domain error of the X.509 layer, worded for a web form."""

from __future__ import annotations

from kmsportal.crypto.errors import KMSError

# --- errors ----------------------------------------------------------------------------------


class X509Error(KMSError, ValueError):
    """Base class of the domain errors of this module; the message is user-facing."""

    code = "x509_invalid"
    status = 400


class PrivateKeyError(X509Error):
    """A private key could not be loaded or is of an unsupported type."""


class SubjectError(X509Error):
    """A subject (distinguished name) string is not valid."""


class SANError(X509Error):
    """A subject alternative name string is not valid."""


class CSRError(X509Error):
    """A certificate signing request is unreadable or not acceptable."""


class IssuanceError(X509Error):
    """A certificate cannot be issued as asked (profile, validity, key or CA constraints)."""


class CertificateLoadError(X509Error):
    """Data that should be a certificate (or a bundle of them) is not readable as one."""


class ExportError(X509Error):
    """A key or PKCS#12 export was refused (for example, a password that is too short)."""
