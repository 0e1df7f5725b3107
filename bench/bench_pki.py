"""PKI: certificates issued per second from CSRs through the service, against bare
`cryptography` signing the same CSRs with an already-loaded key, in the same process.

The CA is an RSA-3072 intermediate under an RSA-3072 root (the default key type). The CSRs
are made beforehand with EC P-256 keys, so key generation is not timed. The service does, per
certificate: load and check the CSR (signature, key, hash), apply the profile, sign with the
cached CA signer (the CA key is unsealed and loaded once per process, not per certificate),
insert the row under the per-CA unique serial constraint and append the audit event, in one
transaction. The baseline parses each CSR and signs a certificate with the same extensions,
nothing else.
"""

from __future__ import annotations

import datetime as dt

from bench.harness import Row, measure


def _csr_pool(count: int) -> list[bytes]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    pool = []
    for i in range(count):
        name = f"host-{i}.example.org"
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        )
        pool.append(csr.public_bytes(serialization.Encoding.PEM))
    return pool


def _bare_signer(ca_key, ca_certificate):  # type: ignore[no-untyped-def]
    """Sign a CSR's subject and key with the loaded CA key: the floor any issuer pays."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    ski = ca_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )

    def sign(pem: bytes) -> x509.Certificate:
        csr = x509.load_pem_x509_csr(pem)
        now = dt.datetime.now(dt.UTC)
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        builder = (
            x509.CertificateBuilder()
            .subject_name(csr.subject)
            .issuer_name(ca_certificate.subject)
            .public_key(csr.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=397))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), False)
            .add_extension(aki, critical=False)
            .add_extension(sans, critical=False)
        )
        return builder.sign(ca_key, hashes.SHA256())

    return sign


def run(*, quick: bool, database: str) -> list[Row]:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    from pki.services import certificate_authority_create, certificate_issue_from_csr

    count = 100 if quick else 500
    pool = _csr_pool(count)

    root = certificate_authority_create(
        actor=None, name="bench-root", subject="CN=Bench Root CA", key_type="rsa3072"
    )
    issuing = certificate_authority_create(
        actor=None,
        name="bench-issuing",
        subject="CN=Bench Issuing CA",
        parent=root,
        key_type="rsa3072",
    )
    # First issuance unseals and loads the CA key (~175 ms for RSA-3072): once per process.
    certificate_issue_from_csr(actor=None, ca=issuing, csr_pem_or_der=pool[0], profile="tls-server")

    def ours() -> int:
        for pem in pool:
            certificate_issue_from_csr(
                actor=None, ca=issuing, csr_pem_or_der=pem, profile="tls-server"
            )
        return len(pool)

    # The baseline signs with an RSA-3072 key already in memory, as the service's cache does.
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    ca_certificate = x509.load_der_x509_certificate(bytes(issuing.certificate_der))
    bare = _bare_signer(ca_key, ca_certificate)

    def baseline() -> int:
        for pem in pool:
            bare(pem)
        return len(pool)

    base, base_spread = measure(baseline, repeats=5)
    rate, spread = measure(ours, repeats=3 if quick else 5)
    return [
        Row(
            "issue from CSR (service: CSR checks, profile, cached RSA-3072 signer, row, audit)",
            rate,
            spread,
            "bare cryptography CertificateBuilder.sign, loaded RSA-3072 key",
            base,
            base_spread,
            "certs/s",
            database,
            note=f"{len(pool)} EC P-256 CSRs per run, made beforehand",
        )
    ]
