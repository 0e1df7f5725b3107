"""Response headers, error pages that reveal nothing, and Django's deployment checklist."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

from accounts.roles import Role

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def test_every_answer_carries_the_security_headers(client: Client) -> None:
    for path in ["/accounts/login/", "/healthz", "/no/such/page/"]:
        response = client.get(path, secure=True)
        csp = response["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert "camera=()" in response["Permissions-Policy"]
        assert response["X-Frame-Options"] == "DENY"
        assert response["X-Content-Type-Options"] == "nosniff"
        assert response["Referrer-Policy"] == "same-origin"
        assert response["Strict-Transport-Security"].startswith("max-age=")


def test_templates_hold_no_inline_script_or_style() -> None:
    for template in (ROOT / "templates").rglob("*.html"):
        text = template.read_text()
        for marker in ("<script", "style=", "<style", " onclick=", " onsubmit=", "javascript:"):
            assert marker not in text, f"{template.relative_to(ROOT)} has {marker!r}"


def test_404_and_403_pages_reveal_nothing(client: Client, role_client) -> None:
    response = client.get("/no/such/page/")
    assert response.status_code == 404
    assert b"Not found" in response.content
    assert b"urlpatterns" not in response.content and b"Traceback" not in response.content
    denied = role_client(Role.CA_OPERATOR).get("/users/")
    assert denied.status_code == 403
    assert b"Access denied" in denied.content
    assert b"auth.view_user" not in denied.content  # the permission's name stays on the server


def test_400_page_for_a_forged_host_header(client: Client) -> None:
    response = client.get("/accounts/login/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    assert b"Bad request" in response.content
    assert b"ALLOWED_HOSTS" not in response.content


def test_500_page_reveals_nothing(signed_in, admin_user, make_user) -> None:
    from tests.audit.helpers import raw_tampering

    target = make_user("victim-500", Role.AUDITOR)
    client = signed_in(admin_user)
    client.raise_request_exception = False
    with raw_tampering() as cursor:  # the audit MAC key does not unseal: fail closed
        cursor.execute("UPDATE audit_auditmackey SET sealed_key = %s", [b"\x01broken"])
    from audit.services import audit_keys_forget

    audit_keys_forget()  # as in a process started after the damage
    response = client.post(f"/users/{target.pk}/deactivate/")
    assert response.status_code == 500
    assert b"Something went wrong" in response.content
    for leak in (b"Traceback", b"EnvelopeError", b"SECRET_KEY", b"audit_auditmackey", b"sealed"):
        assert leak not in response.content


def test_deployment_checklist_passes_with_the_documented_production_settings(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DEBUG="false",
        SECRET_KEY=secrets.token_urlsafe(50),
        KMS_MASTER_KEYS="p1:" + base64.b64encode(os.urandom(32)).decode(),
        KMS_DATA_DIR=str(tmp_path),
        ALLOWED_HOSTS="kms.example.org",
        SECURE_SSL_REDIRECT="true",
        SECURE_PROXY_SSL_HEADER="true",
        SECURE_HSTS_PRELOAD="true",
        CSRF_TRUSTED_ORIGINS="https://kms.example.org",
    )
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
