"""Navigation entries the signed-in user may use, decided by permissions on the server."""

from __future__ import annotations

from django.http import HttpRequest
from django.urls import reverse

from accounts.mfa import MfaSessionState
from accounts.roles import user_roles

MFA_PENDING = (MfaSessionState.PENDING_VERIFY, MfaSessionState.PENDING_ENROLL)

# (label, url name, permission needed or None for every signed-in user). Later apps add
# their entries here; the template shows only what the user's permissions allow.
NAVIGATION: list[tuple[str, str, str | tuple[str, ...] | None]] = [
    ("Dashboard", "portal:dashboard", None),
    ("Users", "accounts:user_list", "auth.view_user"),
    ("Keys", "vault:key_list", "vault.view_symmetrickey"),
    ("Clients", "clients:list", "vault.view_client"),
    # Every two-person request (kmsportal.two_person): in the menu of whoever may decide one
    # kind of them (auditors read the inbox at /approvals/ too).
    (
        "Approvals",
        "approvals:inbox",
        (
            "vault.destroy_symmetrickey",
            "vault.add_grant",
            "pki.revoke_certificate",
            "auth.change_user",
        ),
    ),
    ("Certificate authorities", "pki:ca_list", "pki.view_certificateauthority"),
    ("Certificates", "pki:certificate_list", "pki.view_certificate"),
    ("Validate", "pki:validate", "pki.view_certificate"),
    ("Audit log", "audit:event_list", "audit.view_auditevent"),
]


def navigation(request: HttpRequest) -> dict[str, object]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"nav_items": [], "nav_roles": []}
    if getattr(request, "mfa_state", None) in MFA_PENDING:
        # Past the password only: nothing to navigate to before the second factor.
        return {"nav_items": [], "nav_roles": []}
    items = [
        {"label": label, "url": reverse(name), "active": request.path == reverse(name)}
        for label, name, permission in NAVIGATION
        if permission is None
        or (
            any(user.has_perm(p) for p in permission)
            if isinstance(permission, tuple)
            else user.has_perm(permission)
        )
    ]
    return {"nav_items": items, "nav_roles": [role.label for role in user_roles(user)]}
