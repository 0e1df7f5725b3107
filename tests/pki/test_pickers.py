"""CA pickers: sensible defaults, and never a CA that cannot do what the form asks."""

from __future__ import annotations

from django.test import Client

from pki import services
from vault.server_identity import distribution_bootstrap


def options(page, field: str) -> list[str]:
    return [value for value, _ in page.context["form"].fields[field].choices]


def test_issuance_offers_intermediates_only(db, operator: Client) -> None:
    distribution_bootstrap()  # kms-root and the client identity CA kms-clients
    page = operator.get("/pki/issue/generated/")
    assert options(page, "ca") == []
    assert "No CA can issue end-entity certificates yet" in page.content.decode()

    root = services.certificate_authority_create(
        actor=None, name="web-root", subject="CN=Web Root", key_type="ecp256"
    )
    services.certificate_authority_create(
        actor=None, name="web", subject="CN=Web Issuing", parent=root, key_type="ecp256"
    )
    page = operator.get("/pki/issue/")
    assert options(page, "ca") == ["web"]  # one candidate: it is the default

    services.certificate_authority_create(
        actor=None, name="mail", subject="CN=Mail Issuing", parent=root, key_type="ecp256"
    )
    page = operator.get("/pki/issue/")
    assert options(page, "ca") == ["", "mail", "web"]  # several: the operator chooses
    refused = operator.post(
        "/pki/issue/generated/",
        {"step": "request", "ca": "kms-clients", "profile": "tls-client", "subject": "CN=x"},
    )
    assert refused.status_code == 400
    assert "Select a valid choice" in refused.content.decode()


def test_new_ca_parent_defaults_to_the_root_and_skips_path_length_zero(db, administrator) -> None:
    distribution_bootstrap()
    page = administrator.get("/pki/cas/new/")
    assert options(page, "parent") == ["", "kms-root"]  # not kms-clients (path length 0)
    assert page.context["form"]["parent"].value() == "kms-root"
