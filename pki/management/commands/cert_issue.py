"""`manage.py cert_issue --ca NAME --profile P (--csr FILE | --generate --subject S --san
dns:x [--san …] [--key-type T] [--pkcs12-password-file F]) [--days N] [--out FILE]`.

Prints the serial number in hex and writes the certificate (PEM) to --out, or to standard
output without --out. With --generate the key pair is made here and written once, as a
PKCS#12 next to --out (same name, `.p12`, mode 0600); the password is read from a file or
asked for twice on the terminal, never taken from the command line (where `ps` and shell
history would show it).
"""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path

from django.core.management.base import CommandError, CommandParser

from kmsportal.commands import KMSCommand
from pki.management import ca_by_name
from pki.models import KEY_TYPE_CHOICES, UPLOAD_MAX_BYTES, Certificate
from pki.services import (
    DEFAULT_LEAF_KEY_TYPE,
    certificate_issue_from_csr,
    certificate_issue_generated,
)


def _read_csr(path: str) -> bytes:
    try:
        size = os.stat(path).st_size
        if size > UPLOAD_MAX_BYTES:
            raise CommandError(
                f"--csr: {path} is {size:,} bytes; at most {UPLOAD_MAX_BYTES:,} bytes (64 KiB) "
                "are accepted"
            )
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"--csr: cannot read {path}: {exc.strerror or exc}") from None


def _read_password_file(path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CommandError(f"--pkcs12-password-file: cannot read {path}: {reason}") from None
    # One line: the trailing newline editors add is not part of the password.
    return text.rstrip("\r\n")


def _prompt_password() -> str:
    if not sys.stdin.isatty():
        raise CommandError(
            "--generate needs a PKCS#12 password: use --pkcs12-password-file FILE, or run the "
            "command on a terminal to be asked for it"
        )
    first = getpass.getpass("PKCS#12 password: ")
    if first != getpass.getpass("Password again: "):
        raise CommandError("the two passwords differ; nothing was issued")
    return first


class Command(KMSCommand):
    help = "Issue a certificate from a CSR, or with a key pair generated here (PKCS#12)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ca", required=True, help="name of the issuing CA")
        parser.add_argument("--profile", required=True, help="e.g. tls-server, tls-client")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument("--csr", metavar="FILE", help="a CSR in PEM or DER (at most 64 KiB)")
        source.add_argument(
            "--generate", action="store_true", help="generate the key pair here (PKCS#12)"
        )
        parser.add_argument(
            "--subject",
            default=None,
            help="with --csr: replaces the CSR's subject; with --generate: the subject",
        )
        parser.add_argument(
            "--san",
            action="append",
            default=None,
            metavar="TYPE:VALUE",
            help="dns:…, ip:…, email:…, uri:… (repeat); with --csr: replaces the CSR's SANs",
        )
        parser.add_argument(
            "--key-type",
            default=DEFAULT_LEAF_KEY_TYPE.value,
            choices=[value for value, _ in KEY_TYPE_CHOICES],
            help=f"with --generate (default {DEFAULT_LEAF_KEY_TYPE.value})",
        )
        parser.add_argument("--pkcs12-password-file", metavar="FILE", default=None)
        parser.add_argument("--days", type=int, default=None, help="default: profile maximum")
        parser.add_argument(
            "--out", metavar="FILE", default=None, help="certificate PEM (default: stdout)"
        )

    def handle(self, *args: object, **options: object) -> None:
        ca = ca_by_name(str(options["ca"]))
        out = Path(str(options["out"])) if options["out"] else None
        if options["generate"]:
            certificate = self._generate(ca, out, options)
        else:
            if options["pkcs12_password_file"]:
                raise CommandError("--pkcs12-password-file goes with --generate, not --csr")
            csr = _read_csr(str(options["csr"]))
            self._check_writable(out)
            certificate = certificate_issue_from_csr(
                actor=None,
                ca=ca,
                csr_pem_or_der=csr,
                profile=str(options["profile"]),
                subject_override=options["subject"],  # type: ignore[arg-type]
                sans_override=options["san"],  # type: ignore[arg-type]
                days=options["days"],  # type: ignore[arg-type]
            )
        self._write_certificate(certificate, out)

    def _generate(self, ca: object, out: Path | None, options: dict[str, object]) -> Certificate:
        if out is None:
            raise CommandError("--generate needs --out FILE: the PKCS#12 is written next to it")
        if options["subject"] is None and not options["san"]:
            raise CommandError("--generate needs --subject and/or --san")
        p12 = out.with_suffix(".p12")
        self._check_writable(out)
        if p12.exists():
            raise CommandError(f"{p12} exists; a private key is never overwritten")
        password_file = options["pkcs12_password_file"]
        password = _read_password_file(str(password_file)) if password_file else _prompt_password()
        credential = certificate_issue_generated(
            actor=None,
            ca=ca,  # type: ignore[arg-type]
            subject=str(options["subject"] or ""),
            sans=list(options["san"] or []),  # type: ignore[call-overload]
            profile=str(options["profile"]),
            days=options["days"],  # type: ignore[arg-type]
            key_type=str(options["key_type"]),
            pkcs12_password=password,
        )
        del password
        # O_EXCL: never follow or overwrite a file that appeared meanwhile; 0600 from birth.
        descriptor = os.open(p12, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(credential.pkcs12)
        self.stdout.write(f"Wrote the key and certificate (PKCS#12, mode 0600) to {p12}")
        return credential.certificate

    @staticmethod
    def _check_writable(out: Path | None) -> None:
        """Refuse before issuing anything if the certificate cannot be written."""
        if out is None:
            return
        directory = out.parent if str(out.parent) else Path(".")
        if not directory.is_dir():
            raise CommandError(f"--out: the directory {directory} does not exist")
        if out.is_dir():
            raise CommandError(f"--out: {out} is a directory")
        if not os.access(directory, os.W_OK):
            raise CommandError(f"--out: cannot write in {directory}")

    def _write_certificate(self, certificate: Certificate, out: Path | None) -> None:
        self.stdout.write(f"serial {certificate.serial_number_display}")
        self.stdout.write(
            f"Issued {certificate.subject or '(no subject)'} by {certificate.ca.name} under "
            f"{certificate.profile}, valid until {certificate.not_after:%Y-%m-%d %H:%M} UTC"
        )
        if out is None:
            self.stdout.write(certificate.certificate_pem, ending="")
            return
        out.write_text(certificate.certificate_pem, encoding="ascii")
        self.stdout.write(f"Wrote the certificate (PEM) to {out}")
