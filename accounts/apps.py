from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts and roles"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from audit.registry import audit_actions_register
        from kmsportal.keyring.services import sealed_field_register

        from . import checks  # noqa: F401  (registers the MFA settings check)
        from .events import AccountAction, MfaAction

        audit_actions_register(MfaAction)
        audit_actions_register(AccountAction)
        from . import approval_kinds

        approval_kinds.register()  # the shared two-person inbox and confirmation pages
        # TOTP secrets: rewrap re-seals them; start-up refuses to drop a master key id that
        # still seals one.
        sealed_field_register("accounts.MfaDevice", "sealed_secret", lambda row: row.aad)
