from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    verbose_name = "PKI"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.core.exceptions import ImproperlyConfigured

        from audit.registry import audit_actions_register
        from kmsportal.crypto.profiles import configure_tls_server_days

        # The tls-server profile's longest validity (KMS_TLS_SERVER_MAX_DAYS, default 200):
        # a value out of range refuses start-up, naming the setting.
        try:
            configure_tls_server_days(settings.KMS_TLS_SERVER_MAX_DAYS)
        except ValueError as exc:
            raise ImproperlyConfigured(f"KMS_TLS_SERVER_MAX_DAYS: {exc}") from None
        from kmsportal.keyring.services import SealedKind, sealed_field_register

        from .events import PkiAction

        # The PKI's audit event types (the recorder and the auditor's filter know them).
        audit_actions_register(PkiAction)
        from . import approval_kinds

        approval_kinds.register()  # the shared two-person inbox and confirmation pages

        # CA private keys: rewrap re-seals them; start-up refuses to drop a master key id
        # that still seals one.
        # keyring_migrate moves them into the PKCS#11 token.
        sealed_field_register(
            "pki.CertificateAuthority",
            "sealed_private_key",
            lambda row: row.aad,
            SealedKind.PRIVATE_KEY,
        )
        # Delegated OCSP responder keys, the same way.
        sealed_field_register(
            "pki.OCSPResponder", "sealed_private_key", lambda row: row.aad, SealedKind.PRIVATE_KEY
        )
        # Generated key pairs waiting for their one download (erased after it).
        sealed_field_register("pki.GeneratedKeyDelivery", "sealed_bundle", lambda row: row.aad)
