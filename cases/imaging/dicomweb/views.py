"""The routed DICOMweb views: authentication, then one service each."""

from __future__ import annotations

from django.http import HttpResponse
from django.views.decorators.http import require_http_methods, require_safe

from cases.imaging.dicomweb import qido, wado
from cases.imaging.dicomweb.common import authenticated
from cases.imaging.dicomweb.stow import stow

read_or_store = require_http_methods(["GET", "HEAD", "POST"])


@authenticated
@read_or_store
def studies(request, user) -> HttpResponse:
    """``GET``: QIDO-RS search for studies; ``POST``: STOW-RS."""
    if request.method == "POST":
        return stow(request, user, None)
    return qido.search_studies(request, user)


@authenticated
@read_or_store
def study(request, user, study: str) -> HttpResponse:
    """``GET``: WADO-RS of a study; ``POST``: STOW-RS into that study."""
    if request.method == "POST":
        return stow(request, user, study)
    return wado.retrieve(request, user, metadata=False, study=study)


@authenticated
@require_safe
def study_metadata(request, user, study: str) -> HttpResponse:
    return wado.retrieve(request, user, metadata=True, study=study)


@authenticated
@require_safe
def search_series(request, user, study: str) -> HttpResponse:
    """QIDO-RS: the series of a study."""
    return qido.search_series(request, user, study)


@authenticated
@require_safe
def series(request, user, study: str, series: str) -> HttpResponse:
    return wado.retrieve(request, user, metadata=False, study=study, series=series)


@authenticated
@require_safe
def series_metadata(request, user, study: str, series: str) -> HttpResponse:
    return wado.retrieve(request, user, metadata=True, study=study, series=series)


@authenticated
@require_safe
def search_instances(request, user, study: str, series: str) -> HttpResponse:
    """QIDO-RS: the instances of a series."""
    return qido.search_instances(request, user, study, series)


@authenticated
@require_safe
def instance(request, user, study: str, series: str, instance: str) -> HttpResponse:
    return wado.retrieve(
        request, user, metadata=False, study=study, series=series, instance=instance
    )


@authenticated
@require_safe
def instance_metadata(
    request, user, study: str, series: str, instance: str
) -> HttpResponse:
    return wado.retrieve(
        request, user, metadata=True, study=study, series=series, instance=instance
    )
