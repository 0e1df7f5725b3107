"""Constants and builders shared by tests."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importable before Django is set up (bench scripts, live-server helpers)
    from django.contrib.auth.models import AbstractBaseUser
    from django.test import Client

# The password every test user gets (never a real one; asserted absent from logs and audit).
TEST_PASSWORD = "correct horse battery staple 42"


def user_make(username: str, *roles: object, email: str = "") -> AbstractBaseUser:
    """A user as the portal makes one: created by the system with `roles`, who then set
    TEST_PASSWORD at their invitation link themselves. Roles that would wait for a second
    administrator (two or more exist) are applied directly: the fixture stands for a team
    set up earlier. No authenticator: `sign_in` or `mfa_enroll` add one."""
    from accounts import invitations, services
    from accounts.models import RoleGrantRequest

    created = services.user_create(
        actor=None, username=username, roles=list(roles), email=email, reason="test user"
    )
    if created.role_request is not None:
        RoleGrantRequest.objects.filter(pk=created.role_request.pk).delete()
        services._roles_add(created.user, list(roles), by="test")
    return invitations.invitation_accept(token=created.invitation_token, password=TEST_PASSWORD)


def approver_make(username: str, *roles: object) -> AbstractBaseUser:
    """A user who may approve two-person requests: own password and own authenticator."""
    user = user_make(username, *roles)
    mfa_enroll(user)
    return user


def totp_code(secret: bytes, step: int | None = None) -> str:
    """The 6-digit code an authenticator app holding `secret` shows at `step` (now if None)."""
    from kmsportal.crypto import otp

    return otp.totp_code(secret, otp.totp_step() if step is None else step)


def mfa_enroll(user: AbstractBaseUser) -> bytes:
    """Enrol and confirm an authenticator for `user` through the services; returns the secret.

    The confirmation uses the code of the step BEFORE the current one (the server accepts
    ±1 step), checked against the same instant, so the current and the next step are left
    for sign-ins: a step is accepted once per user.
    """
    import base64

    from accounts import mfa
    from kmsportal.crypto import otp

    provisioning = mfa.mfa_enrollment_begin(user=user)
    padding = "=" * (-len(provisioning.secret_base32) % 8)
    secret = base64.b32decode(provisioning.secret_base32 + padding)
    now = time.time()
    mfa.mfa_enrollment_confirm(
        user=user, code=otp.totp_code(secret, otp.totp_step(now) - 1), at=now
    )
    return secret


def mfa_secret(user: AbstractBaseUser) -> bytes | None:
    """The TOTP secret of the user's confirmed authenticator (unsealed), or None."""
    from accounts.models import MfaDevice
    from kmsportal.keyring.services import unseal

    device = MfaDevice.objects.filter(user_id=user.pk, confirmed_at__isnull=False).first()
    return None if device is None else unseal(device.sealed_secret, aad=device.aad)


def mfa_next_code(user: AbstractBaseUser) -> str:
    """A code the server will accept from `user` now: for the current step, or the next one
    if the current step was already used (each step is accepted once per user)."""
    from accounts.models import MfaDevice
    from kmsportal.crypto import otp

    secret = mfa_secret(user)
    assert secret is not None, f"{user.get_username()} has no confirmed authenticator"
    last_used = MfaDevice.objects.get(user_id=user.pk).last_used_step
    current = otp.totp_step()
    step = max(current, last_used + 1)
    if step > current + 1:
        raise AssertionError(
            f"{user.get_username()} already used the codes of this and the next 30-second "
            "step: a test signs the same MFA user in more than twice within one step; use "
            "another user or reuse the client"
        )
    return otp.totp_code(secret, step)


def password_sign_in(client: Client, user: AbstractBaseUser, **extra: object):
    """POST the sign-in form with TEST_PASSWORD (only the first step for MFA users)."""
    return client.post(
        "/accounts/login/", {"username": user.get_username(), "password": TEST_PASSWORD}, **extra
    )


def sign_in(user: AbstractBaseUser, client: Client | None = None, *, next_url: str = "/") -> Client:
    """A client signed in as `user` through the real pages: password, then (for users who need
    it) the authenticator code, enrolling one through the services first if there is none."""
    from django.test import Client

    from accounts import mfa

    client = client or Client()
    if mfa.mfa_required_for(user) and mfa_secret(user) is None:
        mfa_enroll(user)
    path = "/accounts/login/" if next_url == "/" else f"/accounts/login/?next={next_url}"
    response = client.post(path, {"username": user.get_username(), "password": TEST_PASSWORD})
    assert response.status_code == 302, f"sign-in of {user.get_username()} failed"
    if response["Location"].startswith("/accounts/mfa/"):
        assert response["Location"].startswith("/accounts/mfa/verify/"), response["Location"]
        response = client.post(
            "/accounts/mfa/verify/", {"code": mfa_next_code(user), "next": next_url}
        )
        assert response.status_code == 302, (
            f"MFA step of {user.get_username()} failed: {response.status_code}"
        )
    assert response["Location"] == next_url, response["Location"]
    return client
