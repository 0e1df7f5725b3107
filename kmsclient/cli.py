"""Command line of kmsclient: ``python -m kmsclient <command> ...``.

Each command is one ``register_<command>(subparsers)`` function that adds its parser and sets
``handler`` to a function taking the parsed arguments and returning the exit status. Adding a
command means writing those two functions and listing the register function in ``COMMANDS``.

Exit status: 0 success, 1 the check failed (e.g. a tampered audit export), 2 usage or input
errors (missing file, unreadable input, bad arguments).
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TextIO

from kmsportal.crypto.audit_chain import public_key_from_pem, verify_export

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], int]


class InputError(Exception):
    """Input the command cannot use (missing or unreadable file): exit status 2."""


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


def register_audit_verify(subparsers: argparse._SubParsersAction) -> None:
    """Add ``audit-verify FILE [--public-key PEMFILE]``."""
    parser = subparsers.add_parser(
        "audit-verify",
        help="verify an audit log export (JSON Lines) offline",
        description=(
            "Verify an audit log export offline: every event's hash, the links between "
            "consecutive events, the signed checkpoints and their chain. Without "
            "--public-key the export is checked against the key it carries, which proves "
            "only that the file is internally consistent."
        ),
    )
    parser.add_argument("file", metavar="FILE", help="the export, or - for standard input")
    parser.add_argument(
        "--public-key",
        metavar="PEMFILE",
        help="the portal's audit public key (PEM), obtained independently: the export must "
        "be signed with it",
    )
    parser.set_defaults(handler=audit_verify)


def audit_verify(args: argparse.Namespace) -> int:
    """Verify an export; print ``OK: ...`` (status 0) or ``TAMPERED: ...`` (status 1)."""
    trusted_pem = None
    if args.public_key:
        try:
            with open(args.public_key, encoding="utf-8") as handle:
                trusted_pem = handle.read()
            public_key_from_pem(trusted_pem)
        except OSError as exc:
            return _error(f"cannot read {args.public_key}: {exc.strerror or exc}")
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(f"{args.public_key}: {exc}")
    try:
        with open_text_input(args.file) as lines:
            result = verify_export(lines, trusted_public_key_pem=trusted_pem)
    except InputError as exc:
        return _error(str(exc))
    except UnicodeDecodeError as exc:
        return _error(f"{args.file} is not UTF-8 text: {exc.reason} at byte {exc.start}")
    except OSError as exc:
        return _error(f"cannot read {args.file}: {exc.strerror or exc}")

    if not result.ok:
        where = f"line {result.line_number}: " if result.line_number is not None else ""
        print(f"TAMPERED: {where}{result.problem}", file=sys.stderr)
        return EXIT_FAILED
    print(
        f"OK: {result.events_verified} events and {result.checkpoints_verified} checkpoints "
        "verified"
    )
    if trusted_pem is None:
        print(
            "note: checked against the public key inside the export; pass --public-key with "
            "the portal's audit key to prove the export comes from the portal",
            file=sys.stderr,
        )
    return EXIT_OK


# --------------------------------------------------------------------------- entry point

#: One register function per command, in the order ``--help`` lists them.
COMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (register_audit_verify,)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every command of :data:`COMMANDS` registered."""
    parser = argparse.ArgumentParser(
        prog="python -m kmsclient", description="kmsportal client for services and auditors."
    )
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
    return handler(args)


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_USAGE
