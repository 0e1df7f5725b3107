"""Every error of the admin API is an RFC 9457 problem document, never HTML or a 500; the
OpenAPI document is a valid 3.1 document; the docs page needs a portal session past MFA."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.test import Client

from accounts.roles import Role
from tests.factories import sign_in

from .conftest import bearer

PROBLEM = "application/problem+json"


def _problem(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail", "code"} <= set(body)
    assert body["status"] == status
    if code:
        assert body["code"] == code
    return body


def test_no_token_is_a_401_problem(client) -> None:
    _problem(client.get("/api/v1/admin/keys"), 401, "unauthenticated")


@pytest.mark.parametrize(
    "path", ["/api/v1/", "/api/v1/admin/", "/api/v1/admin/nothing-here", "/api/v1/admin/keys/a/b/c"]
)
def test_unknown_paths_are_404_problems(path: str, make_user) -> None:
    api = bearer(make_user("kc", Role.KEY_CUSTODIAN))
    _problem(api.get(path), 404)


def test_bad_input_is_a_problem_with_field_errors(make_user) -> None:
    api = bearer(make_user("kc", Role.KEY_CUSTODIAN))
    body = _problem(
        api.post(
            "/api/v1/admin/keys",
            {"name": "Bad Name", "rotation_period_days": -3, "key_type": "des"},
            content_type="application/json",
        ),
        422,
        "validation_failed",
    )
    fields = {error["loc"][-1] for error in body["errors"]}
    assert {"name", "rotation_period_days", "key_type"} <= fields
    _problem(api.post("/api/v1/admin/keys", "{not json", content_type="application/json"), 400)
    _problem(api.get("/api/v1/admin/keys?due_within=abc"), 422, "validation_failed")
    _problem(api.get("/api/v1/admin/accounts/users/99999999999999999999"), 422)
    _problem(api.get(f"/api/v1/admin/accounts/users/{2**60}"), 422)


def test_nul_characters_and_dates_beyond_reason_are_refused(make_user) -> None:
    api = bearer(make_user("kc", Role.KEY_CUSTODIAN))
    json = "application/json"
    _problem(
        api.post("/api/v1/admin/keys", {"name": "k", "description": "a\x00b"}, content_type=json),
        422,
    )
    _problem(api.get("/api/v1/admin/keys?q=a%00b"), 422)
    far = {"name": "k", "activate_at": "9999-12-31T23:59:59Z", "rotation_period_days": 3650}
    _problem(api.post("/api/v1/admin/keys", far, content_type=json), 422, "validation_failed")
    naive = {"name": "k", "activate_at": "2100-01-01T00:00:00"}
    made = api.post("/api/v1/admin/keys", naive, content_type=json)
    assert made.status_code == 201 and made.json()["state"] == "pre_active"


def test_a_body_too_large_is_a_413_problem(make_user, settings) -> None:
    api = bearer(make_user("kc", Role.KEY_CUSTODIAN))
    big = '{"name": "k", "description": "' + "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1) + '"}'
    _problem(api.post("/api/v1/admin/keys", big, content_type="application/json"), 413)


def test_state_conflicts_and_domain_refusals_are_problems(make_user) -> None:
    api = bearer(make_user("kc", Role.KEY_CUSTODIAN))
    json = "application/json"
    assert api.post("/api/v1/admin/keys", {"name": "k"}, content_type=json).status_code == 201
    _problem(api.post("/api/v1/admin/keys", {"name": "k"}, content_type=json), 400)  # exists
    assert api.post("/api/v1/admin/keys/k/suspend").status_code == 200
    _problem(api.post("/api/v1/admin/keys/k/suspend"), 409, "invalid_transition")
    _problem(api.post("/api/v1/admin/keys/nope/rotate", {}, content_type=json), 404, "not_found")
    _problem(
        api.post(
            "/api/v1/admin/clients/nobody/grants",
            {"key": "k", "reason": "x"},
            content_type=json,
        ),
        404,
    )


def test_a_wrong_method_is_a_405_problem(make_user) -> None:
    api = bearer(make_user("kc", Role.KEY_CUSTODIAN))
    response = api.put("/api/v1/admin/keys")
    _problem(response, 405, "method_not_allowed")
    assert "GET" in response["Allow"] and "POST" in response["Allow"]


def test_an_unexpected_failure_is_a_500_problem(make_user, monkeypatch) -> None:
    from vault import selectors

    def broken(**kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(selectors, "symmetric_key_page", broken)
    api = bearer(make_user("kc", Role.KEY_CUSTODIAN))
    body = _problem(api.get("/api/v1/admin/keys"), 500, "internal_error")
    assert "boom" not in body["detail"]


def _no_duplicate_members(pairs: list[tuple[str, object]]) -> dict[str, object]:
    names = [name for name, _ in pairs]
    assert len(names) == len(set(names)), f"duplicate members: {names}"
    return dict(pairs)


def test_the_openapi_document_is_a_valid_3_1_document(client) -> None:
    # Parsed strictly: a member given twice (a "200" from response= and another from
    # openapi_extra) is valid to Python's json but breaks YAML-based tools and Swagger UI.
    raw = client.get("/api/v1/openapi.json").content
    document = json.loads(raw, object_pairs_hook=_no_duplicate_members)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["title"] and document["info"]["version"]
    assert document["components"]["securitySchemes"]  # the Bearer token
    schema = schemathesis.openapi.from_dict(document)  # parses every operation and $ref
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(item) for item in document["paths"].values()) >= 40
    for path, item in document["paths"].items():
        assert path.startswith("/api/v1/admin/")
        for method, operation in item.items():
            assert operation["operationId"] and operation.get("security"), (method, path)
            problem = operation["responses"]["default"]["content"]
            assert problem == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}


def test_the_docs_page_is_for_signed_in_users_and_needs_no_cdn(client, make_user) -> None:
    anonymous = client.get("/api/v1/docs")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login/")
    browser = sign_in(make_user("kc", Role.KEY_CUSTODIAN))
    page = browser.get("/api/v1/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "https://" not in html


def test_a_signed_in_session_without_mfa_does_not_reach_the_docs(make_user) -> None:
    user = make_user("kc", Role.KEY_CUSTODIAN)
    browser = Client()
    browser.force_login(user)  # no second factor passed
    response = browser.get("/api/v1/docs")
    assert response.status_code == 302 and "/accounts/mfa/" in response["Location"]
    # and a session is no credential for the API itself
    _problem(browser.get("/api/v1/admin/keys"), 401)
