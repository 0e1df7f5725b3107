"""Human labels for codes the pages would otherwise show raw: audit target types."""

from __future__ import annotations

#: Audit target types (model labels and the few named ones) as people call them.
TARGET_TYPE_LABELS: dict[str, str] = {
    "auth.User": "User",
    "pki.Certificate": "Certificate",
    "pki.CertificateAuthority": "Certificate authority",
    "pki.CARevocationRequest": "CA revocation request",
    "pki.RevocationList": "CRL",
    "pki.OCSPResponder": "OCSP responder",
    "vault.SymmetricKey": "Key",
    "vault.KeyVersion": "Key version",
    "vault.Client": "Client service",
    "vault.Grant": "Grant",
    "vault.DestructionRequest": "Destruction request",
    "keyring.MasterKeyRecord": "Master key",
    "audit.AuditChain": "Audit chain",
    "audit.AuditCheckpoint": "Audit checkpoint",
    "url": "Page (URL)",
}


def target_type_label(value: str) -> str:
    return TARGET_TYPE_LABELS.get(value, value)


def target_type_from_text(text: str) -> str:
    """The target type a person typed or picked: a label (any case) or the internal name."""
    wanted = text.strip()
    for name, label in TARGET_TYPE_LABELS.items():
        if wanted.lower() in (label.lower(), name.lower()):
            return name
    return wanted
