"""Certificate path validation that says exactly which check failed, and never raises.

:func:`validate_certificate` builds candidate paths from a leaf to a trust root itself
(issuer name match, AKI/SKI, signature verification) with backtracking: every candidate
issuer is tried, depth first, within a bounded amount of work, and the first path on which
every path check passes is chosen; when none passes, the report lists every path tried and
why each failed. Each aspect is one :class:`Check`, in a fixed order (:data:`CHECK_NAMES`).

Every rule of RFC 5280 section 6.1 that applies to the purposes offered here lives in this
module, for every purpose (``any`` included):

* signatures of every link, validity periods (the trust root's too, as OpenSSL does);
* basic constraints (CA:TRUE for every issuer) and pathLenConstraint;
* name constraints (section 6.1.4 (g), 4.2.1.10) for DNS names, IP addresses, email
  addresses (SAN and the subject's emailAddress), URIs (their host) and directory names;
  a name type the constraint cannot be checked for is a failure (fail closed);
* critical extensions this validator does not process are refused (section 6.1.4 (o),
  6.1.5 (f)); certificates whose extensions cannot be parsed (duplicates, invalid values)
  are refused;
* key and signature algorithm minimums: RSA at least 2048 bits, EC only on P-256, P-384 and
  P-521, Ed25519/Ed448; no DSA; signatures with SHA-256 or stronger (no MD5, no SHA-1). The
  trust root's own self-signature is not judged (it is trusted as configured, RFC 5280
  6.1.1 (d)), its key is;
* key usage (keyCertSign for issuers) and extended key usage per purpose (an EKU in a CA
  certificate restricts what it may issue).

For ``server`` and ``client`` the decision is also cross-checked with
``cryptography.x509.verification``; when that verifier rejects the chain, its message is put
into the check it concerns. It is a second opinion, never the only place a rule lives.

Never raises: any certificate (malformed extensions, unknown algorithms), any host name and
any failure of a revocation source becomes a failed or undecided check with a reason.
:func:`validate_certificate_data` takes raw bytes (PEM or DER) and reports undecodable input
the same way.

Modules: :mod:`.report` (the report and its checks), :mod:`.paths` (parsing and path
building), :mod:`.checks` and :mod:`.names` (the rules), :mod:`.verifier` (the second
opinion) and :mod:`.validate` (the entry points).

Simplifications (documented rather than hidden): certificate policies are not processed (a
chain that requires an explicit policy is refused rather than accepted unchecked); host
names are matched only against SANs, never the CN (RFC 6125 section 6.4.4, CAB BR).
"""

from __future__ import annotations

from kmsportal.crypto.validation.report import (
    CHECK_NAMES,
    MAX_PATH_LENGTH,
    MAX_PATHS_TRIED,
    MAX_SIGNATURE_CHECKS,
    Check,
    Purpose,
    RevocationStatus,
    ValidationReport,
)
from kmsportal.crypto.validation.validate import validate_certificate, validate_certificate_data

__all__ = [
    "CHECK_NAMES",
    "MAX_PATHS_TRIED",
    "MAX_PATH_LENGTH",
    "MAX_SIGNATURE_CHECKS",
    "Check",
    "Purpose",
    "RevocationStatus",
    "ValidationReport",
    "validate_certificate",
    "validate_certificate_data",
]
