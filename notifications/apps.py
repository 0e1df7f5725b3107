from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Expiry notifications"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit.registry import audit_actions_register

        from .events import NotificationAction

        audit_actions_register(NotificationAction)
