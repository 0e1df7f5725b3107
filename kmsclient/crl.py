"""Fetch and check a CA's CRL as a relying party: ``python -m kmsclient crl``.

Downloads the CRL from its distribution point (plain HTTP is fine: the CRL is signed),
checks it as RFC 5280 §6.3.3 asks against the CA certificate the relying party trusts
(``--ca-cert``, obtained independently): a complete CRL, issued and signed by that CA whose
key usage allows cRLSign, with a non-critical CRLNumber, no unknown critical extension, a
scope that covers the CA's certificates, current (thisUpdate <= now < nextUpdate); and, given
a serial number, whether that certificate is on it or on the delta CRL the CRL points to. Uses `kmsportal.crypto` and
`requests`, never Django.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests
from cryptography import x509

from kmsportal.crypto.crl import (
    CRLSummary,
    RevokedInfo,
    crl_revocation_status,
    validate_crl,
)
from kmsportal.crypto.errors import KMSError
from kmsportal.crypto.x509 import X509Error, format_name, load_certificate

__all__ = [
    "MAX_CRL_BYTES",
    "CRLCheck",
    "CRLInputError",
    "CRLInvalid",
    "check_crl",
    "download_crl",
    "parse_serial",
]

#: Largest CRL downloaded (a CRL of 100,000 entries is about 4 MiB).
MAX_CRL_BYTES = 32 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0


class CRLInputError(KMSError):
    """Input the command cannot use (file, serial, URL, unreachable server): exit status 2."""

    code = "crl_input_unusable"


class CRLInvalid(KMSError):
    """The CRL cannot be relied on (not a CRL, wrong signer, stale, delta): exit status 1."""

    code = "crl_invalid"


@dataclass(frozen=True)
class CRLCheck:
    """A CRL that passed every check, and what it says about ``serial`` (if one was asked)."""

    summary: CRLSummary
    issuer: str
    serial: int | None
    revoked: RevokedInfo | None
    #: The delta CRL also consulted for ``serial`` (its number), if any.
    delta_crl_number: int | None = None

    @property
    def is_revoked(self) -> bool:
        return self.revoked is not None


_SERIAL = re.compile(r"(?:0[xX])?[0-9A-Fa-f:]+")


def format_serial(number: int) -> str:
    """Upper-case hex in whole bytes (a leading 0 when needed), as openssl and the portal print it."""
    digits = f"{number:X}"
    return digits.zfill(len(digits) + len(digits) % 2)


def parse_serial(text: str) -> int:
    """A serial number in hex (``5A:3F:...``, ``5a3f...`` or ``0x5A3F``) as an int."""
    cleaned = (text or "").strip()
    if not _SERIAL.fullmatch(cleaned):
        raise CRLInputError(f"--serial: {text!r} is not a hexadecimal serial number")
    digits = cleaned.removeprefix("0x").removeprefix("0X").replace(":", "")
    if not digits:
        raise CRLInputError(f"--serial: {text!r} is not a hexadecimal serial number")
    value = int(digits, 16)
    if not 0 < value < 2**160:
        raise CRLInputError(f"--serial: {text!r} is not a possible serial number (1 to 20 bytes)")
    return value


def _load_ca(path: str) -> x509.Certificate:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CRLInputError(f"--ca-cert: cannot read {path}: {exc.strerror or exc}") from None
    try:
        return load_certificate(data)
    except X509Error as exc:
        raise CRLInputError(f"--ca-cert: {path}: {exc}") from None


def download_crl(
    url: str, *, timeout: float = DEFAULT_TIMEOUT, session: requests.Session | None = None
) -> bytes:
    """GET ``url`` and return the body (at most :data:`MAX_CRL_BYTES`)."""
    if not re.match(r"https?://", url or ""):
        raise CRLInputError(f"--url: {url!r} is not an http:// or https:// URL")
    http = session or requests.Session()
    try:
        with http.get(url, timeout=timeout, stream=True) as response:
            if response.status_code != 200:
                raise CRLInputError(
                    f"GET {url} answered HTTP {response.status_code} {response.reason or ''}".strip()
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > MAX_CRL_BYTES:
                    raise CRLInvalid(f"the CRL at {url} is larger than {MAX_CRL_BYTES} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except requests.RequestException as exc:
        raise CRLInputError(f"cannot download {url}: {type(exc).__name__}: {exc}") from None


def check_crl(
    *,
    url: str,
    ca_certificate: str,
    serial: str | None = None,
    now: datetime | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    use_delta: bool = True,
) -> CRLCheck:
    """Download the CRL at ``url`` and check it against the CA certificate in the file
    ``ca_certificate`` as RFC 5280 §6.3.3 asks (:func:`validate_crl`: issuer, signature,
    cRLSign, CRLNumber, critical extensions, scope, freshness); report on ``serial`` (hex)
    if given, taking a delta CRL (FreshestCRL) into account when the CRL points at one.

    Raises :class:`CRLInputError` (bad arguments, unreadable file, download failure) or
    :class:`CRLInvalid` (every reason the CRL cannot be relied on, in one message).
    """
    wanted = parse_serial(serial) if serial is not None else None
    issuer = _load_ca(ca_certificate)
    data = download_crl(url, timeout=timeout)
    moment = now or datetime.now(UTC)
    result = validate_crl(
        data, issuer_certificate=issuer, now=moment, read_entries=wanted is not None
    )
    if not result.ok or result.summary is None:
        raise CRLInvalid(f"the CRL at {url} cannot be relied on: " + "; ".join(result.problems))
    issuer_name = format_name(issuer.subject) or "(empty subject)"
    revoked = None
    delta_number = None
    if wanted is not None:
        delta = None
        if use_delta and result.summary.freshest_crl_urls:
            delta_url = result.summary.freshest_crl_urls[0]
            delta = validate_crl(
                download_crl(delta_url, timeout=timeout),
                issuer_certificate=issuer,
                now=moment,
                base=result,
            )
            if not delta.ok:
                raise CRLInvalid(
                    f"the delta CRL at {delta_url} cannot be relied on: "
                    + "; ".join(delta.problems)
                )
            delta_number = delta.summary.crl_number if delta.summary else None
        revoked = crl_revocation_status(wanted, result, delta)
    return CRLCheck(
        summary=result.summary,
        issuer=issuer_name,
        serial=wanted,
        revoked=revoked,
        delta_crl_number=delta_number,
    )


# --- the command line ------------------------------------------------------------------------

EXIT_GOOD = 0
EXIT_REVOKED_OR_INVALID = 1
EXIT_INPUT = 2


def crl_command(args: object) -> int:
    """``crl --url URL --ca-cert FILE [--serial HEX]``: print what the CRL says.

    Exit status 0: the CRL is valid and current (and the serial, if given, is not on it);
    1: the serial is revoked, or the CRL cannot be relied on; 2: input errors.
    """
    import sys

    try:
        result = check_crl(
            url=args.url,  # type: ignore[attr-defined]
            ca_certificate=args.ca_cert,  # type: ignore[attr-defined]
            serial=args.serial,  # type: ignore[attr-defined]
            timeout=args.timeout,  # type: ignore[attr-defined]
        )
    except CRLInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except CRLInvalid as exc:
        print(f"INVALID: {exc}", file=sys.stderr)
        return EXIT_REVOKED_OR_INVALID
    summary = result.summary
    assert summary.next_update is not None  # a current CRL has one
    print(
        f"OK: CRL #{summary.crl_number} of {result.issuer}: signature valid, current "
        f"(this update {summary.this_update:%Y-%m-%d %H:%M:%S} UTC, next update "
        f"{summary.next_update:%Y-%m-%d %H:%M:%S} UTC), {summary.entry_count} "
        f"revoked certificate{'s' if summary.entry_count != 1 else ''}"
    )
    if result.serial is None:
        return EXIT_GOOD
    serial = format_serial(result.serial)
    if result.delta_crl_number is not None:
        print(f"delta CRL #{result.delta_crl_number} consulted as well")
    if result.revoked is None:
        print(f"GOOD: serial {serial} is not on the CRL")
        return EXIT_GOOD
    info = result.revoked
    since = (
        f", key compromised since {info.invalidity_date:%Y-%m-%d %H:%M:%S} UTC"
        if info.invalidity_date
        else ""
    )
    print(
        f"REVOKED: serial {serial} was revoked on {info.revocation_date:%Y-%m-%d %H:%M:%S} UTC, "
        f"reason {info.reason.value}{since}"
    )
    return EXIT_REVOKED_OR_INVALID
