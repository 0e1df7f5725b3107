"""Audit event types of the admin REST API and its personal tokens (docs/admin-api.md)."""

from django.db import models


class ApiAction(models.TextChoices):
    TOKEN_CREATED = "api.token_created", "Personal API token created"
    TOKEN_REVOKED = "api.token_revoked", "Personal API token revoked"
    # One per call that may change something, and at most one per token and minute for
    # reads (adminapi.auth): an authenticated caller, never unauthenticated garbage.
    TOKEN_USED = "api.token_used", "Personal API token used"
