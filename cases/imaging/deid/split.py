"""Part 10 files in two parts: the header, parsed; the pixel data, as raw bytes.

A CT slice is 1.5 kB of header in front of 512 kB of pixel data. Only the header is
de-identified, so the fast way through a file is to parse the header alone, change
it, write it, and copy the pixel data element's bytes behind it untouched: the
pixels pass through without being decoded, re-encoded or even held by pydicom.

That shortcut is taken only in the common, simple shape: the pixel data is the last
element of the file, with a defined length, in a little-endian, uncompressed-stream
transfer syntax (native pixels, implicit or explicit VR). Anything else (encapsulated
pixel data with undefined length, elements after the pixel data, big endian,
deflate) is left to the general path that reads the whole file with pydicom.

A file small enough to hold in memory is read in one go and its header parsed from
those bytes (``split_bytes``): a plain walk over the elements builds the same
raw elements as pydicom's reader at a third of its cost, and leaves to pydicom
whatever is not plain (undefined lengths other than sequences, VRs it would
guess, a transfer syntax other than little endian implicit or explicit VR).

The header is encoded here too (``encode_header``): pydicom's writer costs about
15 microseconds an element, more than all the rest of a slice's de-identification,
while every element the de-identification kept or replaced is a raw element whose
bytes only need a tag, VR and length in front. The result is the same bytes as
pydicom writes (the tests compare them); whatever is not simple goes to pydicom.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import struct
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom import __version_info__
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import (
    DataElement,
    RawDataElement,
    convert_raw_data_element,
    empty_value_for_VR,
)
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_sequence
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from .elements import (
    LONG_VRS,
    element_head,
    encode_element,
    text_element,
    text_value,
)

_PIXEL_DATA = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
_UNDEFINED = 0xFFFFFFFF
_SIMPLE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
_PREAMBLE = b"\x00" * 128
_PIXEL_DATA_TAG = 0x7FE00010
_GROUP_LENGTH = 0x00020000
_MEDIA_SOP_CLASS = 0x00020002
_MEDIA_SOP_INSTANCE = 0x00020003
_TRANSFER_SYNTAX = 0x00020010
_SOP_CLASS = 0x00080016
_SOP_INSTANCE = 0x00080018
# What pydicom's validation of the file meta refuses to write without: SOP class
# and instance, transfer syntax (the version it adds: de-identification keeps it).
_META_REQUIRED = (0x00020001, 0x00020002, 0x00020003, 0x00020010)
# ... and what it fills in: the class UID when absent or empty, the name when absent.
_PYDICOM_IMPLEMENTATION = (
    (0x00020012, "UI", PYDICOM_IMPLEMENTATION_UID, True),
    (0x00020013, "SH", f"PYDICOM {'.'.join(__version_info__)}", False),
)
_LENGTH_32 = struct.Struct("<I")
_TAG = struct.Struct("<HH")
_SPECIFIC_CHARACTER_SET = 0x00080005
_ITEM_DELIMITER = 0xFFFEE00D
# Where pydicom's ``stop_before_pixels`` stops: any of the three pixel data tags.
_PIXEL_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_SYNTAXES = {ExplicitVRLittleEndian: False, ImplicitVRLittleEndian: True}


@dataclass(frozen=True)
class Split:
    """A file read as far as its pixel data.

    ``pixel_offset`` is where the pixel data element starts and ``pixel_bytes`` its
    whole length (tag, VR, length and value) when the file has the simple shape;
    otherwise both are None. ``complete`` says whether the file holds as many
    pixel bytes as the element announces (a transfer cut short does not).
    """

    header: Dataset
    pixel_offset: int | None
    pixel_bytes: int | None
    complete: bool
    #: The whole file, when it was read into memory (``split_bytes``).
    data: bytes | None = None

    @property
    def simple(self) -> bool:
        return self.pixel_offset is not None


def read_split(fp: BinaryIO) -> Split:
    """Parse ``fp``'s header (file meta included) and locate its pixel data.

    Raises what pydicom raises for a file that is not DICOM.
    """
    header = pydicom.dcmread(fp, stop_before_pixels=True)
    offset = fp.tell()
    size = fp.seek(0, os.SEEK_END)
    fp.seek(offset)
    return _locate_pixels(header, offset, fp.read(12), size)


def split_bytes(data: bytes) -> Split:
    """``read_split`` for a whole file held in memory: the same header, parsed by
    ``read_header`` where the file is plain and by pydicom otherwise, and the
    bytes kept for ``write_split`` to copy the pixel data from.

    Raises what pydicom raises for a file that is not DICOM.
    """
    parsed = read_header(data)
    if parsed is None:
        fp = io.BytesIO(data)
        header = pydicom.dcmread(fp, stop_before_pixels=True)
        offset = fp.tell()
    else:
        header, offset = parsed
    located = _locate_pixels(header, offset, data[offset : offset + 12], len(data))
    return dataclasses.replace(located, data=data)


def _locate_pixels(header: Dataset, offset: int, element: bytes, size: int) -> Split:
    """The split of a file whose header ends at ``offset``, where ``element`` (up
    to 12 bytes) starts and the file is ``size`` bytes long."""
    if not element:
        return Split(header, None, None, complete=True)  # no pixel data at all
    syntax = header.file_meta.get("TransferSyntaxUID")
    if syntax not in _SIMPLE_SYNTAXES or element[:4] != _PIXEL_DATA:
        return Split(header, None, None, complete=True)
    if syntax == ImplicitVRLittleEndian:
        (length,) = struct.unpack("<I", element[4:8])
        head = 8
    elif element[4:6] in LONG_VRS:
        (length,) = struct.unpack("<I", element[8:12])
        head = 12
    else:  # a VR pixel data never has
        return Split(header, None, None, complete=True)
    if length == _UNDEFINED:  # encapsulated: its end is found by parsing
        return Split(header, None, None, complete=True)
    end = offset + head + length
    if end > size:
        return Split(header, None, None, complete=False)
    if end < size:  # elements after the pixel data: the general path reads them
        return Split(header, None, None, complete=True)
    return Split(header, offset, head + length, complete=True)


def read_header(data: bytes) -> tuple[Dataset, int] | None:
    """The header of the Part 10 file ``data`` as ``pydicom.dcmread(...,
    stop_before_pixels=True)`` reads it (the same raw elements, file meta,
    preamble and encodings), and where it ends; ``None`` where pydicom must read
    the file: no preamble and prefix, file meta it would have to guess at, a
    transfer syntax other than little endian implicit or explicit VR, a dataset
    whose first element contradicts it, command elements, an element that runs
    past the end, an unknown VR, or an undefined length other than a sequence's.
    Sequences of undefined length are read by pydicom's own reader, as it does.
    """
    end = len(data)
    if end < 132 or data[128:132] != b"DICM":
        return None
    meta, position, _ = _read_elements(data, 132, False, group=2)
    if meta is None:
        return None
    syntax = meta.get(_TRANSFER_SYNTAX)
    implicit = _SYNTAXES.get(
        syntax.value.rstrip(b"\x00 ").decode("ascii", "replace") if syntax else ""
    )
    if implicit is None:
        return None
    if position + 6 <= end:  # pydicom checks the first element against the syntax
        first = data[position + 4 : position + 6]
        if (0x40 < first[0] < 0x5B and 0x40 < first[1] < 0x5B) == implicit:
            return None
    elements, position, encoding = _read_elements(data, position, implicit)
    if elements is None:
        return None
    dataset = Dataset(elements)
    dataset.set_original_encoding(implicit, True, encoding)
    file_meta = FileMetaDataset(meta)
    file_meta.set_original_encoding(False, True, default_encoding)
    header = FileDataset(
        DicomBytesIO(b""), dataset, data[:128], file_meta, implicit, True
    )
    header.set_original_encoding(implicit, True, dataset._character_set)
    return header, position


def _read_elements(
    data: bytes, position: int, implicit: bool, *, group: int | None = None
) -> tuple[dict | None, int, str | list[str]]:
    """The elements from ``position``, up to the pixel data, the end of ``data``
    or (with ``group``) the first element of another group, where they end and
    the character set they declare; ``None`` for anything ``read_header`` leaves
    to pydicom."""
    end = len(data)
    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    encoding: str | list[str] = default_encoding
    while position + 8 <= end:
        group_number, number = _TAG.unpack_from(data, position)
        if group is not None and group_number != group:
            break
        tag = group_number << 16 | number
        if tag in _PIXEL_TAGS:
            break
        if group_number == 0 or tag == _ITEM_DELIMITER:
            return None, position, encoding
        head = element_head(data, position, implicit)
        if head is None:
            return None, position, encoding
        vr, start, length = head
        key = BaseTag(tag)
        if length == _UNDEFINED:
            if (vr or _dictionary_vr(tag)) != "SQ":
                return None, position, encoding
            fp = DicomBytesIO(data)
            fp.seek(start)
            sequence = read_sequence(fp, implicit, True, length, encoding)
            elements[key] = DataElement(
                key, "SQ", sequence, start, is_undefined_length=True
            )
            position = fp.tell()
            continue
        position = start + length
        if position > end:
            return None, position, encoding
        value = data[start:position] if length else empty_value_for_VR(vr, raw=True)
        elements[key] = RawDataElement(key, vr, length, value, start, implicit, True)
        if tag == _SPECIFIC_CHARACTER_SET:
            encoding = convert_encodings(convert_raw_data_element(elements[key]).value)
    return elements, position, encoding


def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


def write_split(dst: BinaryIO, header: Dataset, src: BinaryIO, split: Split) -> None:
    """Write ``header`` as a Part 10 file to ``dst`` and copy the pixel data element
    of ``src`` (located by ``split``) behind it, byte for byte."""
    if not split.simple:
        raise ValueError("only a simple split is copied raw")
    syntax = header.file_meta.get("TransferSyntaxUID")
    if syntax not in _SIMPLE_SYNTAXES:
        # The header must be written in the syntax the raw pixel element is in.
        raise ValueError("the header's transfer syntax changed")
    encoded = encode_header(header)
    if encoded is None:
        pydicom.dcmwrite(dst, header, enforce_file_format=True)
    else:
        dst.write(encoded)
    if split.data is not None:
        with memoryview(split.data) as view:
            dst.write(view[split.pixel_offset : split.pixel_offset + split.pixel_bytes])
        return
    src.seek(split.pixel_offset)
    # The element runs to the end of the file: one read of its size copies it.
    shutil.copyfileobj(src, dst, split.pixel_bytes)


def encode_header(header: Dataset) -> bytes | None:
    """``header`` (without pixel data) as the Part 10 file that
    ``pydicom.dcmwrite(..., enforce_file_format=True)`` writes, byte for byte;
    ``None`` when pydicom must write it: a transfer syntax other than little endian
    implicit or explicit VR, a dataset to be re-encoded (its encoding or character
    set changed), file meta that pydicom would complete or correct.

    Values are compared as their raw text: reading them through pydicom would
    decode the elements this writer wants to pass on raw."""
    meta = getattr(header, "file_meta", None)
    if meta is None or _PIXEL_DATA_TAG in header:
        return None
    syntax = text_value(meta, _TRANSFER_SYNTAX)
    if syntax not in _SIMPLE_SYNTAXES:
        return None
    implicit = syntax == ImplicitVRLittleEndian
    if (
        header.original_encoding != (implicit, True)
        # pydicom re-encodes every element then (its own test, in write_dataset).
        or header.original_character_set != header._character_set
        or (header.preamble is not None and len(header.preamble) != 128)
        or text_value(meta, _MEDIA_SOP_CLASS) != text_value(header, _SOP_CLASS)
        or text_value(meta, _MEDIA_SOP_INSTANCE) != text_value(header, _SOP_INSTANCE)
        or any(tag >> 16 in (0, 2) for tag in header.keys())  # noqa: SIM118
    ):
        return None
    file_meta = _encode_file_meta(meta)
    if file_meta is None:
        return None
    encodings = header.get("SpecificCharacterSet", default_encoding)
    elements = {
        tag: header.get_item(tag)
        for tag in header.keys()  # noqa: SIM118
        if tag & 0xFFFF or tag >> 16 <= 6  # retired group lengths are not written
    }
    body = _encode_elements(elements, implicit, encodings)
    return b"".join((header.preamble or _PREAMBLE, b"DICM", file_meta, body))


def _encode_file_meta(meta: Dataset) -> bytes | None:
    """The File Meta Information group, its length computed, as pydicom writes it:
    with pydicom's implementation UID and version name where the file has none.
    ``None`` if a required element is missing or empty (pydicom's error then)."""
    if not all(text_value(meta, tag) for tag in _META_REQUIRED):
        return None
    elements = {
        tag: meta.get_item(tag)
        for tag in meta.keys()  # noqa: SIM118
        if tag != _GROUP_LENGTH
    }
    for tag, vr, text, when_empty in _PYDICOM_IMPLEMENTATION:
        if tag not in elements or (when_empty and not text_value(meta, tag)):
            elements[tag] = text_element(BaseTag(tag), vr, text, (False, True))
    body = _encode_elements(elements, False, default_encoding)
    return encode_element(_GROUP_LENGTH, "UL", _LENGTH_32.pack(len(body))) + body


def _encode_elements(elements: dict, implicit: bool, encodings) -> bytes:
    """``elements`` (tag: element) in tag order: raw ones packed here, the others
    by pydicom."""
    parts = []
    for tag in sorted(elements):
        element = elements[tag]
        packed = _pack_raw(element, implicit) if element.is_raw else None
        if packed is None:
            buffer = DicomBytesIO()
            buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
            write_data_element(buffer, element, encodings)
            packed = buffer.getvalue()
        parts.append(packed)
    return b"".join(parts)


def _pack_raw(element: RawDataElement | DataElement, implicit: bool) -> bytes | None:
    """A raw element as pydicom writes it, or ``None`` where pydicom's writer does
    more than put its bytes behind a tag, VR and length."""
    value, vr = element.value, element.VR
    if element.length == _UNDEFINED or not isinstance(value, bytes):
        return None
    if not implicit and (vr is None or len(vr) != 2):
        return None
    if not implicit and vr not in EXPLICIT_VR_LENGTH_32 and len(value) > 0xFFFF:
        return None  # pydicom writes it as UN, with a warning
    return encode_element(element.tag, vr, value, implicit=implicit)
