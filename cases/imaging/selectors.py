"""Named reads of imaging records, all through the permission gate."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from cases.imaging.models import ImagingSeries, ImagingStudy
from psi.errors import NotVisible
from psi.permissions import restrict


def study_queryset() -> QuerySet[ImagingStudy]:
    """Studies with their case and series, before the gate."""
    return ImagingStudy.objects.select_related(
        "case", "proposed_series", "review", "sent_by"
    ).prefetch_related(
        Prefetch("series", queryset=ImagingSeries.objects.order_by("series_number"))
    )


def study_list_visible_to(user) -> QuerySet[ImagingStudy]:
    return restrict(study_queryset(), user)


def study_get(user, pk) -> ImagingStudy:
    study = study_list_visible_to(user).filter(pk=pk).first()
    if study is None:
        raise NotVisible("No imaging study matches the given query.")
    return study


def series_list_visible_to(user) -> QuerySet[ImagingSeries]:
    return restrict(ImagingSeries.objects.select_related("study"), user)


def studies_of_case(user, case) -> QuerySet[ImagingStudy]:
    return study_list_visible_to(user).filter(case=case)
