"""kmsportal.crypto.server_identity: what makes a certificate this deployment's server
identity, with hand-built certificates (no database)."""

from __future__ import annotations

import pytest

from kmsportal.crypto.profiles import get_profile
from kmsportal.crypto.server_identity import (
    deployment_uri_problem,
    server_identity_problem,
    spki_pin_problem,
    spki_sha256,
)
from kmsportal.crypto.signer import LoadedKeySigner
from kmsportal.crypto.x509 import (
    build_ca_certificate,
    build_certificate,
    generate_private_key,
    parse_san,
    parse_subject,
)

DEPLOYMENT = "urn:kmsportal:deployment:12345678-1234-4123-8123-123456789abc"
OTHER = "urn:kmsportal:deployment:00000000-0000-4000-8000-000000000000"


def _ca(name: str, parent=None):
    key = generate_private_key("ecp256")
    certificate = build_ca_certificate(
        subject=parse_subject(f"CN={name}"),
        public_key=key.public_key(),
        signer=LoadedKeySigner(parent[0] if parent else key),
        issuer_certificate=parent[1] if parent else None,
        days=30 if parent is None else 29,  # an intermediate may not outlive its parent
        path_length=None if parent is None else 0,
    )
    return key, certificate


def _leaf(ca, profile: str = "kms-server", sans=("dns:kms", f"uri:{DEPLOYMENT}")):
    key = generate_private_key("ecp256")
    return build_certificate(
        subject=parse_subject("CN=kms"),
        public_key=key.public_key(),
        sans=[parse_san(s) for s in sans],
        profile=get_profile(profile),
        issuer_certificate=ca[1],
        signer=LoadedKeySigner(ca[0]),
        crl_distribution_url="http://kms.invalid/pki/crl/x.crl",
        ca_issuers_url="http://kms.invalid/pki/ca/x.crt",
        ocsp_url="http://kms.invalid/pki/ocsp/x",
        days=30,
    )


@pytest.fixture(scope="module")
def pki():
    root = _ca("root")
    return root, _ca("server identity", root), _ca("clients", root)


def test_only_the_pinned_ca_and_deployment_with_the_kms_server_profile_pass(pki) -> None:
    _root, server_ca, clients_ca = pki
    pin = spki_sha256(server_ca[1])
    good = _leaf(server_ca)
    assert (
        server_identity_problem(good, server_ca[1], ca_spki_sha256=pin, deployment=DEPLOYMENT)
        is None
    )
    cases = [
        (_leaf(clients_ca), clients_ca[1], DEPLOYMENT, "not issued by the server-identity CA"),
        (good, server_ca[1], OTHER, "does not name this deployment"),
        (
            _leaf(server_ca, "tls-client", ("uri:" + DEPLOYMENT,)),
            server_ca[1],
            DEPLOYMENT,
            "serverAuth",
        ),
        (_leaf(server_ca, sans=("dns:kms",)), server_ca[1], DEPLOYMENT, "does not name"),
    ]
    for leaf, issuer, deployment, reason in cases:
        problem = server_identity_problem(leaf, issuer, ca_spki_sha256=pin, deployment=deployment)
        assert problem is not None and reason in problem
    # A look-alike CA with the same name but another key: the pin gives it away.
    impostor = _ca("server identity", pki[0])
    problem = server_identity_problem(
        _leaf(impostor), impostor[1], ca_spki_sha256=pin, deployment=DEPLOYMENT
    )
    assert problem is not None and "not issued by the server-identity CA" in problem
    # A leaf presented with the pinned CA as issuer but signed by another key.
    problem = server_identity_problem(
        _leaf(impostor), server_ca[1], ca_spki_sha256=pin, deployment=DEPLOYMENT
    )
    assert problem == "it is not signed by the pinned server-identity CA"


def test_pin_formats() -> None:
    assert spki_pin_problem("ab" * 32) is None
    assert spki_pin_problem("AB" * 32) and spki_pin_problem("ab" * 31) and spki_pin_problem(None)
    assert deployment_uri_problem(DEPLOYMENT) is None
    assert deployment_uri_problem("urn:kmsportal:deployment:x") and deployment_uri_problem(1)
