"""QIDO-RS (PS3.18 §10.6): searches for the studies, series and instances one may
see, answered in DICOM JSON from the catalogue rows (no file is opened).

Each level lists the attributes it holds (``query.Attribute``): those it matches on,
those it returns by default (PS3.18 Table 10.6.3-3 to -5, as far as de-identified
records hold them), and those returned only when ``includefield`` asks for them.
Patient Name and Patient ID are the patient's pseudonym, dates are shifted.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable

from django.db.models import Q, QuerySet
from django.http import HttpResponse

from cases.imaging.dicomweb.common import (
    dicom_json,
    element,
    instance_url,
    problem,
    series_url,
    study_url,
    warning,
)
from cases.imaging.dicomweb.query import Attribute, BadQuery, Query, parse
from cases.imaging.models import ImagingSeries, ImagingStudy
from cases.imaging.selectors import instances_visible_to
from psi.permissions import restrict


def _series_of_studies(condition: Q) -> Q:
    return Q(pk__in=ImagingSeries.objects.filter(condition).values("study_id"))


# Every object the catalogue lists is stored, hence ONLINE (PS3.4 C.4.23.1.1).
_AVAILABILITY = Attribute("InstanceAvailability", matchable=False)
_RETRIEVE_URL = Attribute("RetrieveURL", matchable=False)

STUDY = [
    Attribute("StudyDate", "study_date"),
    Attribute("AccessionNumber", "case__reference"),
    _AVAILABILITY,
    Attribute("ModalitiesInStudy", "modality", through=_series_of_studies, any_of=True),
    Attribute("StudyDescription", "description"),
    _RETRIEVE_URL,
    Attribute("PatientName", "case__patient__pseudonym"),
    Attribute("PatientID", "case__patient__pseudonym"),
    Attribute("StudyInstanceUID", "study_uid"),
    Attribute("NumberOfStudyRelatedSeries", "series_count", matchable=False),
    Attribute("NumberOfStudyRelatedInstances", "instance_count", matchable=False),
]

SERIES = [
    Attribute("StudyInstanceUID", "study__study_uid"),
    Attribute("Modality", "modality"),
    Attribute("SeriesDescription", "description"),
    Attribute("SeriesInstanceUID", "series_uid"),
    Attribute("SeriesNumber", "series_number"),
    Attribute("NumberOfSeriesRelatedInstances", "instance_count", matchable=False),
    _AVAILABILITY,
    _RETRIEVE_URL,
    # What the planning checks read, on request.
    Attribute("ConvolutionKernel", "kernel", default=False),
    Attribute("FrameOfReferenceUID", "frame_of_reference_uid", default=False),
    Attribute("SliceThickness", "slice_thickness", matchable=False, default=False),
    Attribute("SpacingBetweenSlices", "spacing", matchable=False, default=False),
    Attribute("Rows", "rows", matchable=False, default=False),
    Attribute("Columns", "columns", matchable=False, default=False),
    Attribute("PixelSpacing", "pixel_spacing", matchable=False, default=False),
    Attribute("ImageOrientationPatient", "orientation", matchable=False, default=False),
]

INSTANCE = [
    Attribute("StudyInstanceUID", "study__study_uid"),
    Attribute("SeriesInstanceUID", "series__series_uid"),
    Attribute("SOPClassUID", "sop_class_uid"),
    Attribute("SOPInstanceUID", "sop_instance_uid"),
    Attribute("InstanceNumber", "instance_number"),
    _AVAILABILITY,
    _RETRIEVE_URL,
    Attribute(
        "AvailableTransferSyntaxUID",
        "transfer_syntax_uid",
        matchable=False,
        default=False,
    ),
    Attribute("Rows", "series__rows", matchable=False, default=False),
    Attribute("Columns", "series__columns", matchable=False, default=False),
]


def _json_element(vr: str, value) -> dict:
    if isinstance(value, list | tuple):
        return element(vr, *value)
    if isinstance(value, datetime.date):
        value = value.strftime("%Y%m%d")
    elif vr == "PN" and value:
        value = {"Alphabetic": value}
    return element(vr, value)


def _fields(attributes: list[Attribute], include: set[str]) -> list[str]:
    return sorted(
        {
            a.field
            for a in attributes
            if a.keyword in include and a.field and a.through is None
        }
    )


def _dataset(attributes: list[Attribute], include: set[str], row: dict) -> dict:
    """One result: the included attributes in tag order; ``row`` holds the values
    by lookup path and, for computed ones, by keyword."""
    out = {
        a.tag: _json_element(
            a.vr, row[a.keyword] if a.keyword in row else row.get(a.field)
        )
        for a in attributes
        if a.keyword in include
    }
    return dict(sorted(out.items()))


def _search(
    request,
    attributes: list[Attribute],
    queryset: QuerySet,
    computed: Callable[[list[dict]], Iterable[dict]],
) -> HttpResponse:
    """Parse, match, page and answer; ``computed`` adds what rows do not hold
    (by keyword) to a page of rows."""
    try:
        query: Query = parse(dict(request.GET.lists()), attributes)
    except BadQuery as bad:
        return problem(400, str(bad))
    queryset = query.apply(queryset)
    fields = ["pk", *_fields(attributes, query.include)]
    rows = list(queryset.values(*fields)[query.offset : query.offset + query.limit])
    warnings = list(query.warnings)
    if len(rows) == query.limit:  # a full page: more may remain (PS3.18 8.3.4.4.1)
        remaining = queryset.count() - query.offset - len(rows)
        if remaining > 0:
            warnings.append(
                f"There are {remaining} additional results that can be requested."
            )
    headers = {"Warning": ", ".join(map(warning, warnings))} if warnings else {}
    # No match is a success with an empty list, not 204 No Content: a 204 carries
    # no content at all (RFC 9110), C-FIND and IHE PDQm answer success, and
    # DICOM CP-2473 brings PS3.18 8.3.4.4.1 back to 200 for this case.
    datasets = [
        _dataset(attributes, query.include, row | extra)
        for row, extra in zip(rows, computed(rows), strict=True)
    ]
    return dicom_json(datasets, **headers)


def search_studies(request, user) -> HttpResponse:
    def computed(rows: list[dict]) -> Iterable[dict]:
        modalities: dict[int, set[str]] = {}
        for study_id, modality in ImagingSeries.objects.filter(
            study_id__in=[r["pk"] for r in rows]
        ).values_list("study_id", "modality"):
            if modality:
                modalities.setdefault(study_id, set()).add(modality)
        for row in rows:
            yield {
                "InstanceAvailability": "ONLINE",
                "ModalitiesInStudy": sorted(modalities.get(row["pk"], ())),
                "RetrieveURL": study_url(request, row["study_uid"]),
            }

    queryset = restrict(ImagingStudy.objects.all(), user).order_by("-created_at", "-pk")
    return _search(request, STUDY, queryset, computed)


def search_series(request, user, study: str) -> HttpResponse:
    def computed(rows: list[dict]) -> Iterable[dict]:
        for row in rows:
            yield {
                "InstanceAvailability": "ONLINE",
                "RetrieveURL": series_url(request, study, row["series_uid"]),
                "StudyInstanceUID": study,
            }

    queryset = (
        restrict(ImagingSeries.objects.all(), user)
        .filter(study__study_uid=study)
        .order_by("series_number", "pk")
    )
    return _search(request, SERIES, queryset, computed)


def search_instances(request, user, study: str, series: str) -> HttpResponse:
    def computed(rows: list[dict]) -> Iterable[dict]:
        for row in rows:
            uid = row["sop_instance_uid"]
            yield {
                "InstanceAvailability": "ONLINE",
                "RetrieveURL": instance_url(request, study, series, uid),
                "StudyInstanceUID": study,
                "SeriesInstanceUID": series,
            }

    queryset = instances_visible_to(user, study, series).order_by(
        "position", "instance_number", "pk"
    )
    return _search(request, INSTANCE, queryset, computed)
