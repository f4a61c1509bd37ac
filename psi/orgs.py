"""Organisations, memberships and the organisation-role groups behind permissions.

Each app says which model permissions a role carries by giving its AppConfig a
``role_permissions`` mapping (role -> list of "app_label.codename"); the core gathers
them without naming any app.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

from psi.audit import audit_append
from psi.errors import DomainError
from psi.models import Membership, Organisation, Role, RoleGroup

# Which kinds of organisation a role can exist in.
ROLES_BY_KIND: dict[str, set[str]] = {
    Organisation.Kind.HOSPITAL: {
        Role.CLINICIAN,
        Role.CASE_COORDINATOR,
        Role.INTEGRATION,
    },
    Organisation.Kind.MANUFACTURER: {
        Role.CASE_MANAGER,
        Role.DESIGNER,
        Role.PRODUCTION,
        Role.QUALITY_ASSURANCE,
        Role.REGULATORY,
        Role.AUDITOR,
        Role.INTEGRATION,
    },
    Organisation.Kind.DESIGN_PARTNER: {Role.DESIGNER, Role.AUDITOR},
}


def role_model_permissions(role: str) -> list[str]:
    """Every "app_label.codename" that the installed apps give to ``role``."""
    perms: list[str] = []
    for config in apps.get_app_configs():
        perms.extend(getattr(config, "role_permissions", {}).get(role, []))
    return perms


def _permissions(names: Iterable[str]) -> list[Permission]:
    """The Permission rows of "app_label.codename" names, in one query; a name
    that matches no permission is an error in an app's ``role_permissions``."""
    wanted = {tuple(name.split(".", 1)) for name in names}
    if not wanted:
        return []
    condition = Q()
    for app_label, codename in wanted:
        condition |= Q(content_type__app_label=app_label, codename=codename)
    found = list(Permission.objects.select_related("content_type").filter(condition))
    missing = wanted - {(p.content_type.app_label, p.codename) for p in found}
    if missing:
        raise Permission.DoesNotExist(
            "No such permission: " + ", ".join(sorted(".".join(m) for m in missing))
        )
    return found


def role_group(organisation: Organisation, role: str) -> Group:
    """The group of ``role`` at ``organisation``, created with its permissions."""
    link = (
        RoleGroup.objects.select_related("group")
        .filter(organisation=organisation, role=role)
        .first()
    )
    if link:
        return link.group
    with transaction.atomic():
        group, _ = Group.objects.get_or_create(
            name=f"{organisation.name} – {Role(role).label}"[:150]
        )
        group.permissions.set(_permissions(role_model_permissions(role)))
        RoleGroup.objects.create(group=group, organisation=organisation, role=role)
    return group


def role_groups_sync_permissions() -> int:
    """Re-apply every role's model permissions to its groups: after an upgrade
    gives a role a new permission, every organisation's group of that role has
    it (run after each ``migrate``, see ``psi.apps``)."""
    by_role: dict[str, list[Permission]] = {}
    count = 0
    for link in RoleGroup.objects.select_related("group"):
        if link.role not in by_role:
            by_role[link.role] = _permissions(role_model_permissions(link.role))
        link.group.permissions.set(by_role[link.role])
        count += 1
    return count


def organisation_create(
    *, actor, kind: str, name: str, country: str, address: str = ""
) -> Organisation:
    with transaction.atomic():
        organisation = Organisation(
            kind=kind, name=name, country=country.upper(), address=address
        )
        organisation.full_clean()
        organisation.save()
        audit_append(
            actor=actor,
            action="organisation.created",
            obj=organisation,
            organisation=organisation,
            payload={"kind": kind, "name": name, "country": organisation.country},
        )
    return organisation


#: What may change on an organisation; its kind decides which roles exist there.
ORGANISATION_EDITABLE = ("name", "address", "country")


