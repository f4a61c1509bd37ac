"""Named reads of cases, all through the permission gate."""

from django.db.models import QuerySet

from cases.models import Case, CaseEvent, Prescription
from psi.errors import NotVisible
from psi.permissions import restrict


def case_list_visible_to(user) -> QuerySet[Case]:
    return restrict(
        Case.objects.select_related(
            "patient", "hospital", "manufacturer", "prescriber"
        ),
        user,
    )


def case_get(user, pk) -> Case:
    case = case_list_visible_to(user).filter(pk=pk).first()
    if case is None:
        raise NotVisible("No case matches the given query.")
    return case


def prescription_list_visible_to(user) -> QuerySet[Prescription]:
    return restrict(
        Prescription.objects.select_related(
            "case", "prescriber", "institution", "signature"
        ),
        user,
    )


def case_events_visible_to(user) -> QuerySet[CaseEvent]:
    return restrict(CaseEvent.objects.select_related("case", "actor"), user)
