"""DICOMweb routes (PS3.18): STOW-RS, QIDO-RS and WADO-RS under ``/dicomweb/``."""

from django.urls import path, register_converter

from cases.imaging.dicomweb import views as dicomweb


class UIDConverter:
    regex = r"[0-9]+(?:\.[0-9]+)*"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(UIDConverter, "uid")

_S = "studies/<uid:study>"
_SE = f"{_S}/series/<uid:series>"
_I = f"{_SE}/instances/<uid:instance>"

urlpatterns = [
    path("studies", dicomweb.studies, name="dicomweb-studies"),
    path(_S, dicomweb.study, name="dicomweb-study"),
    path(f"{_S}/metadata", dicomweb.study_metadata, name="dicomweb-study-metadata"),
    path(f"{_S}/series", dicomweb.search_series, name="dicomweb-series-search"),
    path(_SE, dicomweb.series, name="dicomweb-series"),
    path(f"{_SE}/metadata", dicomweb.series_metadata, name="dicomweb-series-metadata"),
    path(
        f"{_SE}/instances",
        dicomweb.search_instances,
        name="dicomweb-instances-search",
    ),
    path(_I, dicomweb.instance, name="dicomweb-instance"),
    path(
        f"{_I}/metadata",
        dicomweb.instance_metadata,
        name="dicomweb-instance-metadata",
    ),
]
