"""Authorization matrix: every URL pattern, requested as anonymous and as each role.

One table below says, for each route pattern of the project, which concrete path stands
for it and what status GET (and POST, where the view takes one) answers for anonymous and
for a user holding exactly one role. A pattern missing from the table fails
`test_table_covers_every_url_pattern`, so a new view cannot ship unchecked.

POSTs carry an empty body, and the sample objects are chosen so that an allowed role's
POST changes nothing (a form error, or an action the object's state refuses): roles with
the permission get 400 (form errors) or 302 (back to the page with an error message),
roles without it get 403 and anonymous visitors are sent to sign-in. (A one-time download
already spent answers 410 Gone.)
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts import services as account_services
from accounts.roles import Role
from tests.factories import mfa_enroll, password_sign_in

ACTORS = ("anon", "administrator", "key_custodian", "ca_operator", "auditor")
ROLE_OF = {
    "administrator": Role.ADMINISTRATOR,
    "key_custodian": Role.KEY_CUSTODIAN,
    "ca_operator": Role.CA_OPERATOR,
    "auditor": Role.AUDITOR,
}

PORTAL = "portal"  # sign-in required, then a permission
PUBLIC = "public"  # no sign-in: PKI distribution points, OCSP, the client API, /healthz
SIGN_IN = "sign-in"  # the sign-in and sign-out pages themselves
SKIP = "skip"  # POST taken but not sent here: real credentials are tested elsewhere

Statuses = tuple[int, int, int, int, int]  # in ACTORS order


class Route(NamedTuple):
    sample: str  # a concrete path; {placeholders} are filled from the objects made below
    kind: str
    get: Statuses
    post: Statuses | str | None = None  # None: the view takes no POST


# fmt: off
TABLE: dict[str, Route] = {
    # route pattern: Route(sample, kind, GET, POST)       anon adm  cust  caop  aud
    # --- accounts ----------------------------------------------------------------------
    "/": Route("/", PORTAL,                              (302, 200, 200, 200, 200)),
    "/accounts/login/": Route("/accounts/login/", SIGN_IN, (200, 302, 302, 302, 302), SKIP),
    "/accounts/logout/": Route("/accounts/logout/", SIGN_IN, (405, 405, 405, 405, 405), SKIP),
    "/accounts/password/": Route(
        "/accounts/password/", PORTAL,                   (302, 200, 200, 200, 200),
                                                         (302, 200, 200, 200, 200)),
    # multi-factor pages (the matrix's sessions have passed the second factor; the auditor
    # needs none and has no authenticator). Verify: nothing left to verify, back to `next`.
    "/accounts/mfa/verify/": Route(
        "/accounts/mfa/verify/", PORTAL,                 (302, 302, 302, 302, 302),
                                                         (302, 302, 302, 302, 302)),
    # enrolled users are sent to their MFA page; the auditor may enrol (an empty code: 400)
    "/accounts/mfa/enroll/": Route(
        "/accounts/mfa/enroll/", PORTAL,                 (302, 302, 302, 302, 200),
                                                         (302, 302, 302, 302, 400)),
    # new recovery codes need a code: the empty form is refused
    "/accounts/mfa/": Route(
        "/accounts/mfa/", PORTAL,                        (302, 200, 200, 200, 200),
                                                         (302, 400, 400, 400, 400)),
    "/users/": Route("/users/", PORTAL,                  (302, 200, 403, 403, 200)),
    "/users/new/": Route(
        "/users/new/", PORTAL,                           (302, 200, 403, 403, 403),
                                                         (302, 400, 403, 403, 403)),
    "/users/<int:pk>/": Route("/users/{target}/", PORTAL, (302, 200, 403, 403, 200)),
    "/users/<int:pk>/roles/": Route(
        "/users/{target}/roles/", PORTAL,                (302, 405, 403, 403, 403),
                                                         (302, 302, 403, 403, 403)),
    # an already inactive user: deactivating again is refused with a message
    "/users/<int:pk>/deactivate/": Route(
        "/users/{inactive}/deactivate/", PORTAL,         (302, 200, 403, 403, 403),
                                                         (302, 302, 403, 403, 403)),
    # an active user: reactivating is refused with a message
    "/users/<int:pk>/reactivate/": Route(
        "/users/{target}/reactivate/", PORTAL,           (302, 405, 403, 403, 403),
                                                         (302, 302, 403, 403, 403)),
    # POST replaces the password with a new invitation link and redirects to the page showing
    # it once: the target's password stops working; nothing the matrix compares changes
    "/users/<int:pk>/password/": Route(
        "/users/{target}/password/", PORTAL,             (302, 200, 403, 403, 403),
                                                         (302, 302, 403, 403, 403)),
    # the one-time invitation link page of a user with no link waiting (the reset above made
    # one for the target): 410 and how to get a new one
    "/users/<int:pk>/invitation/": Route(
        "/users/{inactive}/invitation/", PORTAL,         (302, 410, 403, 403, 403)),
    # an invitation link needs no sign-in; an unknown token is 404 for everyone
    "/accounts/invitation/": Route(
        "/accounts/invitation/", SIGN_IN,                (404, 404, 404, 404, 404),
                                                         (404, 404, 404, 404, 404)),
    # --- personal API tokens (issue 17): making one needs a session that passed the second
    # factor (the auditor has no authenticator: 403); an empty form is refused
    "/accounts/api-tokens/": Route(
        "/accounts/api-tokens/", PORTAL,                 (302, 200, 200, 200, 200),
                                                         (302, 400, 400, 400, 403)),
    # nobody's token: shown once to its own user only
    "/accounts/api-tokens/<int:pk>/created/": Route(
        "/accounts/api-tokens/999999/created/", PORTAL,  (302, 404, 404, 404, 404)),
    # no token named: refused with a message
    "/accounts/api-tokens/revoke/": Route(
        "/accounts/api-tokens/revoke/", PORTAL,          (302, 405, 405, 405, 405),
                                                         (302, 302, 302, 302, 302)),
    # --- two-person requests (one inbox, one confirmation page per request) -----------
    "/approvals/": Route("/approvals/", PORTAL,          (302, 200, 200, 200, 200)),
    # a withdrawn destruction request: its page shows it; a POST without a decision is
    # refused with a message (custodians) or 403 (no permission to decide)
    "/approvals/<slug:slug>/<int:pk>/": Route(
        "/approvals/destruction/{destruction}/", PORTAL, (302, 200, 200, 403, 200),
                                                         (302, 403, 302, 403, 403)),
    # a user without an authenticator: resetting is refused with a message
    "/users/<int:pk>/mfa/reset/": Route(
        "/users/{target}/mfa/reset/", PORTAL,            (302, 200, 403, 403, 403),
                                                         (302, 302, 403, 403, 403)),
    # --- audit -------------------------------------------------------------------------
    "/audit/": Route("/audit/", PORTAL,                  (302, 200, 403, 403, 200)),
    "/audit/events/<int:sequence>/": Route(
        "/audit/events/{seq}/", PORTAL,                  (302, 200, 403, 403, 200)),
    "/audit/chain/": Route("/audit/chain/", PORTAL,      (302, 200, 403, 403, 200)),
    # the newest signed tree head (404 while none is signed: the matrix's log has none)
    "/audit/chain/head.json": Route(
        "/audit/chain/head.json", PORTAL,                (302, 404, 403, 403, 404)),
    # verifying reads the chain and records that it did (README: auditors verify the log)
    "/audit/chain/verify/": Route(
        "/audit/chain/verify/", PORTAL,                  (302, 405, 403, 403, 405),
                                                         (302, 302, 403, 403, 302)),
    "/audit/export.<str:fmt>": Route("/audit/export.csv", PORTAL, (302, 200, 403, 403, 200)),
    # --- vault: keys -------------------------------------------------------------------
    "/keys/": Route("/keys/", PORTAL,                    (302, 200, 200, 403, 200)),
    "/keys/new/": Route(
        "/keys/new/", PORTAL,                            (302, 403, 200, 403, 403),
                                                         (302, 403, 400, 403, 403)),
    "/keys/approvals/": Route("/keys/approvals/", PORTAL, (302, 200, 200, 403, 200)),
    # bring your own key: the empty forms are refused
    "/keys/import/": Route(
        "/keys/import/", PORTAL,                         (302, 403, 200, 403, 403),
                                                         (302, 403, 400, 403, 403)),
    "/keys/import/upload/": Route(
        "/keys/import/upload/", PORTAL,                  (302, 403, 200, 403, 403),
                                                         (302, 403, 400, 403, 403)),
    # "approve" only leads to the confirmation page (/approvals/destruction/<pk>/)
    "/keys/approvals/<int:pk>/<str:decision>/": Route(
        "/keys/approvals/{destruction}/approve/", PORTAL, (302, 403, 405, 403, 403),
                                                         (302, 403, 302, 403, 403)),
    "/keys/<str:name>/": Route("/keys/matrix-key/", PORTAL, (302, 200, 200, 403, 200)),
    # "destroy" needs a waiting period: the empty form is refused
    "/keys/<str:name>/<str:slug>/": Route(
        "/keys/matrix-key/destroy/", PORTAL,             (302, 403, 200, 403, 403),
                                                         (302, 403, 400, 403, 403)),
    # --- vault: clients ----------------------------------------------------------------
    "/clients/": Route("/clients/", PORTAL,              (302, 200, 200, 403, 200)),
    "/clients/new/": Route(
        "/clients/new/", PORTAL,                         (302, 403, 200, 403, 403),
                                                         (302, 403, 400, 403, 403)),
    "/clients/<str:name>/": Route("/clients/matrix-client/", PORTAL, (302, 200, 200, 403, 200)),
    "/clients/<str:name>/grants/": Route(
        "/clients/matrix-client/grants/", PORTAL,        (302, 403, 405, 403, 403),
                                                         (302, 403, 400, 403, 403)),
    # an already withdrawn grant: withdrawing again is refused with a message
    "/clients/<str:name>/grants/<int:pk>/withdraw/": Route(
        "/clients/matrix-client/grants/{grant}/withdraw/", PORTAL, (302, 403, 405, 403, 403),
                                                         (302, 403, 302, 403, 403)),
    # an active client: resuming is refused with a message
    # the one-time token page, with no token waiting: 410 and how to get a new one
    "/clients/<str:name>/enrollment-token/": Route(
        "/clients/matrix-client/enrollment-token/", PORTAL, (302, 403, 410, 403, 403)),
    "/clients/<str:name>/<str:action>/": Route(
        "/clients/matrix-client/resume/", PORTAL,        (302, 403, 200, 403, 403),
                                                         (302, 403, 302, 403, 403)),
    # --- client API (signature authentication, no session) -----------------------------
    # (an empty POST is not application/json: 415, a problem document like every answer)
    "/api/v1/enroll": Route(
        "/api/v1/enroll", PUBLIC,                        (405, 405, 405, 405, 405),
                                                         (415, 415, 415, 415, 415)),
    "/api/v1/keys/fetch": Route(
        "/api/v1/keys/fetch", PUBLIC,                    (405, 405, 405, 405, 405),
                                                         (415, 415, 415, 415, 415)),
    # the operations API (issue 17): a signed session request, then sealed requests in it
    "/api/v1/session": Route(
        "/api/v1/session", PUBLIC,                       (405, 405, 405, 405, 405),
                                                         (415, 415, 415, 415, 415)),
    "/api/v1/session/ping": Route(
        "/api/v1/session/ping", PUBLIC,                  (405, 405, 405, 405, 405),
                                                         (415, 415, 415, 415, 415)),
    "/api/v1/keys/<operation:operation>": Route(
        "/api/v1/keys/encrypt", PUBLIC,                  (405, 405, 405, 405, 405),
                                                         (415, 415, 415, 415, 415)),
    "/api/v1/": Route("/api/v1/", PUBLIC,           (404, 404, 404, 404, 404)),
    "/api/v1/<path:rest>": Route(
        "/api/v1/no-such-endpoint", PUBLIC,              (404, 404, 404, 404, 404)),
    # --- pki ---------------------------------------------------------------------------
    "/pki/": Route("/pki/", PORTAL,                      (302, 200, 403, 200, 200)),
    "/pki/cas/new/": Route(
        "/pki/cas/new/", PORTAL,                         (302, 200, 403, 403, 403),
                                                         (302, 400, 403, 403, 403)),
    "/pki/cas/<slug:name>/": Route("/pki/cas/kms-clients/", PORTAL, (302, 200, 403, 200, 200)),
    # an already disabled CA (the reason is optional, so an active one would be disabled)
    "/pki/cas/<slug:name>/disable/": Route(
        "/pki/cas/matrix-retired/disable/", PORTAL,      (302, 200, 403, 403, 403),
                                                         (302, 400, 403, 403, 403)),
    "/pki/cas/<slug:name>/chain.pem": Route(
        "/pki/cas/kms-clients/chain.pem", PORTAL,        (302, 200, 403, 200, 200)),
    "/pki/cas/<slug:name>/crl/": Route(
        "/pki/cas/kms-clients/crl/", PORTAL,             (302, 200, 403, 200, 200)),
    # publishing takes no input: the CA operator's POST publishes a fresh CRL (harmless)
    "/pki/cas/<slug:name>/crl/publish/": Route(
        "/pki/cas/kms-clients/crl/publish/", PORTAL,     (302, 403, 403, 405, 403),
                                                         (302, 403, 403, 302, 403)),
    "/pki/ca/<slug:name>.crt": Route("/pki/ca/kms-clients.crt", PUBLIC, (200, 200, 200, 200, 200)),
    "/pki/ca/<slug:name>.pem": Route("/pki/ca/kms-clients.pem", PUBLIC, (200, 200, 200, 200, 200)),
    # --- expiry notifications (issue 18): CA operators and administrators manage watchers
    "/notifications/watchers/": Route(
        "/notifications/watchers/", PORTAL,              (302, 200, 403, 200, 403),
                                                         (302, 400, 403, 400, 403)),
    "/notifications/watchers/<int:pk>/delete/": Route(
        "/notifications/watchers/{watcher}/delete/", PORTAL, (302, 405, 403, 405, 403),
                                                         (302, 400, 403, 400, 403)),
    "/pki/crl/<slug:name>-delta.crl": Route("/pki/crl/kms-clients-delta.crl", PUBLIC, (200, 200, 200, 200, 200)),
    "/pki/crl/<slug:name>-delta.pem": Route("/pki/crl/kms-clients-delta.pem", PUBLIC, (200, 200, 200, 200, 200)),
    "/pki/crl/<slug:name>.crl": Route("/pki/crl/kms-clients.crl", PUBLIC, (200, 200, 200, 200, 200)),
    "/pki/crl/<slug:name>.pem": Route("/pki/crl/kms-clients.pem", PUBLIC, (200, 200, 200, 200, 200)),
    # OCSP answers a malformed request with an (unsigned) malformedRequest response, HTTP 200
    "/pki/ocsp/<slug:name>": Route(
        "/pki/ocsp/kms-clients", PUBLIC,                 (200, 200, 200, 200, 200),
                                                         (200, 200, 200, 200, 200)),
    "/pki/ocsp/<slug:name>/": Route(
        "/pki/ocsp/kms-clients/", PUBLIC,                (200, 200, 200, 200, 200),
                                                         (200, 200, 200, 200, 200)),
    "/pki/ocsp/<slug:name>/<path:encoded>": Route(
        "/pki/ocsp/kms-clients/AAAA", PUBLIC,            (200, 200, 200, 200, 200),
                                                         (200, 200, 200, 200, 200)),
    "/pki/certificates/": Route("/pki/certificates/", PORTAL, (302, 200, 403, 200, 200)),
    "/pki/certificates/<int:pk>/": Route(
        "/pki/certificates/{cert}/", PORTAL,             (302, 200, 403, 200, 200)),
    "/pki/certificates/<int:pk>/download/<str:encoding>/": Route(
        "/pki/certificates/{cert}/download/pem/", PORTAL, (302, 200, 403, 200, 200)),
    "/pki/certificates/<int:pk>/revoke/": Route(
        "/pki/certificates/{cert}/revoke/", PORTAL,      (302, 403, 403, 200, 403),
                                                         (302, 403, 403, 400, 403)),
    # a certificate not on hold: releasing is refused
    "/pki/certificates/<int:pk>/release/": Route(
        "/pki/certificates/{cert}/release/", PORTAL,     (302, 403, 403, 200, 403),
                                                         (302, 403, 403, 400, 403)),
    "/pki/revocations/": Route("/pki/revocations/", PORTAL, (302, 200, 403, 200, 200)),
    # "approve" only leads to the confirmation page (/approvals/ca-revocation/<pk>/)
    "/pki/revocations/<int:pk>/<str:decision>/": Route(
        "/pki/revocations/{ca_revocation}/approve/", PORTAL, (302, 403, 403, 405, 403),
                                                         (302, 403, 403, 302, 403)),
    "/pki/issue/": Route(
        "/pki/issue/", PORTAL,                           (302, 403, 403, 200, 403),
                                                         (302, 403, 403, 400, 403)),
    "/pki/issue/generated/": Route(
        "/pki/issue/generated/", PORTAL,                 (302, 403, 403, 200, 403),
                                                         (302, 403, 403, 400, 403)),
    # the matrix operator's own generated-key issuance, already downloaded: 410 Gone
    "/pki/issue/generated/<uuid:delivery_id>/": Route(
        "/pki/issue/generated/{delivery}/", PORTAL,      (302, 403, 403, 200, 403),
                                                         (302, 403, 403, 410, 403)),
    # validation reads only: every role that may read certificates may use it
    "/pki/validate/": Route(
        "/pki/validate/", PORTAL,                        (302, 200, 403, 200, 200),
                                                         (302, 400, 403, 400, 400)),
    # --- liveness ----------------------------------------------------------------------
    "/healthz": Route("/healthz", PUBLIC,                (200, 200, 200, 200, 200)),
    "/readyz": Route("/readyz", PUBLIC,                  (200, 200, 200, 200, 200)),
}
# fmt: on


def _walk(patterns: list, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver) and pattern.namespace == "adminapi":
            # The admin REST API (token authentication, no session): its own matrix, every
            # operation of openapi.json x role x token scope (tests/adminapi/).
            continue
        if isinstance(pattern, URLResolver):
            yield from _walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            assert isinstance(pattern, URLPattern)
            yield "/" + prefix + str(pattern.pattern), pattern


def _accepts_post(pattern: URLPattern) -> bool:
    view_class = getattr(pattern.callback, "view_class", None)
    if view_class is None:  # function views: only /healthz, which is GET/HEAD only
        return False
    return "post" in view_class.http_method_names and hasattr(view_class, "post")


def test_table_covers_every_url_pattern() -> None:
    patterns = dict(_walk(get_resolver().url_patterns))
    assert set(patterns) == set(TABLE), (
        f"missing from TABLE: {sorted(set(patterns) - set(TABLE))}; "
        f"stale in TABLE: {sorted(set(TABLE) - set(patterns))}"
    )
    for route, pattern in patterns.items():
        entry = TABLE[route]
        assert _accepts_post(pattern) == (entry.post is not None), (
            f"{route}: the table's POST column disagrees with the view"
        )
        if entry.kind == PUBLIC:  # no session may change a public answer
            for statuses in (entry.get, entry.post):
                if isinstance(statuses, tuple):
                    assert len(set(statuses)) == 1, f"{route}: public but role-dependent"
        if entry.kind == PORTAL:
            assert entry.get[0] == 302, f"{route}: anonymous must be sent to sign-in"
            if isinstance(entry.post, tuple):
                assert entry.post[0] == 302, f"{route}: anonymous POST must go to sign-in"
                for actor, get, post in zip(ACTORS, entry.get, entry.post, strict=True):
                    if get == 403:  # a role refused the page is refused its action too
                        assert post == 403, f"{route}: {actor} may POST but not GET"


@pytest.fixture
def matrix_objects(make_user) -> dict[str, int]:
    """The objects the sample paths name, in states where an empty POST changes nothing."""
    from audit.models import AuditEvent
    from pki import services as pki_services
    from pki.approvals import ca_revocation_request, ca_revocation_withdraw
    from pki.models import Certificate, CertificateAuthority
    from vault import clients, server_identity, services

    admin = make_user("matrix-administrator", Role.ADMINISTRATOR)
    custodian = make_user("matrix-key_custodian", Role.KEY_CUSTODIAN)
    for actor in ("ca_operator", "auditor"):
        make_user(f"matrix-{actor}", ROLE_OF[actor])
    target = make_user("matrix-target", Role.AUDITOR)
    inactive = make_user("matrix-inactive", Role.AUDITOR)
    account_services.user_deactivate(actor=admin, user=inactive)

    server_identity.distribution_bootstrap()
    retired = pki_services.certificate_authority_create(
        actor=None,
        name="matrix-retired",
        subject="CN=matrix retired CA",
        key_type=settings.KMS_IDENTITY_CA_KEY_TYPE,
    )
    pki_services.certificate_authority_disable(actor=None, ca=retired)

    key = services.symmetric_key_create(actor=None, name="matrix-key")
    doomed = services.symmetric_key_create(actor=None, name="matrix-doomed")
    destruction = services.destruction_request_create(
        actor=custodian, key=doomed, waiting_days=7, reason="retired"
    )
    services.destruction_request_reject(actor=custodian, request=destruction)  # withdrawn
    client, _token = clients.client_create(actor=None, name="matrix-client")
    grant = clients.grant_create(actor=None, client=client, key=key)
    clients.grant_withdraw(actor=None, grant=grant)

    certificate = Certificate.objects.first()
    assert certificate is not None
    # An intermediate whose revocation was asked for and withdrawn (two-person rule).
    matrix_sub = pki_services.certificate_authority_create(
        actor=None,
        name="matrix-sub",
        subject="CN=matrix sub CA",
        parent=CertificateAuthority.objects.get(name=settings.KMS_ROOT_CA_NAME),
        key_type="ecp256",
    )
    sub_certificate = Certificate.objects.get(
        ca=matrix_sub.parent, serial_hex=matrix_sub.serial_hex
    )
    operator = User.objects.get(username="matrix-ca_operator")
    ca_revocation = ca_revocation_request(
        actor=operator, certificate=sub_certificate, reason="superseded", comment="no longer needed"
    )
    ca_revocation_withdraw(actor=operator, request=ca_revocation)
    from notifications.services import watcher_add

    watcher = watcher_add(actor=admin, email="watch@example.org", scope="profile",
                          profile="tls-server")  # fmt: skip
    first_event = AuditEvent.objects.order_by("sequence").first()
    assert first_event is not None
    from pki.models import GeneratedKeyDelivery

    delivery = GeneratedKeyDelivery.objects.create(
        token_hash="0" * 64, requested_by=operator, certificate=certificate
    )
    return {
        "delivery": delivery.pk,
        "watcher": watcher.pk,
        "target": target.pk,
        "inactive": inactive.pk,
        "destruction": destruction.pk,
        "grant": grant.pk,
        "cert": certificate.pk,
        "ca_revocation": ca_revocation.pk,
        "seq": first_event.sequence,
    }


def _state() -> dict[str, object]:
    """What an empty POST must not change."""
    from pki.models import CARevocationRequest, Certificate, CertificateAuthority
    from vault.models import Client as KmsClient
    from vault.models import DestructionRequest, Grant, SymmetricKey

    return {
        "users": sorted(User.objects.values_list("username", "is_active")),
        "roles": sorted(User.groups.through.objects.values_list("user_id", "group_id")),
        "keys": sorted(SymmetricKey.objects.values_list("name", "state")),
        "destructions": sorted(DestructionRequest.objects.values_list("pk", "status")),
        "clients": sorted(KmsClient.objects.values_list("name", "state")),
        "grants": sorted(Grant.objects.values_list("pk", "withdrawn_at")),
        "cas": sorted(CertificateAuthority.objects.values_list("name", "state")),
        "certificates": sorted(Certificate.objects.values_list("pk", "status")),
        "ca_revocations": sorted(CARevocationRequest.objects.values_list("pk", "status")),
    }


@pytest.mark.django_db
@pytest.mark.parametrize("actor", ACTORS)
def test_authorization_matrix(actor: str, matrix_objects, signed_in) -> None:
    browser = (
        Client() if actor == "anon" else signed_in(User.objects.get(username=f"matrix-{actor}"))
    )
    column = ACTORS.index(actor)
    before = _state()
    seen: dict[tuple[str, str], int] = {}
    expected: dict[tuple[str, str], int] = {}
    for route, entry in TABLE.items():
        path = entry.sample.format(**matrix_objects)
        assert get_resolver().resolve(path).route == route.lstrip("/"), path
        for method, statuses in (("GET", entry.get), ("POST", entry.post)):
            if not isinstance(statuses, tuple):
                continue
            response = browser.get(path) if method == "GET" else browser.post(path, {})
            seen[route, method] = response.status_code
            expected[route, method] = statuses[column]
            if entry.kind == PORTAL and actor == "anon":
                assert response.status_code == 302, (method, path)
                assert response["Location"].startswith("/accounts/login/?next="), (method, path)
            if method == "POST" and entry.kind == PORTAL and actor != "anon":
                assert response.status_code in (200, 302, 400, 403, 410), (method, path)
    mismatches = {
        f"{method} {route}": f"expected {expected[route, method]}, got {status}"
        for (route, method), status in seen.items()
        if status != expected[route, method]
    }
    assert not mismatches, mismatches
    assert _state() == before, "an empty POST changed something"


# Pages a session that passed only the password may use (with sign-out, a SIGN_IN route).
MFA_PAGES = {"/accounts/mfa/verify/", "/accounts/mfa/enroll/"}


@pytest.mark.django_db
@pytest.mark.parametrize("enrolled", [False, True], ids=["no-authenticator", "authenticator"])
@pytest.mark.parametrize("actor", ["administrator", "key_custodian", "ca_operator"])
def test_password_only_session_reaches_no_portal_page(
    actor: str, enrolled: bool, matrix_objects
) -> None:
    """Every portal route, for a role that needs MFA, after the password but not the code:
    GET goes to the MFA page (enrollment while there is no authenticator) with `next`, any
    POST is refused, and nothing changes."""
    user = User.objects.get(username=f"matrix-{actor}")
    if enrolled:
        mfa_enroll(user)
    page = "/accounts/mfa/verify/" if enrolled else "/accounts/mfa/enroll/"
    browser = Client()
    assert password_sign_in(browser, user)["Location"] == f"{page}?next=%2F"
    before = _state()
    checked = 0
    for route, entry in TABLE.items():
        if entry.kind != PORTAL or route in MFA_PAGES:
            continue
        path = entry.sample.format(**matrix_objects)
        response = browser.get(path)
        assert response.status_code == 302, path
        assert response["Location"] == f"{page}?{urlencode({'next': path})}", path
        if isinstance(entry.post, tuple):
            assert browser.post(path, {}).status_code == 403, path
        checked += 1
    assert checked > 30
    assert _state() == before
    assert browser.get(page).status_code == 200
    for entry in TABLE.values():  # the public answers do not depend on the session
        if entry.kind == PUBLIC:
            path = entry.sample.format(**matrix_objects)
            assert browser.get(path).status_code == entry.get[0], path


@pytest.mark.django_db
def test_force_login_alone_does_not_reach_the_dashboard(matrix_objects) -> None:
    administrator = User.objects.get(username="matrix-administrator")
    browser = Client()
    browser.force_login(administrator)  # never went through the password and MFA forms
    response = browser.get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/mfa/enroll/?next=%2F"
    mfa_enroll(administrator)
    assert browser.get("/")["Location"] == "/accounts/mfa/verify/?next=%2F"
