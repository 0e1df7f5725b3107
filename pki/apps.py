from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "PKI"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from kmsportal.keyring.services import sealed_field_register

        # CA private keys: rewrap re-seals them; start-up refuses to drop a master key id
        # that still seals one.
        sealed_field_register("pki.CertificateAuthority", "sealed_private_key", lambda row: row.aad)
