"""Key backends: the PKCS#11 backend (SoftHSM2) against the software backend, in the same
process and run.

Rows (ours = pkcs11, baseline = software):
- seal + unseal of a 32-byte key through the keyring services (AES-GCM in the token vs in
  memory);
- opening a key version's material (`unseal_material`: with pkcs11 the outer seal under the
  token master key and the inner one under the version's own token wrapping key);
- issuing a certificate from a CSR through the service with an RSA-3072 CA whose key is a
  token object vs one loaded in memory. Target: at least 0.5x;
- publishing a CRL of 10,000 revoked certificates (seconds, lower is better).

A throw-away SoftHSM2 token is made in a temporary SOFTHSM2_CONF. Without SoftHSM2 the
module reports no rows and says why (CI installs it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.bench_pki import _csr_pool, bulk_certificates
from bench.harness import Row, measure, measure_seconds

MODULE = "/usr/lib/softhsm/libsofthsm2.so"


def _token() -> dict[str, object] | None:
    if not Path(MODULE).exists() or shutil.which("softhsm2-util") is None:
        print(
            "bench_key_backends: SoftHSM2 is not installed (apt-get install softhsm2)",
            file=sys.stderr,
        )
        return None
    base = Path(tempfile.mkdtemp(prefix="kmsbench-softhsm-"))
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    pin = secrets.token_hex(6)
    subprocess.run(
        [
            "softhsm2-util",
            "--init-token",
            "--free",
            "--label",
            "kmsbench",
            "--pin",
            pin,
            "--so-pin",
            secrets.token_hex(8),
        ],
        check=True,
        capture_output=True,
    )
    return {
        "BACKEND": "kmsportal.keyring.backends.pkcs11.Pkcs11KeyBackend",
        "OPTIONS": {
            "MODULE": MODULE,
            "TOKEN_LABEL": "kmsbench",
            "PIN_SECRET": pin,
            "MASTER_KEY_IDS": ["hsm1"],
        },
    }


def run(*, quick: bool, database: str) -> list[Row]:
    from django.conf import settings

    from kmsportal.keyring.backends import key_backend
    from kmsportal.keyring.services import (
        keyring_reset,
        seal,
        seal_material,
        unseal,
        unseal_material,
    )
    from pki.models import CRLTrigger
    from pki.services import certificate_authority_create, certificate_issue_from_csr, crl_publish
    from pki.signers import ca_signer_cache_clear

    pkcs11_config = _token()
    if pkcs11_config is None:
        return []
    software_config = settings.KMS_KEY_BACKENDS["software"]

    def use(config: dict[str, object]) -> None:
        settings.KMS_KEY_BACKENDS = {**settings.KMS_KEY_BACKENDS, "default": config}
        keyring_reset()
        ca_signer_cache_clear()

    use(pkcs11_config)
    key_backend().prepare()

    material = os.urandom(32)
    aad = b"vault.KeyVersion:3f1e0c2a-8d4b-4a51-9b8e-0d6f4c1b2a77:1"
    rounds = 2_000 if quick else 10_000
    rows: list[Row] = []

    def seal_rate() -> tuple[float, float]:
        seal(material, aad=aad)

        def loop() -> int:
            for _ in range(rounds):
                assert unseal(seal(material, aad=aad), aad=aad) == material
            return rounds

        return measure(loop, repeats=3)

    def material_rate() -> tuple[float, float]:
        blob = seal_material(material, aad=aad)

        def loop() -> int:
            for _ in range(rounds):
                assert unseal_material(blob, aad=aad) == material
            return rounds

        return measure(loop, repeats=3)

    results: dict[str, dict[str, tuple[float, float]]] = {}
    for name, config in (("software", software_config), ("pkcs11", pkcs11_config)):
        use(config)
        results[name] = {"seal": seal_rate(), "material": material_rate()}

    # Issuance and CRLs: one RSA-3072 root + issuing CA per backend, keys where it keeps them.
    count = 40 if quick else 300
    pool = _csr_pool(count)
    crl_size = 10_000
    cas = {}
    for name, config in (("software", software_config), ("pkcs11", pkcs11_config)):
        use(config)
        root = certificate_authority_create(
            actor=None, name=f"{name}-root", subject=f"CN=Bench {name} Root", key_type="rsa3072"
        )
        issuing = certificate_authority_create(
            actor=None,
            name=f"{name}-issuing",
            subject=f"CN=Bench {name} Issuing",
            parent=root,
            key_type="rsa3072",
        )
        bulk_certificates(issuing, revoked=crl_size)
        cas[name] = issuing
    for name, config in (("software", software_config), ("pkcs11", pkcs11_config)):
        use(config)
        ca = cas[name]
        certificate_issue_from_csr(actor=None, ca=ca, csr_pem_or_der=pool[0], profile="tls-server")

        def issue(ca=ca) -> int:  # type: ignore[no-untyped-def]
            for pem in pool:
                certificate_issue_from_csr(
                    actor=None, ca=ca, csr_pem_or_der=pem, profile="tls-server"
                )
            return len(pool)

        results[name]["issue"] = measure(issue, repeats=3)
        results[name]["crl"] = measure_seconds(
            lambda ca=ca: crl_publish(actor=None, ca=ca, trigger=CRLTrigger.MANUAL),
            repeats=3,
        )
    use(software_config)

    soft, hsm = results["software"], results["pkcs11"]
    rows.append(
        Row(
            "seal + unseal a 32-byte key, pkcs11 backend (AES-GCM in SoftHSM2)",
            *hsm["seal"],
            "software backend (AES-GCM in memory)",
            *soft["seal"],
            "ops/s",
            database,
            note=f"{rounds:,} round trips per run",
        )
    )
    rows.append(
        Row(
            "open a key version's material, pkcs11 (master key + its own wrapping key in the token)",
            *hsm["material"],
            "software backend (master key in memory)",
            *soft["material"],
            "ops/s",
            database,
            note=f"{rounds:,} per run",
        )
    )
    rows.append(
        Row(
            "issue a certificate from a CSR, RSA-3072 CA key in SoftHSM2 (service)",
            *hsm["issue"],
            "same service, RSA-3072 CA key loaded in memory (software backend)",
            *soft["issue"],
            "certs/s",
            database,
            note=f"{len(pool)} EC P-256 CSRs per run",
            target=">= 0.5",
        )
    )
    rows.append(
        Row(
            f"publish a CRL of {crl_size:,} revoked, RSA-3072 CA key in SoftHSM2",
            *hsm["crl"],
            "same service, CA key in memory (software backend)",
            *soft["crl"],
            "s",
            database,
        )
    )
    return rows
