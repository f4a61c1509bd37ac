"""Raw elements: how replacement values go into a dataset without a decode, how
values are read from one without decoding it, and how an element is encoded."""

from __future__ import annotations

import struct
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR

Encoding = tuple[bool, bool]  # (implicit VR, little endian)
DEFAULT_ENCODING: Encoding = (False, True)
#: Explicit VRs with two reserved bytes and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
#: The VRs of PS3.5, as their two bytes, and their names.
VR_NAMES = {vr.value.encode("ascii"): vr.value for vr in VR if len(vr.value) == 2}
_TAG = struct.Struct("<HH")
_LENGTH_16 = struct.Struct("<H")
_LENGTH_32 = struct.Struct("<I")


def element_head(
    data: bytes, position: int, implicit: bool
) -> tuple[str | None, int, int] | None:
    """The VR (None in implicit VR), where the value starts and its length, of
    the little endian element at ``position`` (at least 8 bytes from the end of
    ``data``); None where an explicit VR is none of PS3.5's or the header runs
    past the end."""
    if implicit:
        return None, position + 8, _LENGTH_32.unpack_from(data, position + 4)[0]
    code = data[position + 4 : position + 6]
    if code in LONG_VRS:
        if position + 12 > len(data):
            return None
        return (
            VR_NAMES[code],
            position + 12,
            _LENGTH_32.unpack_from(data, position + 8)[0],
        )
    vr = VR_NAMES.get(code)
    if vr is None:
        return None
    return vr, position + 8, _LENGTH_16.unpack_from(data, position + 6)[0]


def padded(text: str, vr: str) -> bytes:
    """ASCII ``text`` padded to even length as PS3.5 asks (UI with a NUL)."""
    data = text.encode("ascii")
    if len(data) & 1:
        data += b"\x00" if vr == "UI" else b" "
    return data


def encode_element(tag: int, vr: str, value: bytes, *, implicit: bool = False) -> bytes:
    """One little endian element, ``value`` as given: tag, VR unless ``implicit``,
    length. The caller keeps a short VR's value under 64 kB."""
    head = _TAG.pack(tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + _LENGTH_32.pack(len(value)) + value
    code = vr.encode("ascii")
    if code in LONG_VRS:
        return head + code + b"\x00\x00" + _LENGTH_32.pack(len(value)) + value
    return head + code + _LENGTH_16.pack(len(value)) + value


def text_element(tag: BaseTag, vr: str, text: str, encoding: Encoding) -> Any:
    """A raw element holding ASCII ``text``, padded to even length as PS3.5 asks."""
    data = padded(text, vr)
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


def text_values(ds: Dataset, tag: int) -> list[str]:
    """The values of a text element, stripped, without decoding it in place (cheap
    for raw elements: the ASCII VRs need no character set)."""
    elem = ds.get_item(tag, keep_deferred=True)
    return [] if elem is None else values_of(ds, BaseTag(tag), elem)


def text_value(ds: Dataset, tag: int) -> str:
    return "\\".join(text_values(ds, tag))
