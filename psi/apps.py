from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _forget_permission_ids(**_):
    # Permission rows are recreated by flush + migrate (tests); drop cached ids.
    from psi.permissions import _permission_id

    _permission_id.cache_clear()


class PsiConfig(AppConfig):
    name = "psi"
    verbose_name = "PSI core"
    default_auto_field = "django.db.models.BigAutoField"

    role_permissions = {
        "auditor": ["psi.view_auditevent", "psi.verify_auditevent"],
        "quality_assurance": ["psi.view_auditevent", "psi.verify_auditevent"],
        "regulatory": ["psi.view_auditevent"],
    }

    def ready(self) -> None:
        post_migrate.connect(_forget_permission_ids, dispatch_uid="psi-permission-ids")
