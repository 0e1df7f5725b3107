from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .models import AuditAction
        from .registry import audit_actions_register

        audit_actions_register(AuditAction)
        from kmsportal.keyring.services import sealed_field_register

        # The checkpoint signing key is sealed under the master keyring: rewrap re-seals it
        # and start-up refuses to drop a master key id that still seals it.
        sealed_field_register("audit.AuditSigningKey", "sealed_private_key", lambda row: row.aad)
