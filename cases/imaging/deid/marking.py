"""Marking: the attributes that say an object was de-identified, and how."""

from __future__ import annotations

import functools

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from .elements import DEFAULT_ENCODING, Encoding, text_element, text_value, values_of
from .options import TOOL_NAME, TOOL_VERSION, DeidOptions, Temporal
from .report import ReportBuilder
from .table import label_for

_SOP_CLASS_UID = BaseTag(0x00080016)
_SOP_INSTANCE_UID = BaseTag(0x00080018)
_MEDIA_SOP_CLASS_UID = BaseTag(0x00020002)
_MEDIA_SOP_INSTANCE_UID = BaseTag(0x00020003)
_PATIENT_IDENTITY_REMOVED = BaseTag(0x00120062)
_DEID_METHOD = BaseTag(0x00120063)
_DEID_METHOD_CODES = BaseTag(0x00120064)
_LONGITUDINAL_MODIFIED = BaseTag(0x00280303)
_CONTRIBUTING_EQUIPMENT = BaseTag(0x0018A001)
_DEID_EQUIPMENT_CODE = ("109104", "DCM", "De-identifying Equipment")
# What a new file meta keeps: the writer adds group length, version and its own
# implementation UID and name; everything else (source and sending AE titles, private
# information) goes.
_META_KEPT = frozenset({0x00020001, 0x00020002, 0x00020003, 0x00020010})
_META_REWRITTEN = frozenset({0x00020000, 0x00020012, 0x00020013})


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _method_codes(options: DeidOptions) -> Sequence:
    return Sequence([_code(value, "DCM", m) for value, m in options.method_codes])


def _equipment_item() -> Dataset:
    """Us, as an item of Contributing Equipment Sequence (PS3.15 E.1.1). No
    Contribution DateTime: the date of de-identification is near the scan date, and
    next to shifted dates it would give the offset away."""
    item = Dataset()
    item.Manufacturer = "PSI"
    item.ManufacturerModelName = TOOL_NAME
    item.SoftwareVersions = TOOL_VERSION
    item.PurposeOfReferenceCodeSequence = Sequence([_code(*_DEID_EQUIPMENT_CODE)])
    return item


@functools.lru_cache(maxsize=64)
def _encoded_sequence(
    kind: str, options: DeidOptions, encoding: Encoding
) -> RawDataElement:
    """The marking sequences, encoded once: a raw element to put in every object."""
    if kind == "codes":
        elem = DataElement(_DEID_METHOD_CODES, "SQ", _method_codes(options))
    else:
        elem = DataElement(_CONTRIBUTING_EQUIPMENT, "SQ", Sequence([_equipment_item()]))
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = encoding
    write_data_element(fp, elem)
    data = fp.getvalue()
    header = 8 if encoding[0] else 12
    length = int.from_bytes(
        data[header - 4 : header], "little" if encoding[1] else "big"
    )
    return RawDataElement(elem.tag, "SQ", length, data[header:], 0, *encoding)


def mark(ds: Dataset, options: DeidOptions, edition: str, encoding: Encoding) -> None:
    """PS3.15 E.1.1 and E.3.6: say that and how the object was de-identified."""
    ds[_PATIENT_IDENTITY_REMOVED] = text_element(
        _PATIENT_IDENTITY_REMOVED, "CS", "YES", encoding
    )
    method = f"{TOOL_NAME} {TOOL_VERSION}; DICOM PS3.15 {edition} Table E.1-1"
    # Multi-valued when de-identified more than once (PS3.3 C.7.1.1).
    previous = []
    if _DEID_METHOD in ds:
        previous = values_of(ds, _DEID_METHOD, ds.get_item(_DEID_METHOD))
    ds[_DEID_METHOD] = DataElement(
        _DEID_METHOD, "LO", [v for v in previous if v and v != method] + [method]
    )
    if _DEID_METHOD_CODES in ds:  # de-identified before: add the codes not there
        codes = ds[_DEID_METHOD_CODES].value
        present = {
            (str(i.get("CodeValue", "")), str(i.get("CodingSchemeDesignator", "")))
            for i in codes
        }
        for item in _method_codes(options):
            if (item.CodeValue, "DCM") not in present:
                codes.append(item)
    else:
        ds[_DEID_METHOD_CODES] = _encoded_sequence("codes", options, encoding)
    if options.temporal is Temporal.MODIFIED_DATES:
        temporal = "MODIFIED"
    elif options.temporal is Temporal.FULL_DATES:
        # Kept as received: already MODIFIED if an earlier de-identifier shifted them.
        previous_temporal = text_value(ds, _LONGITUDINAL_MODIFIED)
        temporal = "MODIFIED" if previous_temporal == "MODIFIED" else "UNMODIFIED"
    else:
        temporal = "REMOVED"
    ds[_LONGITUDINAL_MODIFIED] = text_element(
        _LONGITUDINAL_MODIFIED, "CS", temporal, encoding
    )
    if _CONTRIBUTING_EQUIPMENT in ds:
        ds[_CONTRIBUTING_EQUIPMENT].value.append(_equipment_item())
    else:
        ds[_CONTRIBUTING_EQUIPMENT] = _encoded_sequence("equipment", options, encoding)


def replace_file_meta(ds: Dataset, report: ReportBuilder) -> None:
    """Keep only what a Part 10 file needs; the source AE titles and private
    information go, and the media UID follows the new SOP Instance UID."""
    meta = getattr(ds, "file_meta", None)
    if meta is None:
        return
    for tag in list(meta.keys()):
        if tag not in _META_KEPT:
            del meta[tag]
            if tag not in _META_REWRITTEN:
                report.add("removed", label_for(tag))
    sop_instance = text_value(ds, _SOP_INSTANCE_UID)
    if sop_instance:
        meta[_MEDIA_SOP_INSTANCE_UID] = text_element(
            _MEDIA_SOP_INSTANCE_UID, "UI", sop_instance, DEFAULT_ENCODING
        )
        report.add("uid", label_for(_MEDIA_SOP_INSTANCE_UID))
    sop_class = text_value(ds, _SOP_CLASS_UID)
    if sop_class:
        meta[_MEDIA_SOP_CLASS_UID] = text_element(
            _MEDIA_SOP_CLASS_UID, "UI", sop_class, DEFAULT_ENCODING
        )
