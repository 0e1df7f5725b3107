from django.apps import AppConfig


class AdminApiConfig(AppConfig):
    """The admin REST API (``/api/v1/admin/``) and the personal API tokens it accepts."""

    name = "adminapi"
    verbose_name = "Admin REST API"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit.registry import audit_actions_register

        from .events import ApiAction

        audit_actions_register(ApiAction)
