"""Certificates parsed defensively and candidate paths built with backtracking."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from kmsportal.crypto.validation.report import MAX_PATH_LENGTH, MAX_SIGNATURE_CHECKS
from kmsportal.crypto.x509 import format_name

# --- a certificate, parsed defensively -------------------------------------------------------


def describe_error(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


_T = TypeVar("_T")


class ParsedCertificate:
    """A certificate with everything the checks read, parsed once; never raises.

    A part that cannot be read is None and its problem is kept in ``problems``.
    """

    def __init__(self, cert: x509.Certificate) -> None:
        self.cert = cert
        self.problems: list[str] = []
        fingerprint = self._get(lambda: cert.fingerprint(hashes.SHA256()), "fingerprint")
        self.fingerprint = id(cert).to_bytes(8, "big") if fingerprint is None else fingerprint
        self.subject: x509.Name | None = self._get(lambda: cert.subject, "subject")
        self.issuer: x509.Name | None = self._get(lambda: cert.issuer, "issuer")
        self.extensions: x509.Extensions | None = self._get(lambda: cert.extensions, "extensions")
        self.extension_error = None if self.extensions is not None else self.problems[-1]
        self.public_key = None
        try:
            self.public_key = cert.public_key()
        except Exception as exc:  # unknown or malformed key
            self.key_error = describe_error(exc)
        else:
            self.key_error = ""
        try:
            self.subject_label = format_name(self.subject) if self.subject is not None else ""
        except Exception:
            self.subject_label = ""
        try:
            serial = f"{cert.serial_number:X}"
        except Exception:
            serial = "?"
        self.label = (
            f"'{self.subject_label}'"
            if self.subject_label
            else f"the certificate with serial {serial}"
        )
        self.ski = self._key_id(x509.SubjectKeyIdentifier)
        self.aki = self._key_id(x509.AuthorityKeyIdentifier)

    def _get(self, read: Callable[[], _T], what: str) -> _T | None:
        try:
            return read()
        except Exception as exc:
            self.problems.append(f"its {what} cannot be read: {describe_error(exc)}")
            return None

    def _key_id(self, kind: type[x509.ExtensionType]) -> bytes | None:
        value = self.ext(kind)
        if isinstance(value, x509.SubjectKeyIdentifier):
            return value.digest
        if isinstance(value, x509.AuthorityKeyIdentifier):
            return value.key_identifier
        return None

    def ext(self, kind: type[x509.ExtensionType]) -> x509.ExtensionType | None:
        if self.extensions is None:
            return None
        try:
            return self.extensions.get_extension_for_class(kind).value
        except Exception:
            return None

    @property
    def self_issued(self) -> bool:
        return self.subject is not None and self.subject == self.issuer

    @property
    def is_ca(self) -> bool:
        constraints = self.ext(x509.BasicConstraints)
        return isinstance(constraints, x509.BasicConstraints) and constraints.ca

    def time(self, which: str) -> dt.datetime | None:
        try:
            moment: dt.datetime = getattr(self.cert, which)
        except Exception:
            return None
        return moment


def time_text(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def path_names(path: Sequence[ParsedCertificate]) -> str:
    return " → ".join(c.subject_label or "(empty subject)" for c in path)


# --- path building with backtracking --------------------------------------------------------


@dataclass
class CandidatePath:
    certificates: list[ParsedCertificate]
    complete: bool
    problem: str = ""

    @property
    def issuers(self) -> list[ParsedCertificate]:
        return self.certificates[1:]

    @property
    def below_anchor(self) -> list[ParsedCertificate]:
        return self.certificates[:-1] if self.complete else list(self.certificates)


class PathBuilder:
    """Depth-first path building over every candidate issuer, bounded in work."""

    def __init__(
        self,
        leaf: ParsedCertificate,
        intermediates: Sequence[ParsedCertificate],
        roots: Sequence[ParsedCertificate],
        now: dt.datetime,
    ):
        self.leaf = leaf
        #: The validation time: candidates valid then are tried first.
        self.now = now
        self.root_fingerprints = {r.fingerprint for r in roots}
        pool: dict[bytes, ParsedCertificate] = {}
        for cert in [*roots, *intermediates]:
            pool.setdefault(cert.fingerprint, cert)
        self.pool = list(pool.values())
        self.signature_checks = 0
        self.verified: dict[tuple[bytes, bytes], bool] = {}
        self.dead_ends: list[CandidatePath] = []
        self.exhausted = False

    def signed_by(self, cert: ParsedCertificate, issuer: ParsedCertificate) -> bool:
        key = (cert.fingerprint, issuer.fingerprint)
        if key not in self.verified:
            self.signature_checks += 1
            self.verified[key] = _signed_by(cert, issuer)
        return self.verified[key]

    def candidates(
        self, cert: ParsedCertificate, path: list[ParsedCertificate]
    ) -> list[ParsedCertificate]:
        if cert.issuer is None:
            return []
        used = {c.fingerprint for c in path}
        # RFC 4158 loop prevention: a subject and key pair appears once in a path.
        used_pairs = {(c.subject_label, _key_bytes(c)) for c in path}
        found = []
        for candidate in self.pool:
            if candidate.fingerprint in used or candidate.subject != cert.issuer:
                continue
            if (candidate.subject_label, _key_bytes(candidate)) in used_pairs:
                continue
            found.append(candidate)

        def preference(candidate: ParsedCertificate) -> tuple[int, int, int, int]:
            # A key identifier mismatch is tried last (when both are present).
            key_id_matches = not (
                cert.aki is not None and candidate.ski is not None and cert.aki != candidate.ski
            )
            if self.signature_checks < MAX_SIGNATURE_CHECKS:
                verifies = self.signed_by(cert, candidate)
            else:
                verifies = key_id_matches
            return (
                0 if verifies else 1,
                0 if key_id_matches else 1,
                0 if _valid_at(candidate, self.now) else 1,
                0 if candidate.fingerprint in self.root_fingerprints else 1,
            )

        return sorted(found, key=preference)

    def paths(self) -> Iterator[list[ParsedCertificate]]:
        """Complete paths (ending at a trust root), most promising first."""
        yield from self._extend([self.leaf])

    def _extend(self, path: list[ParsedCertificate]) -> Iterator[list[ParsedCertificate]]:
        current = path[-1]
        if current.fingerprint in self.root_fingerprints:
            yield list(path)
            return
        if len(path) >= MAX_PATH_LENGTH:
            self.dead_ends.append(
                CandidatePath(
                    list(path),
                    False,
                    f"no trust root was reached within {MAX_PATH_LENGTH} certificates",
                )
            )
            return
        if self.signature_checks >= MAX_SIGNATURE_CHECKS:
            self.exhausted = True
            return
        candidates = self.candidates(current, path)
        if not candidates:
            if current.self_issued:
                problem = f"{current.label} is self-signed but is not one of the trust roots"
            else:
                issuer = format_name(current.issuer) if current.issuer is not None else "?"
                problem = (
                    f"the issuer '{issuer}' of {current.label} was not found among the "
                    "intermediates or the trust roots"
                )
            self.dead_ends.append(CandidatePath(list(path), False, problem))
            return
        for candidate in candidates:
            path.append(candidate)
            yield from self._extend(path)
            path.pop()


def _key_bytes(cert: ParsedCertificate) -> bytes:
    try:
        from cryptography.hazmat.primitives import serialization

        der: bytes = cert.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except Exception:
        return cert.fingerprint
    return der


def _valid_at(cert: ParsedCertificate, now: dt.datetime) -> bool:
    start, end = cert.time("not_valid_before_utc"), cert.time("not_valid_after_utc")
    return start is not None and end is not None and start <= now <= end


def _signed_by(cert: ParsedCertificate, issuer: ParsedCertificate) -> bool:
    try:
        cert.cert.verify_directly_issued_by(issuer.cert)
    except Exception:
        return False
    return True
