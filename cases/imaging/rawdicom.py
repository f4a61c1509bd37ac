"""DICOM at the byte level, for the listener's hot path.

A C-STORE of a CT slice is half a megabyte of pixels behind a kilobyte of header. The
listener needs three things per object: the File Meta Information to put in front of
the bytes it stages, the Accession Number to route it by, and the command set of its
response. pynetdicom and pydicom do all three through the general Dataset
machinery, which cost more CPU per slice than receiving the slice; here they are a
few struct calls. Each is checked against pydicom and pynetdicom in the tests, and
anything unusual is left to them (``None``).
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from cases.imaging.deid.elements import LONG_VRS, encode_element, padded

_ACCESSION_NUMBER = 0x00080050
_UNDEFINED = 0xFFFFFFFF
_ELEMENT = struct.Struct("<HH")
_LENGTH_32 = struct.Struct("<I")
_LENGTH_16 = struct.Struct("<H")
_US = struct.Struct("<H")


def _uid(tag: int, value: str, *, implicit: bool = False) -> bytes:
    return encode_element(tag, "UI", padded(value, "UI"), implicit=implicit)


def _us(tag: int, value: int) -> bytes:
    return encode_element(tag, "US", _US.pack(value), implicit=True)


_VERSION = encode_element(0x00020001, "OB", b"\x00\x01")
_IMPLEMENTATION = _uid(0x00020012, PYNETDICOM_IMPLEMENTATION_UID) + encode_element(
    0x00020013, "SH", padded(PYNETDICOM_IMPLEMENTATION_VERSION, "SH")
)


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The encoded File Meta Information group of a received object: the same
    bytes as pydicom writes for pynetdicom's ``Event.file_meta`` (group length,
    version, SOP class and instance, transfer syntax, implementation)."""
    body = b"".join(
        (
            _VERSION,
            _uid(0x00020002, sop_class_uid),
            _uid(0x00020003, sop_instance_uid),
            _uid(0x00020010, transfer_syntax),
            _IMPLEMENTATION,
        )
    )
    return encode_element(0x00020000, "UL", _LENGTH_32.pack(len(body))) + body


_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101


def store_success(message_id: int, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """The command set of a successful C-STORE response (PS3.7 9.3.1.2), implicit
    VR little endian, as pynetdicom encodes it: group length, affected SOP class,
    command field, message id responded to, no data set, status 0, affected SOP
    instance."""
    body = b"".join(
        (
            _uid(0x00000002, sop_class_uid, implicit=True),
            _us(0x00000100, _C_STORE_RSP),
            _us(0x00000120, message_id),
            _us(0x00000800, _NO_DATA_SET),
            _us(0x00000900, 0x0000),
            _uid(0x00001000, sop_instance_uid, implicit=True),
        )
    )
    group_length = _LENGTH_32.pack(len(body))
    return encode_element(0x00000000, "UL", group_length, implicit=True) + body


def find_accession(data: bytes | memoryview, *, implicit: bool) -> str | None:
    """The Accession Number (0008,0050) of a little endian dataset, read by walking
    its elements up to that tag; ``""`` when the dataset has none.

    ``None`` when this walk cannot tell: an element of undefined length before it
    (a sequence), a value that is not plain ASCII, a malformed element. The caller
    then asks pydicom.
    """
    view = memoryview(data)
    end = len(view)
    position = 0
    while position + 8 <= end:
        group, element = _ELEMENT.unpack_from(view, position)
        tag = group << 16 | element
        if tag > _ACCESSION_NUMBER:
            return ""
        if implicit:
            (length,) = _LENGTH_32.unpack_from(view, position + 4)
            head = 8
        else:
            vr = bytes(view[position + 4 : position + 6])
            if vr in LONG_VRS:
                if position + 12 > end:
                    return None
                (length,) = _LENGTH_32.unpack_from(view, position + 8)
                head = 12
            elif vr.isalpha() and vr.isupper():
                (length,) = _LENGTH_16.unpack_from(view, position + 6)
                head = 8
            else:
                return None
        if length == _UNDEFINED:
            return None
        start = position + head
        position = start + length
        if position > end:
            return None
        if tag == _ACCESSION_NUMBER:
            value = bytes(view[start:position])
            if not value.isascii() or b"\\" in value:  # pydicom's to decode
                return None
            return value.decode("ascii").rstrip("\x00 ").strip()
    return "" if position == end else None