def organisation_update(
    *, actor, organisation: Organisation, **changes
) -> Organisation:
    """Change an organisation's name, address or country, with an audit event that
    records the old and new values."""
    unknown = set(changes) - set(ORGANISATION_EDITABLE)
    if unknown:
        field = sorted(unknown)[0]
        raise DomainError(f"{field} cannot be changed here.", field=field)
    if "country" in changes:
        changes["country"] = changes["country"].upper()
    with transaction.atomic():
        organisation = Organisation.objects.select_for_update().get(pk=organisation.pk)
        delta = {
            field: [getattr(organisation, field), value]
            for field, value in changes.items()
            if getattr(organisation, field) != value
        }
        if not delta:
            return organisation
        for field, (_, value) in delta.items():
            setattr(organisation, field, value)
        organisation.full_clean()
        organisation.save()
        audit_append(
            actor=actor,
            action="organisation.changed",
            obj=organisation,
            organisation=organisation,
            payload={"changes": delta},
        )
    return organisation


def role_check_exists_at(organisation: Organisation, role: str) -> None:
    """Refuse a role that the organisation's kind does not have."""
    if role not in ROLES_BY_KIND[organisation.kind]:
        raise DomainError(
            f"A {organisation.get_kind_display().lower()} has no "
            f"{Role(role).label.lower()} role.",
            field="role",
        )


def membership_grant(
    *, actor, user, organisation: Organisation, role: str
) -> Membership:
    """Give ``user`` a role at ``organisation`` (reactivating an old membership)."""
    role_check_exists_at(organisation, role)
    with transaction.atomic():
        membership, created = Membership.objects.select_for_update().get_or_create(
            user=user, organisation=organisation, role=role
        )
        if not created and not membership.is_active:
            membership.is_active = True
            membership.save()
        user.groups.add(role_group(organisation, role))
        _memberships_changed(user)
        audit_append(
            actor=actor,
            action="membership.granted",
            obj=membership,
            organisation=organisation,
            payload={"user_id": user.pk, "role": role},
        )
    return membership


def _memberships_changed(user) -> None:
    from psi.permissions import forget_cached_grantees

    forget_cached_grantees()
    _sync_staff_status(user)


def _sync_staff_status(user) -> None:
    # People work in the admin (clinicians sign off there); an integration account
    # only speaks the API. What anyone sees there is still decided per object.
    human = (
        Membership.objects.filter(user=user, is_active=True)
        .exclude(role=Role.INTEGRATION)
        .exists()
    )
    staff = human or user.is_superuser
    if user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])


def membership_revoke(*, actor, membership: Membership, reason: str) -> Membership:
    with transaction.atomic():
        membership = Membership.objects.select_for_update().get(pk=membership.pk)
        membership.is_active = False
        membership.save()
        membership.user.groups.remove(
            role_group(membership.organisation, membership.role)
        )
        _memberships_changed(membership.user)
        audit_append(
            actor=actor,
            action="membership.revoked",
            obj=membership,
            organisation=membership.organisation,
            payload={"user_id": membership.user_id, "role": membership.role},
            reason=reason,
        )
    return membership


def user_deactivate(*, actor, user, reason: str):
    """Users are deactivated, never deleted: their name stays on what they signed."""
    with transaction.atomic():
        user.is_active = False
        user.save(update_fields=["is_active"])
        for membership in Membership.objects.filter(user=user, is_active=True):
            membership_revoke(actor=actor, membership=membership, reason=reason)
        audit_append(actor=actor, action="user.deactivated", obj=user, reason=reason)
    return user


def user_reactivate(*, actor, user, reason: str):
    """Let a deactivated user log in again. Their roles are not restored: each
    membership is granted again, deliberately."""
    with transaction.atomic():
        user.is_active = True
        user.save(update_fields=["is_active"])
        audit_append(actor=actor, action="user.reactivated", obj=user, reason=reason)
    return user


def user_memberships(user) -> list[Membership]:
    if not getattr(user, "is_authenticated", False):
        return []
    return list(
        Membership.objects.select_related("organisation").filter(
            user=user, is_active=True
        )
    )


def user_roles_at(user, organisation: Organisation) -> set[str]:
    return {
        m.role for m in user_memberships(user) if m.organisation_id == organisation.pk
    }
