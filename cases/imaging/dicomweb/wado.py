"""WADO-RS (PS3.18 §10.4): the stored de-identified objects of a study, a series or
an instance, as ``multipart/related`` DICOM in the negotiated transfer syntax
(``syntax``), or as DICOM JSON metadata."""

from __future__ import annotations

import pydicom
from django.http import HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers

from cases.imaging.dicomweb import syntax
from cases.imaging.dicomweb.common import dicom_json, problem
from cases.imaging.dicomweb.multipart import Part, multipart_response
from cases.imaging.selectors import instances_visible_to
from psi.files import stored_file_open


def _instances(user, study, series=None, instance=None) -> list:
    return list(
        instances_visible_to(user, study, series, instance)
        .select_related("file")
        .order_by("series_id", "position", "instance_number", "pk")
    )


def _metadata(instances: list) -> JsonResponse:
    def drop_bulk(element) -> str:
        return ""

    out = []
    for instance in instances:
        with stored_file_open(instance.file) as handle:
            ds = pydicom.dcmread(handle, stop_before_pixels=True)
        data = ds.to_json_dict(
            bulk_data_threshold=1024, bulk_data_element_handler=drop_bulk
        )
        out.append({tag: v for tag, v in data.items() if "BulkDataURI" not in v})
    return dicom_json(out)


def _part(stored, stored_syntax: str, selected: str) -> Part:
    def open_part():
        handle = stored_file_open(stored)
        if selected == stored_syntax:
            return handle
        with handle:
            return syntax.transcoded(handle, selected)

    return f"application/dicom; transfer-syntax={selected}", open_part


def retrieve(request, user, *, metadata: bool, **uids) -> HttpResponse:
    """The objects ``uids`` name (study, series, instance) that ``user`` may see;
    404 when there are none, 406 when none of the accepted transfer syntaxes can
    be produced for every one of them."""
    instances = _instances(user, **uids)
    if not instances:
        return problem(404, "No such study, series or instance.")
    if metadata:
        return _metadata(instances)
    stored = [i.transfer_syntax_uid for i in instances]
    try:
        selected = syntax.negotiate(request.headers.get("Accept", ""), stored)
    except syntax.BadAccept as bad:
        return problem(400, str(bad))
    except syntax.NotAcceptable as refusal:
        return problem(406, str(refusal))
    response = multipart_response(
        request,
        [
            _part(i.file, was, now)
            for i, was, now in zip(instances, stored, selected, strict=True)
        ],
        type_="application/dicom",
    )
    patch_vary_headers(response, ["Accept"])
    return response
