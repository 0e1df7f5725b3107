from django.apps import AppConfig


class KeyringConfig(AppConfig):
    name = "kmsportal.keyring"
    label = "keyring"
    verbose_name = "Master keyring"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Its audit event types (events.KeyringAction) and the recorder it reports them to are
        # connected by the audit app, which sits above it.
        # Registers the start-up checks (run by migrate, runserver, check and wsgi.py).
        from kmsportal import checks  # noqa: F401
