"""Named reads of cases, all through the permission gate."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet

from cases.models import (
    Case,
    CaseEvent,
    Prescription,
)
from consent.selectors import IDENTITY_FIELDS
from psi.errors import NotVisible
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


def case_get(user, pk) -> Case:
    case = case_list_visible_to(user).filter(pk=pk).first()
    if case is None:
        raise NotVisible("No case matches the given query.")
    return case


def case_grants(
    user, case_ids: Iterable[int], codenames: Iterable[str]
) -> dict[int, set[str]]:
    """Which of ``codenames`` the gate grants ``user`` on each of the cases, in one
    query for a page of cases. A superuser needs no grant and gets an empty
    answer: ask ``user.is_superuser`` first."""
    return granted_on(user, Case, case_ids, codenames)


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
