from django.apps import AppConfig


class VaultConfig(AppConfig):
    name = "vault"
    verbose_name = "Vault"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit.registry import audit_actions_register

        from .events import VaultAction

        audit_actions_register(VaultAction)
        from . import approval_kinds

        approval_kinds.register()  # the shared two-person inbox and confirmation pages
        from kmsportal.keyring.services import sealed_field_register

        # Key material: rewrap re-seals it; start-up refuses to drop a master key sealing it.
        sealed_field_register("vault.KeyVersion", "sealed_material", lambda row: row.aad)
        sealed_field_register("vault.ServerIdentity", "sealed_private_key", lambda row: row.aad)
