"""The auditor's workspace through real HTTP: list, filters, keyset pages, detail, chain, export."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import transaction
from django.test import Client
from django.utils import timezone

from accounts.roles import Role
from audit.checking import audit_checkpoint_create
from audit.models import AuditAction, AuditEvent, AuditSigningKey
from kmsportal.crypto.audit_log import verify_export
from tests.audit.helpers import append_events, raw_tampering, resign_newest_head

pytestmark = pytest.mark.django_db


@pytest.fixture
def auditor(role_client) -> Client:
    return role_client(Role.AUDITOR)


@pytest.mark.parametrize("role", [Role.AUDITOR, Role.ADMINISTRATOR])
def test_auditors_and_administrators_read_the_log(role_client, role: Role) -> None:
    client = role_client(role)
    first = AuditEvent.objects.order_by("sequence").first().sequence
    for url in ["/audit/", "/audit/chain/", f"/audit/events/{first}/"]:
        assert client.get(url).status_code == 200, url
    assert b'href="/audit/"' in client.get("/").content


@pytest.mark.parametrize("role", [Role.KEY_CUSTODIAN, Role.CA_OPERATOR])
def test_other_roles_cannot_see_the_audit_pages(role_client, role: Role) -> None:
    client = role_client(role)
    for url in [
        "/audit/",
        "/audit/chain/",
        "/audit/events/1/",
        "/audit/export.jsonl",
        "/audit/export.csv",
    ]:
        assert client.get(url).status_code == 403, url
    assert client.post("/audit/chain/verify/").status_code == 403
    assert b'href="/audit/"' not in client.get("/").content


def test_anonymous_is_sent_to_sign_in(client: Client) -> None:
    assert client.get("/audit/").status_code == 302


def test_auditor_write_paths_are_403_and_recorded(auditor: Client, make_user) -> None:
    target = make_user("victim", Role.KEY_CUSTODIAN)
    before = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).count()
    attempts = [
        ("/users/new/", {"username": "x", "roles": ["administrator"], "password_mode": "random"}),
        (f"/users/{target.pk}/roles/", {"roles": ["administrator"]}),
        (f"/users/{target.pk}/deactivate/", {}),
        (f"/users/{target.pk}/reactivate/", {}),
        (f"/users/{target.pk}/password/", {"password_mode": "random"}),
    ]
    for url, data in attempts:
        assert auditor.post(url, data).status_code == 403, url
    denied = AuditEvent.objects.filter(action=AuditAction.ACCESS_DENIED).order_by("sequence")
    assert denied.count() == before + len(attempts)
    assert {e.details["path"] for e in denied} >= {url for url, _ in attempts}
    # Audit rows have no write path at all: only GET pages, and verify (which appends).
    assert auditor.post("/audit/").status_code == 405


def test_list_filters(auditor: Client, make_user) -> None:
    append_events(3, label="alpha")
    append_events(2, label="beta")
    page = auditor.get("/audit/", {"text": "beta"})
    assert page.content.count(b"beta-") == 2 and b"alpha-" not in page.content
    page = auditor.get("/audit/", {"action": "auth.sign_in", "actor": "user-auditor"})
    assert page.status_code == 200
    assert b"auth.sign_in" in page.content and b"alpha-" not in page.content
    page = auditor.get("/audit/", {"outcome": "denied", "text": "alpha"})
    assert b"alpha-" not in page.content  # recorded as success
    future = (timezone.now() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert b"No events match" in auditor.get("/audit/", {"since": future}).content
    page = auditor.get("/audit/", {"target_type": "test", "target_id": "1"})
    assert page.content.count(b"alpha-1") == 1 and page.content.count(b"beta-1") == 1


def test_bad_filter_input_is_a_clear_400(auditor: Client) -> None:
    response = auditor.get("/audit/", {"since": "yesterday-ish", "action": "nope"})
    assert response.status_code == 400
    assert b"Enter a valid date/time" in response.content
    assert b"Select a valid choice" in response.content


def test_keyset_pagination(auditor: Client) -> None:
    append_events(120, label="page")
    newest = AuditEvent.objects.order_by("-sequence").first().sequence
    first = auditor.get("/audit/", {"text": "page"})
    rows = first.context["page"].events
    assert len(rows) == 50 and rows[0].sequence > rows[-1].sequence
    older = first.context["page"].older_cursor
    assert older == rows[-1].sequence
    second = auditor.get("/audit/", {"text": "page", "before": older}).context["page"]
    assert second.events[0].sequence == older - 1 and len(second.events) == 50
    third = auditor.get("/audit/", {"text": "page", "before": second.older_cursor}).context["page"]
    assert len(third.events) == 20 and third.older_cursor is None
    back = auditor.get("/audit/", {"text": "page", "after": second.newer_cursor}).context["page"]
    assert [e.sequence for e in back.events] == [e.sequence for e in rows]
    assert rows[0].sequence <= newest


def test_detail_shows_hashes(auditor: Client) -> None:
    (event,) = append_events(1)
    page = auditor.get(f"/audit/events/{event.sequence}/")
    assert event.hash.encode() in page.content
    assert b"not yet integrated" in page.content
    audit_checkpoint_create()
    page = auditor.get(f"/audit/events/{event.sequence}/")
    assert b"verified" in page.content and b"NOT VERIFIED" not in page.content
    assert auditor.get("/audit/events/999999/").status_code == 404


def _pem_body(pem: str) -> bytes:
    """The base64 lines of a PEM key (what an auditor would copy), without the armour."""
    return "".join(line for line in pem.splitlines() if not line.startswith("-----")).encode()


def test_event_page_says_not_verified_after_its_content_is_edited(auditor: Client) -> None:
    events = append_events(4)
    audit_checkpoint_create()
    url = f"/audit/events/{events[2].sequence}/"
    assert b"NOT VERIFIED" not in auditor.get(url).content
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = 'edited' WHERE sequence = %s",
            [events[2].sequence],
        )
    page = auditor.get(url)
    assert page.status_code == 200
    assert b"NOT VERIFIED" in page.content
    assert b"the event or the stored tree was altered" in page.content
    # Its untouched neighbour still verifies against the same head.
    assert b"NOT VERIFIED" not in auditor.get(f"/audit/events/{events[1].sequence}/").content


def test_event_page_says_not_verified_after_a_key_swap(auditor: Client) -> None:
    (event,) = append_events(1)
    audit_checkpoint_create()
    resign_newest_head(Ed25519PrivateKey.generate(), swap_key_row=True)
    page = auditor.get(f"/audit/events/{event.sequence}/")
    assert page.status_code == 200
    assert b"NOT VERIFIED" in page.content and b"swapped" in page.content
    assert b'<span class="badge ok">verified</span>' not in page.content


def test_chain_page_offers_the_key_and_head_only_while_they_are_trusted(auditor: Client) -> None:
    append_events(3)
    audit_checkpoint_create()
    genuine = AuditSigningKey.objects.get().public_key_pem
    page = auditor.get("/audit/chain/")
    assert _pem_body(genuine) in page.content
    assert b"AUDIT KEY NOT TRUSTED" not in page.content and b"NOT VERIFIED" not in page.content
    assert b"Download this signed head" in page.content
    download = auditor.get("/audit/chain/head.json")
    assert download.status_code == 200 and download.json()["signature"]

    mallory = Ed25519PrivateKey.generate()
    resign_newest_head(mallory, swap_key_row=True)
    attacker = AuditSigningKey.objects.get().public_key_pem
    assert attacker != genuine
    page = auditor.get("/audit/chain/")
    assert page.status_code == 200
    assert b"AUDIT KEY NOT TRUSTED" in page.content
    assert b"the public key was swapped" in page.content
    assert b"Do not pin or keep any key or tree head" in page.content
    # Neither the attacker's key nor the head it re-signed is offered to keep.
    assert _pem_body(attacker) not in page.content
    assert b"Keep a copy outside this system" not in page.content
    assert b"Download this signed head" not in page.content
    assert b'"signature"' not in page.content

    download = auditor.get("/audit/chain/head.json")
    assert download.status_code == 409
    assert download["Content-Type"] == "application/problem+json"
    problem = download.json()
    assert problem["code"] == "audit_head_untrusted"
    assert "swapped" in problem["detail"] and "Do not keep it" in problem["detail"]
    assert "signature" not in problem and "root_hash" not in problem


def test_a_head_resigned_by_an_unknown_key_is_not_offered(auditor: Client) -> None:
    """The key row is untouched (so it is still the key to pin), but the head was re-signed."""
    append_events(2)
    audit_checkpoint_create()
    genuine = AuditSigningKey.objects.get().public_key_pem
    resign_newest_head(Ed25519PrivateKey.generate(), swap_key_row=False)
    page = auditor.get("/audit/chain/")
    assert b"AUDIT KEY NOT TRUSTED" not in page.content
    assert b"NOT VERIFIED" in page.content and b"not a trusted audit key" in page.content
    assert b"Download this signed head" not in page.content
    assert _pem_body(genuine) in page.content
    download = auditor.get("/audit/chain/head.json")
    assert download.status_code == 409
    assert "not a trusted audit key" in download.json()["detail"]


def test_chain_page_refuses_a_key_that_is_not_pinned_in_settings(auditor: Client, settings) -> None:
    append_events(2)
    audit_checkpoint_create()
    genuine = AuditSigningKey.objects.get().public_key_pem
    other = Ed25519PrivateKey.generate().public_key()
    settings.KMS_AUDIT_PUBLIC_KEYS = [base64.b64encode(other.public_bytes_raw()).decode()]
    page = auditor.get("/audit/chain/")
    assert b"AUDIT KEY NOT TRUSTED" in page.content and b"KMS_AUDIT_PUBLIC_KEYS" in page.content
    assert _pem_body(genuine) not in page.content
    assert auditor.get("/audit/chain/head.json").status_code == 409
    settings.KMS_AUDIT_PUBLIC_KEYS = [genuine]
    assert _pem_body(genuine) in auditor.get("/audit/chain/").content
    assert auditor.get("/audit/chain/head.json").status_code == 200


def test_verify_now_records_and_reports(auditor: Client) -> None:
    append_events(5)
    response = auditor.post("/audit/chain/verify/", follow=True)
    assert b"Log intact" in response.content
    event = AuditEvent.objects.filter(action=AuditAction.AUDIT_VERIFIED).get()
    assert event.actor_name == "user-auditor" and event.details["ok"] is True
    assert b"intact" in auditor.get("/audit/chain/").content

    third = AuditEvent.objects.order_by("sequence")[2].sequence
    with raw_tampering() as cursor:
        cursor.execute(
            "UPDATE audit_auditevent SET target_label = 'x' WHERE sequence = %s", [third]
        )
    response = auditor.post("/audit/chain/verify/", follow=True)
    assert f"Log verification FAILED at event {third}".encode() in response.content
    latest = AuditEvent.objects.filter(action=AuditAction.AUDIT_VERIFIED).order_by("-sequence")[0]
    assert latest.outcome == "error" and latest.details["broken_at"] == third


def _body(response) -> str:
    return b"".join(response.streaming_content).decode()


def test_jsonl_export_verifies_offline_and_detects_a_modified_line(auditor: Client) -> None:
    append_events(6)
    audit_checkpoint_create()
    append_events(2)
    response = auditor.get("/audit/export.jsonl")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert "attachment" in response["Content-Disposition"]
    lines = _body(response).splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds[0] == "header" and kinds[-2] == "public_key" and kinds[-1] == "tree_head"
    result = verify_export(lines)
    assert result.ok, result.problem
    assert result.tree_size == kinds.count("event")  # the head covers the export's own record
    assert result.events_verified == kinds.count("event")
    export_event = AuditEvent.objects.filter(action=AuditAction.AUDIT_EXPORTED).get()
    assert export_event.details == {"format": "jsonl", "filters": {}}

    index = next(i for i, k in enumerate(kinds) if k == "event" and i > 3)
    tampered = json.loads(lines[index])
    tampered["target_label"] = "edited offline"
    lines[index] = json.dumps(tampered)
    result = verify_export(lines)
    assert not result.ok and result.line_number == len(lines)  # the root no longer matches
    assert "altered" in result.problem


def test_filtered_export_carries_its_filters(auditor: Client) -> None:
    append_events(4, label="keep")
    lines = _body(auditor.get("/audit/export.jsonl", {"text": "keep"})).splitlines()
    header = json.loads(lines[0])
    assert header["filters"] == {"text": "keep"}
    events = [json.loads(line) for line in lines if '"type":"event"' in line]
    assert len(events) == 4 and all(e["target_label"].startswith("keep") for e in events)
    assert all(e["inclusion"] for e in events)  # each with its audit path
    assert verify_export(lines).ok
    events[1]["target_label"] = "keep-edited"
    lines[2] = json.dumps(events[1])
    result = verify_export(lines)
    assert not result.ok and result.line_number == 3 and "not included" in result.problem


def test_csv_export(auditor: Client) -> None:
    append_events(3, label="=HYPERLINK")
    response = auditor.get("/audit/export.csv", {"text": "HYPERLINK"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(_body(response))))
    events = [r for r in rows if r["record"] == "event"]
    assert len(events) == 3
    assert all(r["leaf_index"].isdigit() for r in events)
    # Spreadsheet formulas are neutralised.
    assert all(r["target_label"].startswith("'=HYPERLINK") for r in events)
    assert rows[-1]["record"] == "tree_head" and '"signature"' in rows[-1]["details"]


def test_unknown_export_format_is_404(auditor: Client) -> None:
    assert auditor.get("/audit/export.xml").status_code == 404


def test_export_verifies_with_the_offline_cli(auditor: Client, tmp_path) -> None:
    """The README's promise: an outsider checks an export with `python -m kmsclient`."""
    import subprocess
    import sys
    from pathlib import Path

    from audit.models import AuditSigningKey

    append_events(5)
    audit_checkpoint_create()
    export = tmp_path / "audit.jsonl"
    export.write_text(_body(auditor.get("/audit/export.jsonl")))
    public_key = tmp_path / "audit-public.pem"
    public_key.write_text(AuditSigningKey.objects.get().public_key_pem)
    root = Path(__file__).resolve().parents[2]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "kmsclient", "audit-verify", *args],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=60,
        )

    result = cli("--public-key", str(public_key), str(export))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK:")

    lines = export.read_text().splitlines()
    lines[2] = lines[2].replace('"outcome":"success"', '"outcome":"denied"')
    export.write_text("\n".join(lines) + "\n")
    result = cli(str(export))
    assert result.returncode == 1
    assert "TAMPERED:" in result.stderr and "signed root" in result.stderr


