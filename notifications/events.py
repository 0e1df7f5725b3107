"""Audit event types of the expiry notifications (listed in the README)."""

from django.db import models


class NotificationAction(models.TextChoices):
    WATCHER_ADDED = "notification.watcher_added", "Expiry watcher added"
    WATCHER_REMOVED = "notification.watcher_removed", "Expiry watcher removed"
    DIGEST_SENT = "notification.digest_sent", "Expiry digest sent"
