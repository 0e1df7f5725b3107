"""Keys and clients through the admin API: lifecycle calls, what a detail shows (never key
material), the OpenAPI document served publicly."""

from __future__ import annotations

from accounts.roles import Role


def test_openapi_document_is_public_and_3_1(client) -> None:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    assert response.json()["openapi"].startswith("3.1")


def test_key_lifecycle_through_the_api(make_user, api_client) -> None:
    custodian = make_user("kc", Role.KEY_CUSTODIAN)
    api = api_client(custodian)
    created = api.post("/api/v1/admin/keys", {"name": "payroll"}, content_type="application/json")
    assert created.status_code == 201, created.content
    assert created.json()["state"] == "active"
    rotated = api.post("/api/v1/admin/keys/payroll/rotate", {}, content_type="application/json")
    assert rotated.status_code == 200, rotated.content
    assert rotated.json()["version"] == 2
    listed = api.get("/api/v1/admin/keys")
    assert [k["name"] for k in listed.json()["keys"]] == ["payroll"]
    missing = api.get("/api/v1/admin/keys/nope")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/problem+json"
    bad = api.post("/api/v1/admin/keys", {"name": "NO"}, content_type="application/json")
    assert bad.status_code == 422, bad.content
    assert bad.json()["errors"]
    wrong = api.delete("/api/v1/admin/keys")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


def test_client_detail_lists_grants_and_deliveries(make_user, api_client) -> None:
    from vault import clients, selectors, services

    custodian = make_user("kc", Role.KEY_CUSTODIAN)
    api = api_client(custodian)
    made = api.post("/api/v1/admin/clients", {"name": "billing"}, content_type="application/json")
    assert made.status_code == 201 and made.json()["enrollment_token"]
    assert "no-store" in made["Cache-Control"]
    key = services.symmetric_key_create(actor=None, name="payroll")
    client = selectors.client_get(user=custodian, name="billing")
    clients.grant_create(actor=None, client=client, key=key, operations="encrypt")
    detail = api.get("/api/v1/admin/clients/billing").json()
    assert [g["key"] for g in detail["grants"]] == ["payroll"]
    assert detail["deliveries"] == []
    assert made.json()["enrollment_token"] not in str(detail)


def test_key_detail_shows_pending_requests_and_no_material(make_user, api_client) -> None:
    from vault.models import KeyVersion

    custodian = make_user("kc", Role.KEY_CUSTODIAN)
    api = api_client(custodian)
    json = "application/json"
    assert api.post("/api/v1/admin/keys", {"name": "k"}, content_type=json).status_code == 201
    asked = api.post("/api/v1/admin/keys/k/destruction", {"reason": "old"}, content_type=json)
    detail = api.get("/api/v1/admin/keys/k").json()
    assert detail["pending_requests"] == [
        {
            "kind": "destruction",
            "id": asked.json()["request_id"],
            "summary": "destroy after 30 days",
        }
    ]
    version = KeyVersion.objects.get(key__name="k")
    assert detail["versions"][0]["fingerprint"] == version.fingerprint
    assert "material" not in str(detail) and detail["compromise_impact"] == []
