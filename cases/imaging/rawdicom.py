"""DICOM at the byte level, for the listener's hot path.

A C-STORE of a CT slice is half a megabyte of pixels behind a kilobyte of header. The
listener needs four things per object: the fields of its request's command set, the
File Meta Information to put in front of the bytes it stages, the Accession Number
to route it by, and the command set of its response. pynetdicom and pydicom do all
four through the general Dataset machinery, which cost more CPU per slice than
receiving the slice; here they are a few struct calls. Each is checked against
pydicom and pynetdicom in the tests, and anything unusual is left to them (``None``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from cases.imaging.deid.elements import LONG_VRS, encode_element, padded

_ACCESSION_NUMBER = 0x00080050
_UNDEFINED = 0xFFFFFFFF
_ELEMENT = struct.Struct("<HH")
_LENGTH_32 = struct.Struct("<I")
_LENGTH_16 = struct.Struct("<H")
_US = struct.Struct("<H")
_LENGTH_32_BE = struct.Struct(">I")


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


_C_STORE_RQ = 0x0001
_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101


def store_response(
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    status: int,
    comment: str = "",
) -> bytes:
    """The command set of a C-STORE response with ``status`` and, when given, an
    Error Comment (0000,0902; at most 64 characters), as pynetdicom encodes it."""
    parts = [
        _uid(0x00000002, sop_class_uid, implicit=True),
        _us(0x00000100, _C_STORE_RSP),
        _us(0x00000120, message_id),
        _us(0x00000800, _NO_DATA_SET),
        _us(0x00000900, status),
    ]
    if comment:
        text = comment[:64].encode("ascii", "replace")
        parts.append(encode_element(0x00000902, "LO", _even(text), implicit=True))
    parts.append(_uid(0x00001000, sop_instance_uid, implicit=True))
    body = b"".join(parts)
    group_length = _LENGTH_32.pack(len(body))
    return encode_element(0x00000000, "UL", group_length, implicit=True) + body


def _even(value: bytes) -> bytes:
    return value + b" " if len(value) & 1 else value


@dataclass(frozen=True)
class StoreRequest:
    """The fields of a C-STORE request's command set the listener acts on."""

    message_id: int
    sop_class_uid: str
    sop_instance_uid: str
    has_dataset: bool


def store_request(command: bytes | memoryview) -> StoreRequest | None:
    """The C-STORE request in a command set (implicit VR little endian, PS3.7
    E.1); ``None`` for any other command, or a command set this cannot read (the
    caller then leaves the message to pynetdicom)."""
    view = memoryview(command)
    end = len(view)
    position = 0
    values: dict[int, bytes] = {}
    while position + 8 <= end:
        group, element = _ELEMENT.unpack_from(view, position)
        (length,) = _LENGTH_32.unpack_from(view, position + 4)
        start = position + 8
        position = start + length
        if group != 0 or length == _UNDEFINED or position > end:
            return None
        values[element] = bytes(view[start:position])
    if position != end:
        return None
    try:
        field = _US.unpack(values[0x0100])[0]
        message_id = _US.unpack(values[0x0110])[0]
        data_set_type = _US.unpack(values[0x0800])[0]
        sop_class = values[0x0002].rstrip(b"\x00 ").decode("ascii")
        sop_instance = values[0x1000].rstrip(b"\x00 ").decode("ascii")
    except (KeyError, struct.error, UnicodeDecodeError):
        return None
    if field != _C_STORE_RQ:
        return None
    return StoreRequest(
        message_id=message_id,
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        has_dataset=data_set_type != _NO_DATA_SET,
    )


def command_pdu(context_id: int, command: bytes) -> bytes:
    """A P-DATA-TF PDU (PS3.8 9.3.5) carrying ``command`` whole, as the last
    fragment of a command, in one presentation data value."""
    item = _LENGTH_32_BE.pack(len(command) + 2) + bytes((context_id, 0x03)) + command
    return b"\x04\x00" + _LENGTH_32_BE.pack(len(item)) + item


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
