"""Named reads of the core records, scoped to the user who asks.

Organisations, memberships, jobs and audit events are not anchored on a Case or a
Patient, so they are scoped here rather than by the object-permission gate; the API
and the admin both read through these.
"""

from __future__ import annotations

from django.db.models import Q, QuerySet

from psi.models import AuditEvent, Job, Membership, Organisation, RoleGroup
from psi.permissions import generic_target_q, is_active_user

AUDIT_VIEW_PERMISSION = "psi.view_auditevent"
AUDIT_VERIFY_PERMISSION = "psi.verify_auditevent"


def organisation_list_visible_to(user) -> QuerySet[Organisation]:
    """Every organisation: the directory of parties is not confidential."""
    if not is_active_user(user):
        return Organisation.objects.none()
    return Organisation.objects.all()


def user_organisation_ids(user) -> QuerySet:
    """Ids of the organisations where ``user`` holds an active membership."""
    return Membership.objects.filter(user=user, is_active=True).values(
        "organisation_id"
    )


def membership_list_visible_to(user) -> QuerySet[Membership]:
    """The memberships of the organisations the user belongs to (all for a
    superuser), including revoked ones: who held which role is part of the record."""
    queryset = Membership.objects.select_related("user", "organisation")
    if not is_active_user(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    return queryset.filter(organisation_id__in=user_organisation_ids(user))


def job_list_visible_to(user) -> QuerySet[Job]:
    """Jobs the user started, plus jobs whose target the user may view."""
    queryset = Job.objects.select_related("actor", "target_type")
    if not is_active_user(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    return queryset.filter(
        Q(actor=user)
        | generic_target_q(queryset, user, "target_type", "target_id", "view")
    )


def audit_trail_readable_by(user) -> bool:
    """Whether the user may read the audit trail at all (their role says so)."""
    return is_active_user(user) and (
        user.is_superuser or user.has_perm(AUDIT_VIEW_PERMISSION)
    )


def audit_event_list_visible_to(user) -> QuerySet[AuditEvent]:
    """Audit events a reader may see: those about the organisations where one of
    their roles carries the audit-view permission. A manufacturer's auditor reads
    the manufacturer's trail, not a hospital's."""
    queryset = AuditEvent.objects.select_related("actor", "organisation")
    if not audit_trail_readable_by(user):
        return queryset.none()
    if user.is_superuser:
        return queryset
    app_label, codename = AUDIT_VIEW_PERMISSION.split(".")
    organisations = RoleGroup.objects.filter(
        group__user=user,
        group__permissions__content_type__app_label=app_label,
        group__permissions__codename=codename,
    ).values("organisation_id")
    return queryset.filter(organisation_id__in=organisations)
