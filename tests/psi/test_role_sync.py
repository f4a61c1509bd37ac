"""An upgrade that gives a role a new model permission reaches the role groups
that already exist, when ``migrate`` runs."""

import pytest
from django.apps import apps
from django.core.management import call_command

from psi.models import Role
from psi.orgs import role_group

pytestmark = pytest.mark.django_db


def test_migrate_gives_existing_role_groups_what_the_apps_now_declare(
    manufacturer, monkeypatch
):
    group = role_group(manufacturer, Role.DESIGNER)
    assert not group.permissions.filter(codename="view_auditevent").exists()
    psi_config = apps.get_app_config("psi")
    declared = {**psi_config.role_permissions, Role.DESIGNER: ["psi.view_auditevent"]}
    monkeypatch.setattr(psi_config, "role_permissions", declared)

    call_command("migrate", verbosity=0)

    assert group.permissions.filter(codename="view_auditevent").exists()
