"""What a validation reports: the checks, their order, the limits and the report itself."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Literal

from cryptography import x509

Purpose = Literal["server", "client", "any"]
PURPOSES: tuple[str, ...] = ("server", "client", "any")

#: The checks of a report, always in this order.
CHECK_NAMES: tuple[str, ...] = (
    "decoding",
    "path",
    "signatures",
    "validity period",
    "basic constraints",
    "name constraints",
    "critical extensions",
    "algorithms",
    "key usage and EKU",
    "hostname",
    "revocation",
)

#: The checks that depend on the chosen path (a path is valid when none of them fails).
PATH_CHECKS = (
    "signatures",
    "validity period",
    "basic constraints",
    "name constraints",
    "critical extensions",
    "algorithms",
    "key usage and EKU",
)

#: Longest chain (leaf and root included) that the path builder follows.
MAX_PATH_LENGTH = 10
#: Complete paths evaluated at most before the builder gives up looking for a valid one.
MAX_PATHS_TRIED = 32
#: Signature verifications the builder may spend (each costs up to a few ms).
MAX_SIGNATURE_CHECKS = 256
#: Input larger than this is not parsed (a certificate is a few KiB; a bundle far less).
MAX_INPUT_BYTES = 1024 * 1024


@dataclass(frozen=True)
class RevocationStatus:
    """What a revocation source (CRL, OCSP, the CA database) says about one certificate.

    ``source`` names where the answer came from (e.g. "CRL #12 of CN=Issuing CA"); for an
    ``unknown`` status it may say why no answer was obtained.
    """

    status: Literal["good", "revoked", "unknown"]
    reason: x509.ReasonFlags | None = None
    revoked_at: dt.datetime | None = None
    source: str = ""


@dataclass(frozen=True)
class Check:
    """One aspect of a validation; ``passed`` is None when it did not apply or was skipped."""

    name: str
    passed: bool | None
    detail: str


@dataclass(frozen=True)
class ValidationReport:
    """The outcome: ``ok`` is true when no check failed and a path to a trust root exists.

    ``path`` is the chain that was chosen, leaf first (incomplete when the path check failed).
    ``paths_tried`` describes every complete path evaluated and why it was not valid (empty
    when the first path was valid). ``cross_checked`` tells whether ``cryptography``'s
    verifier ran; ``verifier_error`` is its message when it rejected the chain.
    """

    ok: bool
    checks: list[Check]
    path: list[x509.Certificate] = field(default_factory=list)
    cross_checked: bool = False
    verifier_error: str | None = None
    paths_tried: list[str] = field(default_factory=list)

    def check(self, name: str) -> Check:
        """The check called ``name`` (one of :data:`CHECK_NAMES`)."""
        for item in self.checks:
            if item.name == name:
                return item
        raise KeyError(name)

    @property
    def failed(self) -> list[Check]:
        """The checks that failed, in report order."""
        return [c for c in self.checks if c.passed is False]

    @property
    def revocation_checked(self) -> bool:
        """True when every certificate's revocation status was established (good)."""
        return self.check("revocation").passed is True
