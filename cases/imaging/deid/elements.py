"""Raw elements: how replacement values go into a dataset without a decode."""

from __future__ import annotations

from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

Encoding = tuple[bool, bool]  # (implicit VR, little endian)
DEFAULT_ENCODING: Encoding = (False, True)


def text_element(tag: BaseTag, vr: str, text: str, encoding: Encoding) -> Any:
    """A raw element holding ASCII ``text``, padded to even length as PS3.5 asks."""
    data = text.encode("ascii")
    if len(data) & 1:
        data += b"\x00" if vr == "UI" else b" "
    return RawDataElement(tag, vr, len(data), data, 0, *encoding)


def values_of(ds: Dataset, tag: BaseTag, elem: DataElement | RawDataElement) -> list:
    """The element's values as strings (for the ASCII VRs: UI, DA, DT, TM)."""
    if isinstance(elem, RawDataElement):
        if elem.value is not None:
            text = elem.value.decode("latin-1").rstrip("\x00 ")
            return [v.strip() for v in text.split("\\")] if text else []
        elem = ds[tag]
    value = elem.value
    if value is None or value == "":
        return []
    if isinstance(value, str | bytes):
        return [
            (value.decode("latin-1") if isinstance(value, bytes) else value).strip()
        ]
    return [str(v).strip() for v in value]


def encoding_of(ds: Dataset) -> Encoding | None:
    implicit, little = ds.original_encoding
    if implicit is not None and little is not None:
        return implicit, little
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if syntax is not None and UID(syntax).is_transfer_syntax:
        return UID(syntax).is_implicit_VR, UID(syntax).is_little_endian
    return None
