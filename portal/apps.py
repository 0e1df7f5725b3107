from django.apps import AppConfig


class PortalConfig(AppConfig):
    """The portal shell: the pieces that look across apps (dashboard, navigation, template
    filters, public-URL warnings, the commands that set up or re-address a deployment).
    It is the top layer: it imports accounts, audit, vault and pki; none of them imports it
    (import-linter contracts in pyproject.toml keep it so)."""

    name = "portal"
    verbose_name = "Portal shell"
    default_auto_field = "django.db.models.BigAutoField"
