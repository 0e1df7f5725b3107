from django.apps import AppConfig


class KeyringConfig(AppConfig):
    name = "kmsportal.keyring"
    label = "keyring"
    verbose_name = "Master keyring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit.registry import audit_actions_register

        from .events import KeyringAction

        audit_actions_register(KeyringAction)
        # Registers the start-up checks (run by migrate, runserver, check and wsgi.py).
        from kmsportal import checks  # noqa: F401
