"""Named reads of cases, all through the permission gate."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.contrib.auth import get_user_model
from django.db.models import QuerySet

from cases.models import (
    Case,
    CaseEvent,
    Prescription,
)
from consent.selectors import IDENTITY_FIELDS
from psi.models import Role
from psi.permissions import (
    GrantsInRows,
    restrict,
    visible_ids_newest_first,
)

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


def case_ids_newest_first(user) -> QuerySet | None:
    """The ids of the cases ``user`` may see, newest (highest id) first, without
    reading the case table; None where that cannot be done
    (:func:`psi.permissions.visible_ids_newest_first`): use
    :func:`case_list_visible_to` then."""
    return visible_ids_newest_first(user, Case)


def case_rows(
    user, ids: Sequence[int], columns: Iterable[str], codenames: Iterable[str]
) -> list[dict]:
    """The cases ``ids`` (of a page read through the gate) as dicts of ``columns``
    and ``granted``, the codenames of ``codenames`` the gate grants ``user`` on the
    case (none for a superuser, who needs none), in the order of ``ids``.

    One query: the grants are read by the rows' query, and so is ``view`` on each
    case, in place of the gate's filter. A case ``user`` may no longer view, or one
    that went away since ``ids`` were read, is left out."""
    if not ids:
        return []
    wanted = frozenset(codenames)
    grants = GrantsInRows(user, Case, ("view", *sorted(wanted)))
    view = grants.codenames[0]
    rows = grants.annotate(Case.objects.filter(pk__in=ids).order_by()).values(
        *dict.fromkeys(("id", *columns)), *grants.annotations
    )
    by_id = {}
    for row in rows:
        held = grants.held(row)
        if grants.holds_all or view in held:
            for name in grants.annotations:
                del row[name]
            row["granted"] = held & wanted
            by_id[row["id"]] = row
    return [by_id[pk] for pk in ids if pk in by_id]


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
