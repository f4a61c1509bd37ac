"""The routed DICOMweb views: authentication, then one service each."""

from __future__ import annotations

from django.http import HttpResponse

from cases.imaging.dicomweb import qido, wado
from cases.imaging.dicomweb.common import authenticated, problem
from cases.imaging.dicomweb.stow import stow


@authenticated
def studies(request, user) -> HttpResponse:
    """``GET``: QIDO-RS search for studies; ``POST``: STOW-RS."""
    if request.method == "POST":
        return stow(request, user, None)
    if request.method in ("GET", "HEAD"):
        return qido.search_studies(request, user)
    return problem(405, "Use GET or POST.")


@authenticated
def study(request, user, study: str) -> HttpResponse:
    """``GET``: WADO-RS of a study; ``POST``: STOW-RS into that study."""
    if request.method == "POST":
        return stow(request, user, study)
    return wado.retrieve(request, user, metadata=False, study=study)


@authenticated
def study_metadata(request, user, study: str) -> HttpResponse:
    return wado.retrieve(request, user, metadata=True, study=study)


@authenticated
def search_series(request, user, study: str) -> HttpResponse:
    """QIDO-RS: the series of a study."""
    return qido.search_series(request, user, study)


@authenticated
def series(request, user, study: str, series: str) -> HttpResponse:
    return wado.retrieve(request, user, metadata=False, study=study, series=series)


@authenticated
def series_metadata(request, user, study: str, series: str) -> HttpResponse:
    return wado.retrieve(request, user, metadata=True, study=study, series=series)


@authenticated
def search_instances(request, user, study: str, series: str) -> HttpResponse:
    """QIDO-RS: the instances of a series."""
    return qido.search_instances(request, user, study, series)


@authenticated
def instance(request, user, study: str, series: str, instance: str) -> HttpResponse:
    return wado.retrieve(
        request, user, metadata=False, study=study, series=series, instance=instance
    )


@authenticated
def instance_metadata(
    request, user, study: str, series: str, instance: str
) -> HttpResponse:
    return wado.retrieve(
        request, user, metadata=True, study=study, series=series, instance=instance
    )
