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
"""

from __future__ import annotations

import os
import shutil
import struct
from dataclasses import dataclass
from typing import BinaryIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

_PIXEL_DATA = b"\xe0\x7f\x10\x00"  # (7FE0,0010), little endian
_UNDEFINED = 0xFFFFFFFF
_SIMPLE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
# Explicit VRs with a 4-byte length after two reserved bytes (PS3.5 7.1.2).
_LONG_VRS = frozenset({b"OB", b"OW", b"OD", b"OF", b"OL", b"OV", b"UN"})


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

    @property
    def simple(self) -> bool:
        return self.pixel_offset is not None


def read_split(fp: BinaryIO) -> Split:
    """Parse ``fp``'s header (file meta included) and locate its pixel data.

    Raises what pydicom raises for a file that is not DICOM.
    """
    header = pydicom.dcmread(fp, stop_before_pixels=True)
    offset = fp.tell()
    size = os.fstat(fp.fileno()).st_size
    element = fp.read(12)
    if not element:
        return Split(header, None, None, complete=True)  # no pixel data at all
    syntax = header.file_meta.get("TransferSyntaxUID")
    if syntax not in _SIMPLE_SYNTAXES or element[:4] != _PIXEL_DATA:
        return Split(header, None, None, complete=True)
    if syntax == ImplicitVRLittleEndian:
        (length,) = struct.unpack("<I", element[4:8])
        head = 8
    elif element[4:6] in _LONG_VRS:
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


def write_split(dst: BinaryIO, header: Dataset, src: BinaryIO, split: Split) -> None:
    """Write ``header`` as a Part 10 file to ``dst`` and copy the pixel data element
    of ``src`` (located by ``split``) behind it, byte for byte."""
    if not split.simple:
        raise ValueError("only a simple split is copied raw")
    syntax = header.file_meta.get("TransferSyntaxUID")
    if syntax not in _SIMPLE_SYNTAXES:
        # The header must be written in the syntax the raw pixel element is in.
        raise ValueError("the header's transfer syntax changed")
    pydicom.dcmwrite(dst, header, enforce_file_format=True)
    src.seek(split.pixel_offset)
    # The element runs to the end of the file: one read of its size copies it.
    shutil.copyfileobj(src, dst, split.pixel_bytes)
