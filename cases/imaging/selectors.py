"""Named reads of imaging records, all through the permission gate."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from cases.imaging.models import ImagingSeries, ImagingStudy
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


def series_list_visible_to(user) -> QuerySet[ImagingSeries]:
    return restrict(ImagingSeries.objects.select_related("study"), user)
