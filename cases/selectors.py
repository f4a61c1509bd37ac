"""Named reads of cases, all through the permission gate."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from cases.models import (
    Case,
    CaseEvent,
    Prescription,
)
from consent.selectors import IDENTITY_FIELDS
from psi.models import Role
from psi.permissions import granted_on, restrict

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


def case_grants(
    user, case_ids: Iterable[int], codenames: Iterable[str]
) -> dict[int, set[str]]:
    """Which of ``codenames`` the gate grants ``user`` on each of the cases, in one
    query for a page of cases. A superuser needs no grant and gets an empty
    answer: ask ``user.is_superuser`` first."""
    return granted_on(user, Case, case_ids, codenames)


def prescriber_choices(user) -> QuerySet:
    """The active clinicians ``user`` may name as prescriber of a case: those of
    the organisations ``user`` is an active member of (every clinician, for a
    superuser). ``case_create`` checks the patient's hospital again."""
    clinician = {
        "is_active": True,
        "memberships__role": Role.CLINICIAN,
        "memberships__is_active": True,
    }
    users = get_user_model().objects
    if getattr(user, "is_superuser", False):
        users = users.filter(**clinician)
    else:
        # One filter() call: the clinician membership is the one in a shared
        # organisation, not any other membership of the same user.
        users = users.filter(
            **clinician,
            memberships__organisation__memberships__user=user,
            memberships__organisation__memberships__is_active=True,
        )
    return users.distinct().order_by("last_name", "username")


def prescription_queryset() -> QuerySet[Prescription]:
    """Prescriptions with what their pages show, before the gate."""
    return Prescription.objects.select_related(
        "case", "prescriber", "institution", "signature"
    )


def prescription_list_visible_to(user) -> QuerySet[Prescription]:
    return restrict(prescription_queryset(), user)


def case_events_visible_to(user) -> QuerySet[CaseEvent]:
    return restrict(CaseEvent.objects.select_related("case", "actor"), user)


def case_events_of(user, case: Case) -> QuerySet[CaseEvent]:
    """The timeline of one case, oldest first."""
    return case_events_visible_to(user).filter(case=case).order_by("at", "id")
