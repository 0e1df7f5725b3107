"""Command line of kmsclient: ``python -m kmsclient <command> ...``.

Each command is one ``register_<command>(subparsers)`` function that adds its parser and sets
``handler`` to a function taking the parsed arguments and returning the exit status. Adding a
command means writing those two functions and listing the register function in ``COMMANDS``.

Exit status: 0 success, 1 the check failed (e.g. a tampered audit export, a certificate that
does not validate), 2 usage or input errors (missing file, unreadable input, bad arguments);
``verify-cert`` adds 3: valid, but revocation was not checked (``--offline``) or not known.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from kmsclient import __version__
from kmsclient.client import (
    DEFAULT_MAX_STATUS_AGE_SECONDS,
    DEFAULT_TIMEOUT,
    KEY_TYPES,
    KMSClient,
    KMSClientError,
    encode_key,
    enroll,
    pin_server,
)
from kmsclient.crl import DEFAULT_TIMEOUT as CRL_TIMEOUT
from kmsclient.crl import crl_command
from kmsclient.identity import resolve_identity_dir, write_secret_file
from kmsclient.operations_cli import register_operations
from kmsclient.verify import verify_certificate_files
from kmsportal.crypto.audit_chain import ExportResult as LegacyExportResult
from kmsportal.crypto.audit_chain import public_key_to_pem
from kmsportal.crypto.audit_chain import verify_export as verify_export_v1
from kmsportal.crypto.audit_log import (
    key_id,
    public_key_from_text,
    tree_head_from_json,
    verify_export,
)
from kmsportal.crypto.dh import GROUPS, X25519
from kmsportal.crypto.errors import KMSError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


class InputError(KMSError):
    """Input the command cannot use (missing or unreadable file): exit status 2."""

    code = "input_unreadable"


@contextmanager
def open_text_input(path: str) -> Iterator[TextIO]:
    """Open ``path`` (``-`` for stdin) as UTF-8 text for line-by-line streaming.

    Raises :class:`InputError` with a one-line message when the file cannot be opened.
    """
    if path == "-":
        # sys.stdin's encoding follows the locale; the export format is UTF-8 whatever it is.
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="strict")
        try:
            yield stream
        finally:
            stream.detach()  # leave sys.stdin itself open
        return
    try:
        handle = open(path, encoding="utf-8", errors="strict")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    with handle:
        yield handle


# --------------------------------------------------------------------------- audit-verify


def register_audit_verify(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit-verify FILE [--public-key PEMFILE ...] [--trusted-head HEAD.json]``."""
    parser = subparsers.add_parser(
        "audit-verify",
        help="verify an audit log export (JSON Lines) offline",
        description=(
            "Verify an audit log export offline: every event's inclusion in the Merkle tree, "
            "the signed tree head that ends the export, and with --trusted-head that the log "
            "was not rewritten before a head you saved earlier. Without --public-key the "
            "export is checked against the key it carries, which proves only that the file "
            "is internally consistent."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the export, or - for standard input")
    parser.add_argument(
        "--public-key",
        metavar="PEMFILE",
        action="append",
        help="the portal's audit public key (PEM), obtained independently; repeat it for "
        "keys before and after a rotation",
    )
    parser.add_argument(
        "--trusted-head",
        metavar="HEAD.json",
        help="a signed tree head saved earlier (the chain page's download, or "
        "`manage.py audit_head`): the export must extend it",
    )
    parser.set_defaults(handler=audit_verify)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def audit_verify(args: argparse.Namespace) -> int:
    """Verify an export; print ``OK: ...`` (status 0) or ``TAMPERED: ...`` (status 1)."""
    trusted_keys = None
    for path in args.public_key or []:
        try:
            key = public_key_from_text(_read_text(path))
        except OSError as exc:
            return _error(f"cannot read {path}: {exc.strerror or exc}")
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(f"{path}: {exc}")
        trusted_keys = {**(trusted_keys or {}), key_id(key): key}
    trusted_head = None
    if args.trusted_head:
        try:
            trusted_head = tree_head_from_json(json.loads(_read_text(args.trusted_head)))
        except OSError as exc:
            return _error(f"cannot read {args.trusted_head}: {exc.strerror or exc}")
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(f"{args.trusted_head}: not a signed tree head: {exc}")
    try:
        with open_text_input(args.file) as stream:
            first = stream.readline()
            version = _export_version(first)
            lines = itertools.chain([first], stream)
            if version == 1:
                if trusted_head is not None:
                    return _error("a version 1 export has no tree heads: drop --trusted-head")
                pem = public_key_to_pem(next(iter(trusted_keys.values()))) if trusted_keys else None
                legacy = verify_export_v1(lines, trusted_public_key_pem=pem)
                return _legacy_report(legacy, trusted_keys is not None)
            result = verify_export(lines, trusted_keys=trusted_keys, trusted_head=trusted_head)
    except UnicodeDecodeError as exc:
        return _error(f"{args.file} is not UTF-8 text: {exc.reason} at byte {exc.start}")
    except OSError as exc:
        return _error(f"cannot read {args.file}: {exc.strerror or exc}")

    if not result.ok:
        where = f"line {result.line_number}: " if result.line_number is not None else ""
        print(f"TAMPERED: {where}{result.problem}", file=sys.stderr)
        return EXIT_FAILED
    extra = (
        f", consistent with the trusted head of size {trusted_head.tree_size}"
        if trusted_head is not None
        else ""
    )
    print(
        f"OK: {result.events_verified} events verified against the signed tree head of size "
        f"{result.tree_size}{extra}"
    )
    if result.used_export_key:
        print(
            "note: checked against the public key inside the export; pass --public-key with "
            "the portal's audit key to prove the export comes from the portal",
            file=sys.stderr,
        )
    return EXIT_OK


def _export_version(first_line: str) -> int:
    try:
        header = json.loads(first_line)
    except ValueError:
        return 2  # the verifier reports the malformed header
    version = header.get("version") if isinstance(header, dict) else None
    return 1 if version == 1 else 2


def _legacy_report(result: LegacyExportResult, pinned: bool) -> int:
    if not result.ok:
        where = f"line {result.line_number}: " if result.line_number is not None else ""
        print(f"TAMPERED: {where}{result.problem}", file=sys.stderr)
        return EXIT_FAILED
    if result.checkpoints_verified == 0:
        print(
            "TAMPERED: the version 1 export holds no signed checkpoint: nothing in it is "
            "signed, so nothing can be verified",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(
        f"OK: {result.events_verified} events and {result.checkpoints_verified} checkpoints "
        "verified (version 1 export)"
    )
    if not pinned:
        print("note: checked against the public key inside the export", file=sys.stderr)
    return EXIT_OK


# --------------------------------------------------------------------------- verify-cert


def register_verify_cert(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``verify-cert CERT --ca-cert ROOT [--chain FILE] [--hostname H] [--purpose P]
    [--crl FILE ... | --ocsp | --offline]``."""
    parser = subparsers.add_parser(
        "verify-cert",
        help="validate a certificate against a trusted CA certificate, revocation included",
        description=(
            "Validate a certificate: path to the trusted CA certificate (every candidate "
            "issuer tried), signatures, validity periods, basic constraints, name "
            "constraints, critical extensions, key and signature algorithms, key usage and "
            "EKU for the purpose, the host name, and revocation of every certificate below "
            "the root: by default from its CRL distribution point (complete and delta CRL), "
            "else its OCSP responder. Prints one line per check. Exit status 0: valid and "
            "not revoked; 1: a check failed (revoked, expired, not a certificate, ...); 2: a "
            "trust root, chain or CRL file cannot be read, or a usage error; 3: every other "
            "check passed but revocation was not established (--offline, or no source "
            "answered)."
        ),
    )
    parser.add_argument("certificate", metavar="CERT", help="the certificate (PEM or DER)")
    parser.add_argument(
        "--ca-cert",
        metavar="ROOT",
        action="append",
        required=True,
        help="trusted root certificate(s), PEM or DER, obtained independently (repeatable)",
    )
    parser.add_argument("--chain", metavar="FILE", help="intermediate certificates (PEM)")
    parser.add_argument("--hostname", metavar="H", help="DNS name or IP address to match")
    parser.add_argument(
        "--purpose", choices=["server", "client", "any"], default="any", help="default any"
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--crl",
        metavar="FILE",
        action="append",
        help="check revocation with these CRL files (complete and delta; repeatable) "
        "instead of downloading",
    )
    source.add_argument(
        "--ocsp", action="store_true", help="ask the certificates' OCSP responders only"
    )
    source.add_argument(
        "--offline",
        action="store_true",
        help="do not check revocation (exit status 3 instead of 0 when otherwise valid)",
    )
    parser.add_argument("--timeout", type=float, default=15.0, help="seconds per download")
    parser.set_defaults(handler=verify_cert)


_MARKS = {True: "PASS", False: "FAIL", None: "SKIP"}


def verify_cert(args: argparse.Namespace) -> int:
    """Print ``PASS/FAIL/SKIP check: detail`` per check, then ``OK``, ``FAILED`` or
    ``UNCHECKED``; see :mod:`kmsclient.verify` for the exit statuses."""
    from kmsclient.verify import EXIT_OK as VERIFY_OK
    from kmsclient.verify import EXIT_REVOCATION_UNCHECKED

    mode = (
        "offline" if args.offline else "ocsp" if args.ocsp else "crl-files" if args.crl else "auto"
    )
    result = verify_certificate_files(
        certificate=args.certificate,
        ca_certificates=args.ca_cert,
        chain=args.chain,
        hostname=args.hostname,
        purpose=args.purpose,
        revocation=mode,  # type: ignore[arg-type]
        crl_files=args.crl or (),
        timeout=args.timeout,
    )
    for check in result.report.checks:
        print(f"{_MARKS[check.passed]} {check.name}: {check.detail}")
    status = result.exit_status
    if status == VERIFY_OK:
        print(f"OK: {result.subject} is valid for purpose {args.purpose} and not revoked")
    elif status == EXIT_REVOCATION_UNCHECKED:
        why = "--offline" if args.offline else "no revocation source answered"
        print(
            f"UNCHECKED: {result.subject} passed every other check for purpose "
            f"{args.purpose}, but its revocation status was not checked ({why})"
        )
    else:
        failed = ", ".join(c.name for c in result.report.failed) or "path"
        print(f"FAILED: {result.subject} ({failed})", file=sys.stderr)
    return status


# --------------------------------------------------------------------------- enroll


def register_enroll(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``enroll --url URL --token T --ca-cert ROOT.pem --out DIR``."""
    parser = subparsers.add_parser(
        "enroll",
        help="enroll this service with the KMS using a one-time token",
        description=(
            "Generate this service's private key here (it never leaves this machine), send a "
            "certificate request proving the one-time enrollment token with a MAC (the token "
            "itself is never sent), check that the answer is authenticated by the token and "
            "signed by the KMS's server identity, that the returned certificate chain leads "
            "to the root CA you pin with --ca-cert, pin the KMS's server identity, and store "
            "the identity in DIR: client.key (mode 0600), client.crt, chain.pem, ca.pem and "
            "kmsclient.json. Exit status 0 enrolled, 1 refused, 2 usage or I/O error."
        ),
    )
    parser.add_argument("--url", required=True, help="the KMS's base URL, e.g. http://kms:8000")
    parser.add_argument(
        "--token",
        required=True,
        help="the one-time enrollment token; write --token=T (tokens may start with '-'), "
        "or --token - to read it from standard input",
    )
    parser.add_argument(
        "--ca-cert",
        metavar="ROOT.pem",
        required=True,
        help="the KMS's root CA certificate (PEM or DER), obtained independently: it is pinned",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="where to store the identity (created with mode 0700); default: $KMSCLIENT_DIR, "
        "else the current directory",
    )
    parser.add_argument(
        "--key-type", choices=KEY_TYPES, default="ecp256", help="default ecp256 (EC P-256)"
    )
    parser.add_argument("--force", action="store_true", help="replace an identity in DIR")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    parser.set_defaults(handler=enroll_command)


STDIN = "-"


def enroll_command(args: argparse.Namespace) -> int:
    """Enroll; print ``enrolled as NAME ...`` (0) or one line naming the refusal (1)."""
    token = args.token
    if token == STDIN:
        token = sys.stdin.readline().strip()
    identity = enroll(
        args.url,
        token,
        args.ca_cert,
        resolve_identity_dir(args.out),
        key_type=args.key_type,
        timeout=args.timeout,
        force=args.force,
    )
    until = f", certificate valid until {identity.not_after}" if identity.not_after else ""
    print(f"enrolled as {identity.client}: identity stored in {identity.directory}{until}")
    print(
        f"pinned the KMS's server identity: {identity.deployment}, server-identity CA key "
        f"SHA-256 {identity.server_ca_spki_sha256}"
    )
    return EXIT_OK


# --------------------------------------------------------------------------- pin-server


def register_pin_server(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``pin-server --server-ca-spki HEX --deployment URN [--dir DIR]``."""
    parser = subparsers.add_parser(
        "pin-server",
        help="pin the KMS's server identity in an identity enrolled before pinning existed",
        description=(
            "Record in DIR/kmsclient.json the KMS's server identity: the SHA-256 of its "
            "server-identity CA's public key and its deployment URI, as `manage.py "
            "bootstrap` prints them on the KMS. Take both from the KMS's operator over a "
            "channel you trust: fetch trusts exactly what is pinned. Identities enrolled "
            "with a current kmsclient are pinned already. Exit status 0 pinned, 2 errors."
        ),
    )
    parser.add_argument(
        "--server-ca-spki",
        metavar="SHA256",
        required=True,
        help="SHA-256 (hex, colons allowed) of the server-identity CA's public key",
    )
    parser.add_argument(
        "--deployment", metavar="URN", required=True, help="urn:kmsportal:deployment:<uuid>"
    )
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="the identity directory; default: $KMSCLIENT_DIR, else the current directory",
    )
    parser.set_defaults(handler=pin_server_command)


def pin_server_command(args: argparse.Namespace) -> int:
    identity = pin_server(
        resolve_identity_dir(args.dir),
        server_ca_spki_sha256=args.server_ca_spki,
        deployment=args.deployment,
    )
    print(f"pinned {identity.deployment} in {identity.directory}")
    return EXIT_OK


# --------------------------------------------------------------------------- fetch


def _version_number(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a version number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("versions start at 1")
    return value


def register_fetch(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fetch NAME [--version N] [--group G] (--out FILE | --stdout) [--dir DIR]``."""
    parser = subparsers.add_parser(
        "fetch",
        help="fetch a key this service was granted",
        description=(
            "Fetch key NAME (its primary version, or --version N) over the signed ephemeral "
            "Diffie-Hellman exchange, after checking that the server is the KMS's server "
            "identity pinned at enrollment (chain to the pinned root, pinned server-identity "
            "CA, deployment), its stapled revocation status (fresh, good) and its signature. "
            "The raw key is "
            "written to FILE with mode 0600, or printed base64 with --stdout; key material is "
            "never printed otherwise. Exit status 0 fetched, 1 refused (by the server or by a "
            "check here), 2 usage or I/O error."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="the key's name")
    parser.add_argument("--version", type=_version_number, help="a specific version number")
    parser.add_argument("--group", choices=GROUPS, default=X25519, help="DH group; default x25519")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", metavar="FILE", help="write the raw key bytes here (mode 0600)")
    where.add_argument(
        "--stdout", action="store_true", help="print the key base64 on standard output"
    )
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="the identity directory; default: $KMSCLIENT_DIR, else the current directory",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    parser.add_argument(
        "--max-status-age",
        metavar="SECONDS",
        type=float,
        default=DEFAULT_MAX_STATUS_AGE_SECONDS,
        help="refuse a stapled server status older than this; default "
        f"{DEFAULT_MAX_STATUS_AGE_SECONDS} (10 minutes)",
    )
    parser.set_defaults(handler=fetch_command)


def fetch_command(args: argparse.Namespace) -> int:
    """Fetch a key into a 0600 file (or base64 on stdout with ``--stdout`` only)."""
    if not args.out and not args.stdout:
        return _error(
            "say where the key goes: --out FILE (written with mode 0600) or --stdout (prints "
            "the key base64, for piping into another program)"
        )
    if args.out and not args.force and os.path.lexists(args.out):
        return _error(f"{args.out} already exists; use --force to replace it")
    client = KMSClient.from_identity(
        resolve_identity_dir(args.dir),
        timeout=args.timeout,
        max_status_age=args.max_status_age,
    )
    with client:
        fetched = client.fetch(args.name, args.version, group=args.group)
    if args.stdout:
        print(encode_key(fetched.material))
        return EXIT_OK
    try:
        write_secret_file(args.out, fetched.material, force=args.force)
    except FileExistsError:
        return _error(f"{args.out} already exists; use --force to replace it")
    except OSError as exc:
        return _error(f"cannot write {args.out}: {exc.strerror or exc}")
    print(
        f"fetched {fetched.key_name} version {fetched.version} ({len(fetched.material)} bytes) "
        f"into {args.out}"
    )
    return EXIT_OK


def failed(exc: KMSError | KMSClientError) -> int:
    """The one place a command reports what stopped it: ``error: <reason>``, one line on
    standard error. Exit status 1 for a refusal by the KMS or a check of this client, 2 for
    input (a file, the identity directory) or a KMS that could not be reached."""
    print(f"error: {exc}", file=sys.stderr)
    if isinstance(exc, KMSClientError) and exc.code != "connection_failed":
        return EXIT_FAILED
    return EXIT_USAGE


# --------------------------------------------------------------------------- crl


def register_crl(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``crl --url URL --ca-cert CA [--serial HEX]``."""
    parser = subparsers.add_parser(
        "crl",
        help="download a CA's CRL, check it, and look up a serial number",
        description=(
            "Download the CRL at URL, check that it is a complete CRL signed by the CA "
            "certificate CA (obtained independently) and current (this update <= now < next "
            "update), and report whether the certificate with serial HEX is on it. Exit "
            "status 0 valid (and the serial not revoked), 1 the serial is revoked or the CRL "
            "cannot be relied on, 2 input errors (unreadable file, bad serial, download failed)."
        ),
    )
    parser.add_argument("--url", required=True, help="the CRL distribution point (http://...)")
    parser.add_argument(
        "--ca-cert", metavar="CA", required=True, help="the issuing CA's certificate, PEM or DER"
    )
    parser.add_argument("--serial", metavar="HEX", help="serial number in hex (colons allowed)")
    parser.add_argument("--timeout", type=float, default=CRL_TIMEOUT, help="seconds")
    parser.set_defaults(handler=crl_command)


# --------------------------------------------------------------------------- entry point

#: One register function per command, in the order ``--help`` lists them.
COMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    register_audit_verify,
    register_verify_cert,
    register_enroll,
    register_pin_server,
    register_fetch,
    register_operations,
    register_crl,
)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command of :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="kmsclient", description="kmsportal client for services and auditors."
    )
    parser.add_argument("--version", action="version", version=f"kmsclient {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return its exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handler(args)
    except (KMSError, KMSClientError) as exc:
        return failed(exc)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE
