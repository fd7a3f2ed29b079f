"""The Django application holding the signing database's models and commands."""

from django.apps import AppConfig


class SigningConfig(AppConfig):
    """`debusine.signing`: keys, the audit log and the `debusine-signing` commands."""

    name = "debusine.signing"
    label = "signing"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Debusine signing"
