from django.apps import AppConfig


class ManufacturingConfig(AppConfig):
    name = "manufacturing"
    default_auto_field = "django.db.models.BigAutoField"
