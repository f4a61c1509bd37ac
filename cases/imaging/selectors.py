"""Named reads of imaging records, all through the permission gate."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from cases.imaging.models import ImagingInstance, ImagingSeries, ImagingStudy
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


def instances_visible_to(
    user, study: str, series: str | None = None, instance: str | None = None
) -> QuerySet[ImagingInstance]:
    """The instances of a study (a series, an instance), named by their
    de-identified UIDs, that ``user`` may see."""
    queryset = restrict(ImagingInstance.objects.all(), user).filter(
        study__study_uid=study
    )
    if series is not None:
        queryset = queryset.filter(series__series_uid=series)
    if instance is not None:
        queryset = queryset.filter(sop_instance_uid=instance)
    return queryset
