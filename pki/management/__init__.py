"""Management commands of the PKI, and what they share: lookups.

Commands are thin: parse, call one service, print. What the domain refuses becomes a
`CommandError` carrying the domain message (one line, exit status 1, nothing changed): the
commands are `kmsportal.commands.KMSCommand`s.
"""

from __future__ import annotations

from django.core.management.base import CommandError

from pki.models import CertificateAuthority


def ca_by_name(name: str, option: str = "--ca") -> CertificateAuthority:
    """The CA called ``name``, or a CommandError saying there is none."""
    ca = CertificateAuthority.objects.defer("sealed_private_key").filter(name=name).first()
    if ca is None:
        known = ", ".join(CertificateAuthority.objects.values_list("name", flat=True)[:20])
        raise CommandError(
            f"{option}: no CA named {name!r}" + (f" (known: {known})" if known else "")
        )
    return ca
