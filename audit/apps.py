from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .models import AuditAction
        from .registry import audit_actions_register

        audit_actions_register(AuditAction)
        from kmsportal.keyring.events import KeyringAction, keyring_event_recorder_set
        from kmsportal.keyring.services import sealed_field_register

        from .services import audit_event_record

        # The keyring (below audit) reports rewrap and migration batches through this hook,
        # inside each batch's transaction.
        audit_actions_register(KeyringAction)
        keyring_event_recorder_set(audit_event_record)

        # The checkpoint signing key is sealed under the master keyring: rewrap re-seals it
        # and start-up refuses to drop a master key id that still seals it.
        sealed_field_register("audit.AuditSigningKey", "sealed_private_key", lambda row: row.aad)
        sealed_field_register("audit.AuditMacKey", "sealed_key", lambda row: row.aad)

        from django.db import connections
        from django.db.backends.signals import connection_created

        from .triggers import register_sqlite_function

        connection_created.connect(register_sqlite_function, dispatch_uid="audit_sqlite_triggers")
        for connection in connections.all(initialized_only=True):
            if connection.connection is not None:
                register_sqlite_function(None, connection)
