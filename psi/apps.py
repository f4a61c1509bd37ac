from django.apps import AppConfig, apps
from django.db.models.signals import post_migrate


def _forget_permission_ids(**_):
    # Permission rows are recreated by flush + migrate (tests); drop cached ids.
    from psi.permissions import _permission_id

    _permission_id.cache_clear()


def _sync_role_permissions(sender, **_):
    """After ``migrate``, give existing role groups what the apps now declare.

    post_migrate is sent once per installed app with models, after Django created
    that app's permissions; when the last one's signal comes, every permission
    exists.
    """
    with_models = [c for c in apps.get_app_configs() if c.models_module is not None]
    if sender is not with_models[-1]:
        return
    from psi.orgs import role_groups_sync_permissions

    role_groups_sync_permissions()


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
        post_migrate.connect(_sync_role_permissions, dispatch_uid="psi-role-perms")
