"""What the database remembers about master keys: never the key, only its check value."""

from django.db import models


class MasterKeyRecord(models.Model):
    """A master key id seen by this deployment, with its key check value.

    The check value (HMAC-SHA256 of a fixed label under the key, truncated) lets start-up
    refuse a wrong key for a known id before anything tries to unseal with it.
    """

    key_id = models.CharField(max_length=32, unique=True)
    check_value = models.CharField(max_length=64)
    first_seen_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["first_seen_at"]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return self.key_id
