"""PKI services, pki's public service surface: certificate authorities (`cas`), issuance from
a CSR or a generated key pair (`issuance`) and certificate validation (`validation`).
Revocation and CRL publication live in `pki.revocation` and `pki.crl` and are re-exported
here (`certificate_revoke`, `certificate_release`, `crl_publish`), so callers import
services from one place: ``from pki import services`` / ``from pki.services import ...``.

Every state-changing service is one transaction that records its audit event last (see
audit.services: lock order). Audit details name what was done (CA, subject, serial, profile,
fingerprint), never a key or a password.

Private keys: a CA's key is generated, sealed and loaded only by `pki.signers`; the key of a
server-generated key pair lives in memory for the one call that returns it inside a
password-protected PKCS#12, and is never stored.

Key generation runs before the transaction opens: an RSA-3072 key takes ~330 ms (and far
more at times), and a transaction on SQLite holds the database's write lock from its first
statement. Cheap input checks run before key generation so that bad input costs nothing.

Every certificate is built by `kmsportal.crypto.x509`, also for the confirmation pages (with
`pki.signers.PreviewSigner`), so what a confirmation page shows passed the same checks as the
issuance that follows.
"""

from __future__ import annotations

from ..crl import crl_publish
from ..distribution import ca_distribution_points
from ..errors import PkiError
from ..revocation import (
    REVOCATION_REASONS,
    certificate_by_serial,
    certificate_release,
    certificate_revocation_preview,
    certificate_revoke,
)
from .cas import (
    CAPreview,
    certificate_authority_create,
    certificate_authority_disable,
    certificate_authority_preview,
)
from .issuance import (
    GeneratedCredential,
    IssuePreview,
    certificate_csr_preview,
    certificate_generated_preview,
    certificate_issue_from_csr,
    certificate_issue_generated,
    server_identity_certificate_issue,
)
from .records import (
    DEFAULT_INTERMEDIATE_DAYS,
    DEFAULT_LEAF_KEY_TYPE,
    DEFAULT_ROOT_DAYS,
    PURPOSES,
)
from .validation import ValidationOutcome, certificate_validate

__all__ = [
    "DEFAULT_INTERMEDIATE_DAYS",
    "DEFAULT_LEAF_KEY_TYPE",
    "DEFAULT_ROOT_DAYS",
    "PURPOSES",
    "REVOCATION_REASONS",
    "CAPreview",
    "GeneratedCredential",
    "IssuePreview",
    "PkiError",
    "ValidationOutcome",
    "ca_distribution_points",
    "certificate_authority_create",
    "certificate_authority_disable",
    "certificate_authority_preview",
    "certificate_by_serial",
    "certificate_csr_preview",
    "certificate_generated_preview",
    "certificate_issue_from_csr",
    "certificate_issue_generated",
    "certificate_release",
    "certificate_revocation_preview",
    "certificate_revoke",
    "certificate_validate",
    "crl_publish",
    "server_identity_certificate_issue",
]
