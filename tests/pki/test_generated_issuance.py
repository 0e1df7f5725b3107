"""Generated-key issuance from the portal: Post/Redirect/Get, one issuance per form, one
download, nothing of the key kept afterwards."""

from __future__ import annotations

from datetime import timedelta

from cryptography.hazmat.primitives.serialization import pkcs12
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent
from pki.generated_delivery import generated_key_deliveries_expire
from pki.models import Certificate, GeneratedKeyDelivery
from tests.key_backends import BOTH_BACKENDS
from tests.pki.test_pages import PASSWORD, carried, generated_request, text

pytestmark = BOTH_BACKENDS


def confirm_data(client: Client) -> dict[str, str]:
    confirm = generated_request(client)
    assert confirm.status_code == 200
    data = {**carried(confirm.context["form"]), "step": "issue", "delivery": "pkcs12"}
    data.update(password1=PASSWORD, password2=PASSWORD)
    assert len(data["idempotency_token"]) >= 16
    return data


def test_double_submit_issues_once(operator: Client, issuing) -> None:
    data = confirm_data(operator)
    first = operator.post("/pki/issue/generated/", data)
    second = operator.post("/pki/issue/generated/", data)  # the second click, a reload
    assert first.status_code == second.status_code == 302
    assert first["Location"] == second["Location"]
    assert Certificate.objects.filter(source="generated").count() == 1
    assert AuditEvent.objects.filter(action="certificate.issued").count() == 1
    page = operator.get(second["Location"])
    assert "already submitted: nothing was issued again" in text(page)

    # A fresh confirmation page has a new token: that is a new, deliberate issuance.
    again = operator.post("/pki/issue/generated/", confirm_data(operator))
    assert again.status_code == 302 and again["Location"] != first["Location"]
    assert Certificate.objects.filter(source="generated").count() == 2


def test_result_page_shows_serial_and_link_and_offers_the_file_once(
    operator: Client, issuing
) -> None:
    issued = operator.post("/pki/issue/generated/", confirm_data(operator))
    record = Certificate.objects.get(source="generated")
    page = operator.get(issued["Location"])
    body = text(page)
    assert "Certificate issued" in body and record.serial_number_display in body
    assert f"/pki/certificates/{record.pk}/" in page.content.decode()
    assert PASSWORD not in page.content.decode()
    assert "no-store" in page["Cache-Control"]

    download = operator.post(issued["Location"])
    assert download.status_code == 200
    assert download["Content-Type"] == "application/x-pkcs12"
    _key, certificate, _chain = pkcs12.load_key_and_certificates(
        download.content, PASSWORD.encode()
    )
    assert certificate.serial_number == int(record.serial_hex, 16)
    assert "no-store" in download["Cache-Control"]

    delivery = GeneratedKeyDelivery.objects.get()
    assert bytes(delivery.sealed_bundle) == b"" and delivery.delivered_at is not None
    spent = operator.post(issued["Location"])
    assert spent.status_code == 410
    assert "offered once" in text(spent)
    assert "downloaded at" in text(operator.get(issued["Location"]))


def test_the_file_is_sealed_and_erased_when_not_fetched_in_time(operator: Client, issuing) -> None:
    issued = operator.post("/pki/issue/generated/", confirm_data(operator))
    delivery = GeneratedKeyDelivery.objects.get()
    sealed = bytes(delivery.sealed_bundle)
    assert sealed and b"PRIVATE KEY" not in sealed
    GeneratedKeyDelivery.objects.update(created_at=timezone.now() - timedelta(minutes=11))
    assert generated_key_deliveries_expire() == 1
    assert operator.post(issued["Location"]).status_code == 410
    assert "has been erased" in text(operator.get(issued["Location"]))


def test_another_operator_cannot_see_or_download_it(
    operator: Client, issuing, make_user, signed_in
) -> None:
    from accounts.roles import Role

    issued = operator.post("/pki/issue/generated/", confirm_data(operator))
    other = signed_in(make_user("olga-operator", Role.CA_OPERATOR))
    assert other.get(issued["Location"]).status_code == 404
    assert other.post(issued["Location"]).status_code == 404
    assert bytes(GeneratedKeyDelivery.objects.get().sealed_bundle)  # still there for its owner


def test_a_form_without_its_token_issues_nothing(operator: Client, issuing) -> None:
    data = confirm_data(operator)
    del data["idempotency_token"]
    response = operator.post("/pki/issue/generated/", data)
    assert response.status_code == 400
    assert not Certificate.objects.filter(source="generated").exists()


def test_passwords_are_not_kept_in_the_form(operator: Client, issuing) -> None:
    data = confirm_data(operator)
    data["password2"] = PASSWORD + "-different"
    response = operator.post("/pki/issue/generated/", data)
    assert response.status_code == 400
    assert PASSWORD not in response.content.decode()
