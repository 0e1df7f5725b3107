from django.apps import AppConfig


class PkiConfig(AppConfig):
    name = "pki"
    default_auto_field = "django.db.models.BigAutoField"