def test_filter_by_an_event_type_of_another_app(auditor: Client) -> None:
    from vault.services import symmetric_key_create

    symmetric_key_create(actor=None, name="filtered-key")
    page = auditor.get("/audit/", {"action": "key.created"})
    assert page.status_code == 200
    events = page.context["page"].events
    assert [e.target_label for e in events] == ["filtered-key"]
    assert b"Key created" in page.content  # the registered label, not the raw value


def test_target_type_filter_takes_labels_and_from_after_until_is_an_error(auditor: Client) -> None:
    page = auditor.get("/audit/")
    assert b'<option value="pki.Certificate">Certificate</option>' in page.content
    assert b'type="datetime-local"' not in page.content  # UTC text, not a local AM/PM picker
    typed = auditor.get("/audit/", {"target_type": "certificate authority"})
    assert typed.status_code == 200
    assert typed.context["form"].cleaned_data["target_type"] == "pki.CertificateAuthority"
    swapped = auditor.get("/audit/", {"since": "2026-12-02T00:00Z", "until": "2026-12-01T00:00Z"})
    assert swapped.status_code == 400
    assert b"Until is before From" in swapped.content


def test_previous_and_next_follow_the_numbers_that_exist(auditor: Client) -> None:
    """Event numbers are not gap-free (on PostgreSQL a rolled-back action leaves a hole in
    the sequence): the links lead to the neighbours that exist, and the newest has no Next."""
    first, _ = append_events(2)
    with pytest.raises(RuntimeError), transaction.atomic():
        append_events(1)
        raise RuntimeError("the action fails: its event rolls back with it")
    (last,) = append_events(1)
    numbers = list(AuditEvent.objects.order_by("sequence").values_list("sequence", flat=True))
    position = numbers.index(last.sequence)
    page = auditor.get(f"/audit/events/{last.sequence}/").content.decode()
    assert f'href="/audit/events/{numbers[position - 1]}/">Previous event' in page
    assert "Next event" not in page
    page = auditor.get(f"/audit/events/{first.sequence}/").content.decode()
    following = numbers[numbers.index(first.sequence) + 1]
    assert f'href="/audit/events/{following}/">Next event' in page
