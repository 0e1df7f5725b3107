"""The operations endpoints' refusals before a session exists: RFC 9457 problem documents
with stable codes, never a 500 or an HTML page."""

from __future__ import annotations

import base64
import json

import pytest

pytestmark = pytest.mark.django_db

ENVELOPE = {
    "session": base64.b64encode(bytes(16)).decode(),
    "counter": 1,
    "nonce": base64.b64encode(bytes(12)).decode(),
    "ciphertext": base64.b64encode(bytes(32)).decode(),
}


def post(client, path: str, body: object, content_type: str = "application/json"):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type)


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/api/v1/keys/encrypt", ENVELOPE, 401, "unknown_session"),
        ("/api/v1/session/ping", ENVELOPE, 401, "unknown_session"),
        ("/api/v1/keys/encrypt", {**ENVELOPE, "counter": 0}, 400, "malformed_request"),
        ("/api/v1/keys/encrypt", {"session": "x"}, 400, "malformed_request"),
        ("/api/v1/keys/encrypt", [1, 2], 400, "malformed_request"),
        ("/api/v1/keys/explode", ENVELOPE, 404, "not_found"),
        ("/api/v1/session", {}, 400, "malformed_request"),
        ("/api/v1/session", {"protocol": 2}, 400, "unsupported_protocol"),
    ],
)
def test_refusals_are_problem_documents(client, path, body, status, code) -> None:
    response = post(client, path, body)
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == code


def test_wrong_media_type_and_size(client) -> None:
    response = post(client, "/api/v1/keys/encrypt", "x=1", "application/x-www-form-urlencoded")
    assert response.status_code == 415
    huge = json.dumps({**ENVELOPE, "ciphertext": "A" * (5 * 1024 * 1024)})
    response = post(client, "/api/v1/keys/encrypt", huge)
    assert response.status_code == 413 and response.json()["code"] == "request_too_large"


def test_get_is_not_allowed(client) -> None:
    response = client.get("/api/v1/keys/encrypt")
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"
