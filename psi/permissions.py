"""The one permission gate.

django-guardian object permissions are granted on the *anchor* models (Case, Patient)
to organisation-role groups, through guardian's direct foreign-key permission models.
Every other record is authorised through its anchor: a model names the path to it with
a ``permission_path`` class attribute (``permission_path = "case"``).

Reads go through :func:`restrict`, which filters by an id subquery (user permissions
UNION group permissions) instead of guardian's generic tables, so a permission-filtered
list costs about what an unfiltered one does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache

from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import models
from guardian.shortcuts import assign_perm, remove_perm
from guardian.utils import get_group_obj_perms_model, get_user_obj_perms_model

from psi.errors import NotVisible, PermissionRefused
from psi.models import Organisation
from psi.orgs import ROLES_BY_KIND, role_group


def anchor_path(model: type[models.Model]) -> tuple[str, type[models.Model]]:
    """The lookup path from ``model`` to its anchor, and the anchor model."""
    path = getattr(model, "permission_path", "")
    anchor = model
    for part in filter(None, path.split("__")):
        anchor = anchor._meta.get_field(part).related_model
    return path, anchor


def anchor_of(obj: models.Model) -> models.Model:
    path, _ = anchor_path(type(obj))
    for part in filter(None, path.split("__")):
        obj = getattr(obj, part)
    return obj


@lru_cache(maxsize=128)
def _permission_id(app_label: str, model_name: str, codename: str) -> int:
    content_type = ContentType.objects.get_by_natural_key(app_label, model_name)
    return (
        Permission.objects.only("pk")
        .get(content_type=content_type, codename=codename)
        .pk
    )


def _codename(anchor: type[models.Model], action: str) -> str:
    # "view" means view_case on a Case; a full codename ("submit_case") passes as is.
    return f"{action}_{anchor._meta.model_name}" if "_" not in action else action


def visible_ids(user, anchor: type[models.Model], codename: str) -> models.QuerySet:
    """Ids of ``anchor`` rows on which ``user`` holds ``codename``: a subquery."""
    perm_id = _permission_id(anchor._meta.app_label, anchor._meta.model_name, codename)
    by_group = (
        get_group_obj_perms_model(anchor)
        .objects.filter(permission_id=perm_id, group__user=user)
        .values("content_object_id")
    )
    by_user = (
        get_user_obj_perms_model(anchor)
        .objects.filter(permission_id=perm_id, user=user)
        .values("content_object_id")
    )
    return by_group.union(by_user, all=True)


def _is_active(user) -> bool:
    return bool(getattr(user, "is_authenticated", False) and user.is_active)


def restrict(queryset: models.QuerySet, user, action: str = "view") -> models.QuerySet:
    """``queryset`` narrowed to the rows whose anchor grants ``user`` the action."""
    if not _is_active(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    path, anchor = anchor_path(queryset.model)
    ids = visible_ids(user, anchor, _codename(anchor, action))
    return queryset.filter(**{f"{path}__in" if path else "pk__in": ids})


def has_object_perm(user, action: str, obj: models.Model) -> bool:
    if not _is_active(user):
        return False
    if user.is_superuser:
        return True
    anchor = anchor_of(obj)
    model = type(anchor)
    perm_id = _permission_id(
        model._meta.app_label, model._meta.model_name, _codename(model, action)
    )
    return (
        get_group_obj_perms_model(model)
        .objects.filter(permission_id=perm_id, group__user=user, content_object=anchor)
        .exists()
        or get_user_obj_perms_model(model)
        .objects.filter(permission_id=perm_id, user=user, content_object=anchor)
        .exists()
    )


def require_object_perm(user, action: str, obj: models.Model) -> None:
    """Raise NotVisible (404) if the user cannot see ``obj``; PermissionRefused (403)
    if they see it but may not perform ``action``."""
    if not has_object_perm(user, "view", obj):
        raise NotVisible(f"No {obj._meta.verbose_name} matches the given query.")
    if action != "view" and not has_object_perm(user, action, obj):
        raise PermissionRefused(
            f"You may not {action.split('_')[0]} this {obj._meta.verbose_name}."
        )


def grant_to_roles(
    obj: models.Model,
    organisation: Organisation,
    role_perms: Mapping[str, Iterable[str]],
) -> None:
    """Grant object permissions on an anchor to the roles of one organisation."""
    for role, codenames in role_perms.items():
        if role not in ROLES_BY_KIND[organisation.kind]:
            continue
        group = role_group(organisation, role)
        for codename in codenames:
            assign_perm(codename, group, obj)


def revoke_from_organisation(
    obj: models.Model,
    organisation: Organisation,
    role_perms: Mapping[str, Iterable[str]],
) -> None:
    for role, codenames in role_perms.items():
        if role not in ROLES_BY_KIND[organisation.kind]:
            continue
        group = role_group(organisation, role)
        for codename in codenames:
            remove_perm(codename, group, obj)
