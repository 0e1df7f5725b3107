"""The admin API's authorization matrix: every operation of /api/v1/openapi.json, as every
role (and as a user with none), with both token scopes, over HTTP through the whole
middleware stack, checked against the declarative table (adminapi.permissions: each router's
RULES). An operation missing from the table, or one the table and the code disagree about,
fails here; so does any 401 for a live token, any 5xx, and any error that is not a problem
document.

A new router adds, here, a sample object for each new path parameter (``matrix_objects``) and
a valid body for each operation that takes one (``BODIES``).

Requests carry valid bodies (a body is validated before the permission check: a refused
caller learns only what the public OpenAPI document says), so a permitted caller reaches the service (which may then refuse
with 404/409/400 as the objects' states say; the matrix only asks whether the permission
check let it through). Rules are evaluated against the roles' group permissions as the
migrations grant them, not through the code under test.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from accounts.roles import Role
from adminapi.permissions import Rule, operation_rules
from kmsportal.two_person import two_person_kind

from .conftest import bearer

ROLES: dict[str, Role | None] = {
    "administrator": Role.ADMINISTRATOR,
    "key_custodian": Role.KEY_CUSTODIAN,
    "ca_operator": Role.CA_OPERATOR,
    "auditor": Role.AUDITOR,
    "no_role": None,
}
SCOPES = ("read-only", "roles")
SAMPLE_KIND = "destruction"  # the approvals' {kind} in the sample paths
REFUSAL_CODES = {"permission_denied", "read_only_token"}

# A valid body for each operation that takes one (others: none). Extra routers add theirs in
# EXTRA_BODIES of their own test module or here.
BODIES: dict[str, dict[str, Any]] = {
    "keys_create": {"name": "mx-new-{actor}"},
    "keys_rotate": {},
    "keys_compromise": {"scope": "version", "version": 1, "reason": "matrix"},
    "keys_destruction_request": {"waiting_days": 7, "reason": "matrix"},
    "keys_export_policy": {"policy": "never", "reason": "matrix"},
    "keys_import_parameters": {"name": "mx-import", "key_size": 3072},
    "keys_import": {"name": "mx-import", "import_token": "x", "wrapped_key": "AAAA"},
    "clients_create": {"name": "mx-client-{actor}"},
    "clients_revoke": {"reason": "cessationOfOperation"},
    "clients_enrollment_token": {"reason": "matrix"},
    "grants_create": {"key": "mx-key", "operations": ["encrypt"], "reason": "matrix"},
    "approvals_reject": {"comment": "matrix"},
    "users_create": {"username": "mx-user-{actor}", "roles": ["auditor"]},
    "users_roles_set": {"roles": ["auditor"], "reason": "matrix"},
    # PKI: permitted callers reach the service, which refuses the sample objects (no such CA
    # or certificate: 404/409) without generating a key; CA creation makes an EC root.
    "pki_ca_create": {"name": "mx-ca-{actor}", "subject": "CN=mx {actor}", "key_type": "ecp256"},
    "pki_ca_disable": {"reason": "matrix"},
    "pki_ca_revocation_request": {"reason": "superseded", "comment": "retired"},
    "pki_certificate_issue_csr": {"ca": "mx-none", "profile": "tls-server", "csr_pem": "x"},
    "pki_certificate_issue_generated": {
        "ca": "mx-none",
        "profile": "tls-server",
        "subject": "CN=mx",
        "password": "matrix-password",
    },
    "pki_certificate_revoke": {"reason": "superseded"},
    "pki_certificate_revoke_preview": {"reason": "superseded"},
    "pki_certificate_issue_preview": {"ca": "mx-none", "profile": "tls-server", "csr_pem": "x"},
    "pki_ca_preview": {"name": "mx-preview", "subject": "CN=mx", "key_type": "ecp256"},
    "pki_certificate_validate": {"certificate_pem": "x"},
}


def group_permissions(role: Role | None) -> set[str]:
    if role is None:
        return set()
    group = Group.objects.get(name=role.value)
    return {
        f"{app}.{codename}"
        for app, codename in group.permissions.values_list("content_type__app_label", "codename")
    }


def forbidden(rule: Rule, held: set[str], scope: str) -> bool:
    """What the table says: is this caller refused?"""
    if rule.write and scope == "read-only":
        return True
    needed = set(rule.permissions)
    if rule.kind:
        kind = two_person_kind(SAMPLE_KIND)
        assert kind is not None
        needed.add(getattr(kind, rule.kind))
    if not needed <= held:
        return True
    return bool(rule.any_of) and not set(rule.any_of) & held


def operations(client: Client) -> list[tuple[str, str, str]]:
    document = client.get("/api/v1/openapi.json").json()
    return [
        (method.upper(), path, spec["operationId"])
        for path, item in document["paths"].items()
        for method, spec in item.items()
    ]


@pytest.fixture
def matrix_objects(make_user) -> dict[str, str]:
    """The objects the sample paths name."""
    from vault import clients, services

    custodian = make_user("mx-requester", Role.KEY_CUSTODIAN)
    services.symmetric_key_create(actor=None, name="mx-key")
    doomed = services.symmetric_key_create(actor=None, name="mx-doomed")
    destruction = services.destruction_request_create(
        actor=custodian, key=doomed, waiting_days=7, reason="matrix"
    )
    client, _token = clients.client_create(actor=None, name="mx-client")
    key = services.symmetric_key_create(actor=None, name="mx-granted")
    grant = clients.grant_create(actor=None, client=client, key=key, operations="encrypt")
    target = make_user("mx-target", Role.AUDITOR)
    return {
        "name": "mx-key",
        "grant_id": str(grant.pk),
        "user_id": str(target.pk),
        "kind": SAMPLE_KIND,
        "request_id": str(destruction.pk),
        "token_id": "999999999",  # nobody's: a caller's own token is not revoked mid-matrix
        "certificate_id": "999999999",  # no such certificate: 404 once let through
        "encoding": "pem",
        "sequence": "1",
    }


def _path(template: str, operation_id: str, objects: dict[str, str]) -> str:
    values = dict(objects)
    if operation_id.startswith(("clients_", "grants_")):
        values["name"] = "mx-client"

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            pytest.fail(f"{operation_id}: add a sample for {{{match.group(1)}}} to matrix_objects")
        return values[match.group(1)]

    return re.sub(r"\{(\w+)\}", value, template)


def test_every_operation_is_declared_once(client) -> None:
    rules = operation_rules()
    ids = [operation_id for _m, _p, operation_id in operations(client)]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    assert set(ids) == set(rules), (
        f"undeclared: {sorted(set(ids) - set(rules))}; stale: {sorted(set(rules) - set(ids))}"
    )
    for method, path, operation_id in operations(client):
        # Reads are GET (so the read-only scope, refused for any other method, can read).
        assert rules[operation_id].write == (method != "GET"), (operation_id, method, path)


@pytest.mark.parametrize("actor", list(ROLES))
def test_authorization_matrix(actor: str, make_user, matrix_objects, client) -> None:
    role = ROLES[actor]
    user = make_user(f"mx-{actor}", role) if role else User.objects.create_user("mx-no_role")
    held = group_permissions(role)
    rules = operation_rules()
    callers = {scope: bearer(user, scope) for scope in SCOPES}
    mismatches = []
    for method, template, operation_id in operations(client):
        rule = rules[operation_id]
        path = _path(template, operation_id, matrix_objects)
        for scope, caller in callers.items():
            body = {
                k: (v.format(actor=actor.replace("_", "-")) if isinstance(v, str) else v)
                for k, v in BODIES.get(operation_id, {}).items()
            }
            if method == "GET":
                response = caller.get(path)
            else:
                response = caller.generic(
                    method,
                    path,
                    data=json.dumps(body),
                    content_type="application/json",
                )
            status = response.status_code
            assert status != 401, (operation_id, scope, response.content)
            assert status < 500, (operation_id, scope, response.content)
            if status >= 400:
                assert response["Content-Type"] == "application/problem+json", operation_id
            refused = status == 403 and response.json()["code"] in REFUSAL_CODES
            if refused != forbidden(rule, held, scope):
                mismatches.append(
                    f"{operation_id} {scope}: {'refused' if refused else 'let through'} "
                    f"({status} {response.content[:400]!r})"
                )
    assert mismatches == []


# Independent of both the table and the groups: what the roles table in the README says.
SPOT_CHECKS = {
    # operation: roles that may call it (with a "roles" token)
    "keys_list": {"administrator", "key_custodian", "auditor"},
    "keys_create": {"key_custodian"},
    "keys_rotate": {"key_custodian"},
    "grants_create": {"key_custodian"},
    "users_create": {"administrator"},
    "users_list": {"administrator", "auditor"},
    "clients_list": {"administrator", "key_custodian", "auditor"},
}


def test_the_table_says_what_the_roles_table_says(db) -> None:
    rules = operation_rules()
    for operation_id, allowed in SPOT_CHECKS.items():
        for actor, role in ROLES.items():
            expected = actor in allowed
            assert forbidden(rules[operation_id], group_permissions(role), "roles") != expected, (
                operation_id,
                actor,
            )


def test_key_actions_need_what_the_portal_pages_need() -> None:
    """Parity with the portal's own table of key actions (vault.views.ACTIONS)."""
    from vault.views import ACTIONS, EXPORT_POLICY, VERIFY

    rules = operation_rules()
    pairs = {
        "keys_activate": "activate",
        "keys_rotate": "rotate",
        "keys_suspend": "suspend",
        "keys_resume": "resume",
        "keys_deactivate": "deactivate",
        "keys_compromise": "compromise",
        "keys_destruction_request": "destroy",
        "keys_destruction_cancel": "cancel-destruction",
    }
    for operation_id, slug in pairs.items():
        assert rules[operation_id].permissions == (ACTIONS[slug].permission,), operation_id
    assert rules["keys_verify"].permissions == (VERIFY.permission,)
    assert rules["keys_export_policy"].permissions == (EXPORT_POLICY.permission,)
