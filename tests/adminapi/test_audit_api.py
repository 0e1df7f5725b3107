"""The audit endpoints of the admin API over real HTTP with Bearer tokens: search with the
event list's filters and cursors, one event with its inclusion proof, the export (the
portal's file, verifiable offline), verification (recorded as the command records it), the
chain status and signed head, who may do what, and bad filters as problem documents."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.test import Client

from accounts.roles import Role
from adminapi.tokens import api_token_create
from audit.models import AuditAction, AuditEvent
from audit.sequencer import audit_integrate
from tests.audit.helpers import append_events, raw_tampering, resign_newest_head
from tests.factories import user_make

BASE = "/api/v1/admin/audit"
PROBLEM = "application/problem+json"


def api(role: Role, scope: str = "roles", username: str = "") -> Client:
    user = user_make(username or f"api-{role.value.replace('_', '-')}-{scope}", role)
    created = api_token_create(actor=user, user=user, name="tests", scope=scope, days=1)
    return Client(headers={"authorization": f"Bearer {created.secret}"})


def problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith(PROBLEM)
    document = response.json()
    assert document["code"] == code and document["status"] == status, document
    return document


@pytest.fixture
def auditor(db) -> Client:
    return api(Role.AUDITOR, "read-only")


@pytest.mark.django_db
def test_search_filters_and_cursors(auditor) -> None:
    append_events(7, label="api-search")
    page = auditor.get(BASE + "/events", {"text": "api-search", "limit": 3}).json()
    labels = [event["target_label"] for event in page["items"]]
    assert labels == ["api-search-6", "api-search-5", "api-search-4"]
    assert page["newer_cursor"] is None and page["older_cursor"] is not None
    older = auditor.get(
        BASE + "/events", {"text": "api-search", "limit": 3, "before": page["older_cursor"]}
    ).json()
    assert [e["target_label"] for e in older["items"]] == [
        "api-search-3",
        "api-search-2",
        "api-search-1",
    ]
    newer = auditor.get(
        BASE + "/events", {"text": "api-search", "limit": 3, "after": older["newer_cursor"]}
    ).json()
    assert [e["target_label"] for e in newer["items"]] == labels
    denied = auditor.get(BASE + "/events", {"action": AuditAction.ACCESS_DENIED}).json()
    assert {e["action"] for e in denied["items"]} == {AuditAction.ACCESS_DENIED}
    assert auditor.get(BASE + "/events", {"target_id": "3", "text": "api-search"}).json()["items"][
        0
    ]["details"] == {"i": 3}
    assert auditor.get(BASE + "/events", {"outcome": "error", "text": "api"}).json()["items"] == []


@pytest.mark.django_db
def test_one_event_with_its_inclusion_proof(auditor) -> None:
    first, second = append_events(2, label="api-one")
    missing = auditor.get(f"{BASE}/events/{first.sequence}").json()
    assert missing["inclusion"]["verified"] is False  # not integrated yet
    audit_integrate()
    event = auditor.get(f"{BASE}/events/{first.sequence}").json()
    assert event["target_label"] == "api-one-0" and event["details"] == {"i": 0}
    assert event["next_sequence"] == second.sequence
    assert event["inclusion"]["verified"] is True and event["inclusion"]["problem"] == ""
    problem(auditor.get(f"{BASE}/events/99999999"), 404, "not_found")


@pytest.mark.django_db
def test_export_is_the_portals_file_and_is_audited(auditor, tmp_path, capsys) -> None:
    append_events(3, label="api-export")
    response = auditor.get(BASE + "/export", {"format": "jsonl"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert response["Cache-Control"] == "no-store"
    text = b"".join(response.streaming_content).decode()
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[-1]["type"] == "tree_head"
    actions = [line.get("action") for line in lines]
    assert AuditAction.AUDIT_EXPORTED in actions  # the export covers its own record
    exported = AuditEvent.objects.get(action=AuditAction.AUDIT_EXPORTED)
    assert exported.actor_name == "api-auditor-read-only"
    assert exported.details["format"] == "jsonl"

    # the file verifies offline, as the portal's export does
    from kmsclient.cli import main

    path = tmp_path / "export.jsonl"
    path.write_text(text)
    assert main(["audit-verify", str(path)]) == 0, capsys.readouterr()
    assert capsys.readouterr().out.startswith("OK:")

    csv = auditor.get(BASE + "/export", {"format": "csv", "text": "api-export"})
    rows = b"".join(csv.streaming_content).decode().splitlines()
    assert rows[0].startswith("record,leaf_index") and rows[-1].startswith("tree_head,")
    assert sum(row.startswith("event,") for row in rows) == 3


@pytest.mark.django_db
def test_verify_runs_the_full_check_and_is_recorded(auditor) -> None:
    append_events(3, label="api-verify")
    verifier = api(Role.AUDITOR)
    report = verifier.post(BASE + "/verify")
    assert report.status_code == 200, report.content
    assert report.json()["ok"] is True and report.json()["problem"] is None
    recorded = AuditEvent.objects.get(action=AuditAction.AUDIT_VERIFIED)
    assert recorded.details["ok"] is True
    status = auditor.get(BASE + "/chain").json()
    assert status["last_verification"]["sequence"] == recorded.sequence
    assert status["last_verification"]["ok"] is True

    audit_integrate()
    victim = AuditEvent.objects.filter(target_label="api-verify-1").get()
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = %s WHERE sequence = %s",
            ["rewritten", victim.sequence],
        )
    broken = verifier.post(BASE + "/verify").json()
    assert broken["ok"] is False and broken["problem"]


@pytest.mark.django_db
def test_chain_status_and_signed_head(auditor) -> None:
    problem(auditor.get(BASE + "/chain/head"), 404, "no_tree_head")
    append_events(2, label="api-head")
    call_command("audit_head", stdout=open("/dev/null", "w"))  # noqa: SIM115
    head = auditor.get(BASE + "/chain/head").json()
    assert head["type"] == "tree_head" and head["tree_size"] >= 2
    status = auditor.get(BASE + "/chain").json()
    assert status["tree_head"] == head
    assert status["signing_public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")

    # A database writer swaps the key and re-signs: neither is handed out any more.
    resign_newest_head(Ed25519PrivateKey.generate(), swap_key_row=True)
    refused = problem(auditor.get(BASE + "/chain/head"), 409, "audit_head_untrusted")
    assert "swapped" in refused["detail"]
    status = auditor.get(BASE + "/chain").json()
    assert status["tree_head"] is None and status["signing_public_key_pem"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", "/events", {Role.ADMINISTRATOR, Role.AUDITOR}),
        ("get", "/chain", {Role.ADMINISTRATOR, Role.AUDITOR}),
        ("get", "/export", {Role.ADMINISTRATOR, Role.AUDITOR}),
        ("post", "/verify", {Role.ADMINISTRATOR, Role.AUDITOR}),
    ],
)
def test_who_may_read_export_and_verify(method, path, allowed) -> None:
    """As on the portal: administrators and auditors. The export is a GET (read-only tokens
    may export); verifying is a POST, which read-only tokens never send."""
    for role in (Role.ADMINISTRATOR, Role.KEY_CUSTODIAN, Role.CA_OPERATOR, Role.AUDITOR):
        for scope in ("roles", "read-only"):
            client = api(role, scope)
            response = getattr(client, method)(BASE + path)
            if scope == "read-only" and method == "post":
                problem(response, 403, "read_only_token")
            elif role in allowed:
                assert response.status_code == 200, (role, scope, response.content)
            else:
                problem(response, 403, "permission_denied")


@pytest.mark.django_db
def test_bad_filters_are_problem_documents(auditor) -> None:
    problem(
        auditor.get(
            BASE + "/events", {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"}
        ),
        422,
        "validation_failed",
    )
    problem(auditor.get(BASE + "/events", {"outcome": "maybe"}), 422, "validation_failed")
    problem(auditor.get(BASE + "/events", {"since": "yesterday"}), 422, "validation_failed")
    problem(auditor.get(BASE + "/events", {"limit": 0}), 422, "validation_failed")
    problem(auditor.get(BASE + "/export", {"format": "xml"}), 422, "validation_failed")
    problem(auditor.get(BASE + "/events/abc"), 404, "not_found")


def test_each_operation_needs_what_its_portal_page_needs() -> None:
    """Parity with the auditor's pages' own permissions (audit.views)."""
    from adminapi.routers.audit import RULES
    from audit import views

    pages = {
        "audit_event_list": views.EventListView,
        "audit_event_get": views.EventDetailView,
        "audit_chain_status": views.ChainStatusView,
        "audit_tree_head": views.TreeHeadDownloadView,
        "audit_export": views.ExportView,
        "audit_verify": views.ChainVerifyView,
    }
    assert set(pages) == set(RULES)
    for operation_id, page in pages.items():
        assert RULES[operation_id].permissions == (page.permission_required,), operation_id


@pytest.mark.django_db
def test_the_trail_of_one_object_by_its_type_label(auditor) -> None:
    """A PKI action done through the API shows in the log under its target, found by the
    type's label as on the event list, with the token's user as the actor."""
    from pki import services

    root = services.certificate_authority_create(
        actor=None, name="trail-root", subject="CN=Trail Root", key_type="ecp256"
    )
    admin = user_make("trail-admin", Role.ADMINISTRATOR)
    token = api_token_create(actor=admin, user=admin, name="tests", scope="roles", days=1)
    disabled = Client(headers={"authorization": f"Bearer {token.secret}"}).post(
        "/api/v1/admin/pki/cas/trail-root/disable",
        json.dumps({"reason": "trail"}),
        content_type="application/json",
    )
    assert disabled.status_code == 200, disabled.content
    trail = auditor.get(
        BASE + "/events",
        {"target_type": "certificate authority", "target_id": str(root.pk)},
    ).json()["items"]
    assert [event["action"] for event in trail] == ["ca.disabled", "ca.created"]
    assert trail[0]["actor_name"] == "trail-admin"
    assert trail[0]["details"]["reason"] == "trail"
    assert trail[0]["target_type"] == "pki.CertificateAuthority"
