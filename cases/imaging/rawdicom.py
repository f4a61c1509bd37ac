"""DICOM at the byte level, for the listener's hot path.

A C-STORE of a CT slice is half a megabyte of pixels behind a kilobyte of header. The
listener needs two things from it per object: the File Meta Information to put in
front of the bytes it stages, and the Accession Number to route it by. pydicom does
both through its general Dataset machinery, which cost more CPU per slice than
receiving the slice; here they are a few struct calls. Both are checked against
pydicom in the tests, and anything unusual is left to pydicom (``None``).
"""

from __future__ import annotations

import struct

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

# Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 7.1.2).
LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN"}
    | {b"UR", b"UT", b"UV"}
)
_ACCESSION_NUMBER = 0x00080050
_UNDEFINED = 0xFFFFFFFF
_ELEMENT = struct.Struct("<HH")
_LENGTH_32 = struct.Struct("<I")
_LENGTH_16 = struct.Struct("<H")


def _explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (``value`` already even)."""
    tag = _ELEMENT.pack(group, element)
    if vr in LONG_VRS:
        return tag + vr + b"\x00\x00" + _LENGTH_32.pack(len(value)) + value
    return tag + vr + _LENGTH_16.pack(len(value)) + value


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) & 1 else data


def _text(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b" " if len(data) & 1 else data


_VERSION = _explicit(0x0002, 0x0001, b"OB", b"\x00\x01")
_IMPLEMENTATION = _explicit(
    0x0002, 0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)
) + _explicit(0x0002, 0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION))


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The encoded File Meta Information group of a received object: the same
    bytes as pydicom writes for pynetdicom's ``Event.file_meta`` (group length,
    version, SOP class and instance, transfer syntax, implementation)."""
    body = b"".join(
        (
            _VERSION,
            _explicit(0x0002, 0x0002, b"UI", _uid(sop_class_uid)),
            _explicit(0x0002, 0x0003, b"UI", _uid(sop_instance_uid)),
            _explicit(0x0002, 0x0010, b"UI", _uid(transfer_syntax)),
            _IMPLEMENTATION,
        )
    )
    return _explicit(0x0002, 0x0000, b"UL", _LENGTH_32.pack(len(body))) + body


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
