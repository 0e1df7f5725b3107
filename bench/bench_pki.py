"""PKI: the certificate list page at 100k certificates against the same page at 10, and
certificates issued per second from CSRs through the service, against bare `cryptography`
signing the same CSRs with an already-loaded key, in the same process.

Pages: as for keys (bench_vault): Django's test client, signed in through the sign-in form as
an auditor, certificate rows bulk-inserted, each page timed at ~10 certificates and again at
100k (quick: 10k) with the same query. Target: at most 2x.

Issuance:
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
import secrets

from bench.bench_vault import _signed_in_client, page_rows, page_timer
from bench.harness import Row, analyze, measure

REASONS = [
    "keyCompromise",
    "superseded",
    "cessationOfOperation",
    "unspecified",
    "affiliationChanged",
]


def bulk_certificates(ca, *, revoked: int = 0, valid: int = 0) -> None:  # type: ignore[no-untyped-def]
    """``revoked`` revoked then ``valid`` valid certificate rows of ``ca``, inserted in batches
    (no signing: rows as the list and the CRL read them)."""
    from pki.models import Certificate

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    batch: list[Certificate] = []
    for index in range(revoked + valid):
        is_revoked = index < revoked
        reason = REASONS[index % len(REASONS)]
        batch.append(
            Certificate(
                ca=ca,
                serial_hex=format(secrets.randbits(159) | 1, "040X"),
                subject=f"CN=host-{index}.example.org",
                profile="tls-server",
                public_key="EC P-256",
                not_before=now - dt.timedelta(days=30),
                not_after=now + dt.timedelta(days=300 + index % 90),
                certificate_pem="",
                certificate_der=b"",
                fingerprint_sha256=secrets.token_hex(32).upper(),
                status="revoked" if is_revoked else "valid",
                revocation_reason=reason if is_revoked else "",
                revoked_at=now - dt.timedelta(seconds=index) if is_revoked else None,
                invalidity_date=(
                    now - dt.timedelta(days=2) if is_revoked and reason == "keyCompromise" else None
                ),
                source="csr",
                issued_by_name="bench",
            )
        )
        if len(batch) == 5000:
            Certificate.objects.bulk_create(batch)
            batch = []
    Certificate.objects.bulk_create(batch)


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


def _pages(*, quick: bool, database: str, ca) -> list[Row]:  # type: ignore[no-untyped-def]
    from pki.models import Certificate

    size = 10_000 if quick else 100_000
    timed = page_timer(_signed_in_client(), "/pki/certificates/", repeats=9 if quick else 15)

    def pages() -> dict[str, tuple[float, float]]:
        # A page deep in the table: the keyset cursor 60 rows above the oldest.
        late = Certificate.objects.order_by("id").values_list("id", flat=True)[60:61]
        cursor = late[0] if late else Certificate.objects.order_by("-id").first().pk
        return {
            "first page": timed({}),
            "status filter": timed({"status": "valid"}),
            "CA filter": timed({"ca": ca.name}),
            "a late page (keyset)": timed({"after": str(cursor)}),
        }

    bulk_certificates(ca, valid=10)
    small_count = Certificate.objects.count()
    small = pages()
    bulk_certificates(ca, valid=size - small_count)
    analyze()
    big = pages()
    return page_rows(
        what="certificate",
        label=f"{size // 1000}k certificates",
        small=small,
        big=big,
        small_label=f"{small_count} certificates",
        database=database,
    )


def run(*, quick: bool, database: str) -> list[Row]:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    from pki.services import certificate_authority_create, certificate_issue_from_csr

    count = 60 if quick else 500
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
    rows = _pages(quick=quick, database=database, ca=issuing)
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
    rows.insert(
        0,
        Row(
            "issue a certificate from a CSR (service: CSR checks, profile, cached RSA-3072 "
            "signer, row, audit)",
            rate,
            spread,
            "bare cryptography CertificateBuilder.sign, loaded RSA-3072 key",
            base,
            base_spread,
            "certs/s",
            database,
            note=f"{len(pool)} EC P-256 CSRs per run, made beforehand",
        ),
    )
    return rows
