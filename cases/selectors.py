"""Named reads of cases, all through the permission gate."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db.models import QuerySet

from cases.models import (
    Case,
    CaseEvent,
    CaseGroupObjectPermission,
    CaseUserObjectPermission,
    Prescription,
)
from consent.selectors import IDENTITY_FIELDS
from psi.errors import NotVisible
from psi.permissions import restrict

#: The patient's encrypted identity, never loaded with a case: cases know the
#: patient by pseudonym, and identity is read (and logged) by consent.services only.
PATIENT_IDENTITY = tuple(f"patient__{name}" for name in IDENTITY_FIELDS)


def case_queryset() -> QuerySet[Case]:
    """Cases with what their pages show, before the gate (the API's filter backend
    or :func:`case_list_visible_to` applies it)."""
    return Case.objects.select_related(
        "patient", "hospital", "manufacturer", "prescriber"
    ).defer(*PATIENT_IDENTITY)


def case_list_visible_to(user) -> QuerySet[Case]:
    return restrict(case_queryset(), user)


def case_get(user, pk) -> Case:
    case = case_list_visible_to(user).filter(pk=pk).first()
    if case is None:
        raise NotVisible("No case matches the given query.")
    return case


def case_permission_codenames(user, case_ids: Iterable[int]) -> dict[int, set[str]]:
    """The object permission codenames ``user`` holds on each of the cases, directly
    or through a group, read in one query (for a page of cases)."""
    ids = list(case_ids)
    granted: dict[int, set[str]] = defaultdict(set)
    if not ids or not getattr(user, "is_authenticated", False):
        return granted
    by_group = CaseGroupObjectPermission.objects.filter(
        group__user=user, content_object_id__in=ids
    ).values_list("content_object_id", "permission__codename")
    by_user = CaseUserObjectPermission.objects.filter(
        user=user, content_object_id__in=ids
    ).values_list("content_object_id", "permission__codename")
    for case_id, codename in by_group.union(by_user):
        granted[case_id].add(codename)
    return granted


def prescription_list_visible_to(user) -> QuerySet[Prescription]:
    return restrict(
        Prescription.objects.select_related(
            "case", "prescriber", "institution", "signature"
        ),
        user,
    )


def prescription_get(user, pk) -> Prescription:
    prescription = prescription_list_visible_to(user).filter(pk=pk).first()
    if prescription is None:
        raise NotVisible("No prescription matches the given query.")
    return prescription


def case_events_visible_to(user) -> QuerySet[CaseEvent]:
    return restrict(CaseEvent.objects.select_related("case", "actor"), user)


def case_events_of(user, case: Case) -> QuerySet[CaseEvent]:
    """The timeline of one case, oldest first."""
    return case_events_visible_to(user).filter(case=case).order_by("at", "id")
