"""kmsclient commands of the operations API: encrypt, decrypt, reencrypt, datakey, sign,
verify, mac, public-key. Each reads standard input (or ``--in FILE``) and writes standard
output (or ``--out FILE``); ciphertexts, MACs and signatures are one line of text
(``kms:v1:...``), so they pass through shells, JSON and YAML unchanged.

Exit status: 0 done (``verify`` / ``mac --verify``: valid), 1 refused or invalid, 2 usage or
I/O error.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from collections.abc import Callable

from kmsclient.client import DEFAULT_TIMEOUT, KMSClient
from kmsclient.identity import resolve_identity_dir, write_secret_file

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _context_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--context takes NAME=VALUE, not {text!r}")
    return name, value


def _common(parser: argparse.ArgumentParser, *, context: bool = True) -> None:
    parser.add_argument("key", metavar="KEY", help="the key's name")
    if context:
        parser.add_argument(
            "--context",
            metavar="NAME=VALUE",
            type=_context_pair,
            action="append",
            default=[],
            help="encryption context entry (repeatable); decrypt needs the same entries",
        )
    parser.add_argument("--in", dest="input", metavar="FILE", help="read FILE, not stdin")
    parser.add_argument("--out", metavar="FILE", help="write FILE, not stdout")
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="the identity directory; default: $KMSCLIENT_DIR, else the current directory",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")


def _read(args: argparse.Namespace) -> bytes:
    if args.input:
        with open(args.input, "rb") as handle:
            return handle.read()
    return sys.stdin.buffer.read()


def _write(args: argparse.Namespace, data: bytes, *, secret: bool = False) -> None:
    if args.out:
        if secret:
            write_secret_file(args.out, data, force=True)
        else:
            with open(args.out, "wb") as handle:
                handle.write(data)
        return
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _text(args: argparse.Namespace) -> str:
    return _read(args).decode("ascii", errors="replace").strip()


Action = Callable[[KMSClient, argparse.Namespace], int]


def _run(action: Action) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        # An IdentityError or a KMSClientError goes to kmsclient.cli.failed (one line, exit 1/2).
        client = KMSClient.from_identity(resolve_identity_dir(args.dir), timeout=args.timeout)
        try:
            with client:
                return action(client, args)
        except OSError as exc:
            print(f"error: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_USAGE

    return handler


def _encrypt(client: KMSClient, args: argparse.Namespace) -> int:
    token = client.encrypt(args.key, _read(args), dict(args.context))
    _write(args, token.encode() + b"\n")
    return EXIT_OK


def _decrypt(client: KMSClient, args: argparse.Namespace) -> int:
    _write(args, client.decrypt(args.key, _text(args), dict(args.context)), secret=True)
    return EXIT_OK


def _reencrypt(client: KMSClient, args: argparse.Namespace) -> int:
    token = client.reencrypt(
        args.key,
        _text(args),
        dict(args.context),
        destination_key=args.to,
        destination_context=dict(args.to_context) if args.to_context else None,
    )
    _write(args, token.encode() + b"\n")
    return EXIT_OK


def _datakey(client: KMSClient, args: argparse.Namespace) -> int:
    data_key = client.generate_data_key(
        args.key, dict(args.context), plaintext=not args.wrapped_only
    )
    answer = {"key": args.key, "version": data_key.version, "ciphertext": data_key.ciphertext}
    if data_key.plaintext is not None:
        answer["plaintext"] = base64.b64encode(data_key.plaintext).decode()
    _write(args, json.dumps(answer).encode() + b"\n", secret=data_key.plaintext is not None)
    return EXIT_OK


def _sign(client: KMSClient, args: argparse.Namespace) -> int:
    _write(args, client.sign(args.key, _read(args)).encode() + b"\n")
    return EXIT_OK


def _verify(client: KMSClient, args: argparse.Namespace) -> int:
    valid = client.verify(args.key, _read(args), args.signature.strip())
    print("valid" if valid else "invalid: the signature does not match", file=sys.stderr)
    return EXIT_OK if valid else EXIT_FAILED


def _mac(client: KMSClient, args: argparse.Namespace) -> int:
    if args.verify:
        valid = client.mac_verify(args.key, _read(args), args.verify.strip())
        print("valid" if valid else "invalid: the MAC does not match", file=sys.stderr)
        return EXIT_OK if valid else EXIT_FAILED
    _write(args, client.mac(args.key, _read(args)).encode() + b"\n")
    return EXIT_OK


def _public_key(client: KMSClient, args: argparse.Namespace) -> int:
    _write(args, client.public_key(args.key, args.version).encode())
    return EXIT_OK


def register_operations(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the operations commands (see the module docstring)."""
    note = (
        " Runs inside an operations session opened with the same signed ephemeral DH and "
        "server identity checks as fetch; the data is encrypted end to end, even over http."
    )
    parser = subparsers.add_parser(
        "encrypt", help="encrypt data with a key that stays in the KMS",
        description="Encrypt stdin (or --in) under KEY; print a kms:v1: ciphertext." + note,
    )  # fmt: skip
    _common(parser)
    parser.set_defaults(handler=_run(_encrypt))

    parser = subparsers.add_parser(
        "decrypt", help="decrypt a kms:v1: ciphertext",
        description="Decrypt the ciphertext on stdin (or --in) with KEY and the same --context"
        " entries; write the plaintext (--out: a 0600 file)." + note,
    )  # fmt: skip
    _common(parser)
    parser.set_defaults(handler=_run(_decrypt))

    parser = subparsers.add_parser(
        "reencrypt", help="move a ciphertext to the newest key version (or another key)",
        description="Re-encrypt the ciphertext on stdin under the newest version of KEY, or "
        "under --to KEY2; the plaintext never leaves the KMS." + note,
    )  # fmt: skip
    _common(parser)
    parser.add_argument("--to", metavar="KEY2", help="re-encrypt under this key instead")
    parser.add_argument(
        "--to-context", metavar="NAME=VALUE", type=_context_pair, action="append", default=[],
        help="the new ciphertext's context (default: the same as --context)",
    )  # fmt: skip
    parser.set_defaults(handler=_run(_reencrypt))

    parser = subparsers.add_parser(
        "datakey", help="generate a data key for envelope encryption",
        description="Print JSON {key, version, ciphertext, plaintext (base64)}: a fresh "
        "256-bit data key and its ciphertext under KEY (--out: a 0600 file)." + note,
    )  # fmt: skip
    _common(parser)
    parser.add_argument(
        "--wrapped-only", action="store_true", help="only the ciphertext, not the data key"
    )
    parser.set_defaults(handler=_run(_datakey))

    parser = subparsers.add_parser(
        "sign", help="sign data with an asymmetric key",
        description="Sign stdin (or --in) with KEY; print a kms:v1: signature." + note,
    )  # fmt: skip
    _common(parser, context=False)
    parser.set_defaults(handler=_run(_sign))

    parser = subparsers.add_parser(
        "verify", help="verify a signature made by sign",
        description="Verify --signature over stdin (or --in); exit 0 valid, 1 invalid." + note,
    )  # fmt: skip
    _common(parser, context=False)
    parser.add_argument("--signature", required=True, help="the kms:v1: signature")
    parser.set_defaults(handler=_run(_verify))

    parser = subparsers.add_parser(
        "mac", help="HMAC-SHA256 with a key that stays in the KMS",
        description="Print the MAC of stdin (or --in) under KEY, or with --verify MAC check "
        "it (exit 0 valid, 1 invalid)." + note,
    )  # fmt: skip
    _common(parser, context=False)
    parser.add_argument("--verify", metavar="MAC", help="check this kms:v1: MAC instead")
    parser.set_defaults(handler=_run(_mac))

    parser = subparsers.add_parser(
        "public-key", help="print the public key of an asymmetric key",
        description="Print KEY's public key (PEM) for its primary version or --version N.",
    )  # fmt: skip
    _common(parser, context=False)
    parser.add_argument("--version", type=int, help="a specific version number")
    parser.set_defaults(handler=_run(_public_key))
