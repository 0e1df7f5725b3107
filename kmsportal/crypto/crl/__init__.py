"""Certificate revocation lists (RFC 5280 §5): build, sign, load, inspect.

Modules: :mod:`.entries` (errors, reasons, entry types), :mod:`.build`, :mod:`.read` and
:mod:`.validate` (relying-party checks, RFC 5280 §6.3.3).

Pure functions over `cryptography` objects; signing goes through a
:class:`~kmsportal.crypto.signer.Signer`, so no private key is handled here.

Performance invariants (see PERF_FACTS): a CRL may hold 100k entries.

* Entries are built in one tight loop into one list, and that list is handed to the
  ``CertificateRevocationListBuilder`` constructor. ``add_revoked_certificate`` copies the
  builder's list on every call, so calling it in a loop is quadratic (~16 s at 100k).
* Revoked certificates are built with the ``RevokedCertificateBuilder`` constructor rather than
  its fluent setters (about half the cost); because that bypasses cryptography's own checks, this
  module validates serial numbers and dates itself.
* Reading a parsed CRL: :func:`revoked_serials` builds a dict once; never call
  ``get_revoked_certificate_by_serial_number`` in a loop (a linear scan per call).
"""

from __future__ import annotations

from kmsportal.crypto.crl.build import EntryCache, build_crl, crl_to_der, crl_to_pem
from kmsportal.crypto.crl.entries import (
    MAX_CRL_NUMBER,
    CRLEntry,
    CRLError,
    CRLSummary,
    RevocationReason,
    RevokedInfo,
)
from kmsportal.crypto.crl.read import (
    crl_is_fresh,
    crl_summary,
    load_crl,
    revoked_serials,
    verify_crl_signature,
)
from kmsportal.crypto.crl.validate import CRLValidation, crl_revocation_status, validate_crl

__all__ = [
    "MAX_CRL_NUMBER",
    "CRLEntry",
    "CRLError",
    "CRLSummary",
    "CRLValidation",
    "EntryCache",
    "RevocationReason",
    "RevokedInfo",
    "build_crl",
    "crl_is_fresh",
    "crl_revocation_status",
    "crl_summary",
    "crl_to_der",
    "crl_to_pem",
    "load_crl",
    "revoked_serials",
    "validate_crl",
    "verify_crl_signature",
]
